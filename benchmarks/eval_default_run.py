"""Wall time and peak RSS of the default evaluation run: every vertical in eval.verticals x 4 models,
as `dvc repro` runs it (one `rlhf-trust eval --vertical V` process per vertical, evaluating the four
models), with a cold cache; `--per-cell` runs the pre-issue-10 layout (one process per cell).

Uses outputs/models/{base,sft,ppo,dpo} when they exist. Otherwise (models not trained yet) every
stage is stood in for by the base model under a distinct fingerprint, which costs the same
compute as four real models. Runs in a scratch project dir so the real cache / eval/ / mlflow.db
are untouched.

    .venv/bin/python benchmarks/eval_default_run.py [--params params.yaml] [--out report.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = ("base", "sft", "ppo", "dpo")


def stand_in(base: Path, dst: Path, stage: str) -> None:
    """A copy of `base` (files hard-linked) whose stage.json md5 differs: same compute, own cache keys."""
    shutil.copytree(base, dst, copy_function=os.link)
    info_path = dst / "stage.json"
    info = json.loads(info_path.read_text())
    info_path.unlink()  # break the hard link before rewriting
    info["md5"] = f"{info.get('md5', '')}-standin-{stage}"
    info_path.write_text(json.dumps(info))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models-dir", default="outputs/models")
    ap.add_argument("--data-dir", default=None, help="override eval.data_dir (default: from params)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--per-cell", action="store_true", help="one process per (vertical, model) cell")
    args = ap.parse_args()

    import yaml

    from rlhf_trust import runinfo

    root = Path.cwd()
    params = yaml.safe_load(Path(args.params).read_text())
    ev = params["eval"]
    ev["data_dir"] = str((root / (args.data_dir or ev.get("data_dir", "outputs/prepared"))).resolve())
    models_dir = (root / args.models_dir).resolve()
    cells, report = [], {"cells": [], "stand_ins": []}
    with tempfile.TemporaryDirectory(prefix="evalrun.") as tmp:
        proj = Path(tmp)
        (proj / "params.yaml").write_text(yaml.safe_dump({"eval": ev}))
        for m in MODELS:
            src = models_dir / m
            dst = proj / "outputs" / "models" / m
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                os.symlink(src, dst)
            else:
                stand_in(models_dir / "base", dst, m)
                report["stand_ins"].append(m)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{proj}/mlflow.db", "RLHF_TRUST_ROOT": str(proj)}
        exe = Path(sys.executable).with_name("rlhf-trust")
        t_all = time.perf_counter()
        verticals = list(ev.get("verticals", {}))
        for v in verticals:
            t = time.perf_counter()
            for argv in ([["--model", m] for m in MODELS] if args.per_cell else [[]]):
                p = subprocess.run([str(exe), "eval", "--vertical", v, *argv], cwd=proj, env=env,
                                   capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    raise SystemExit(f"eval {v} {argv} failed:\n{p.stderr[-2000:]}")
            process_s = round(time.perf_counter() - t, 1)
            for m in MODELS:
                met = runinfo.read(proj / "eval" / v / m / "metrics.json")
                cell = {"cell": f"{v}@{m}", "vertical_process_s": process_s, "eval_s": met["wall_s"],
                        "peak_rss_mb": met["peak_rss_mb"], "units": met.get(met["headline"] + "_n"),
                        met["headline"]: met[met["headline"]]}
                cells.append(cell)
                print(json.dumps(cell), flush=True)
        report["cells"] = cells
        report["total_wall_s"] = round(time.perf_counter() - t_all, 1)
        report["peak_rss_mb"] = max(c["peak_rss_mb"] for c in cells)
        report["per_vertical_s"] = {v: next(c["vertical_process_s"] for c in cells if c["cell"].startswith(v + "@"))
                                    for v in verticals}
    print(json.dumps({k: v for k, v in report.items() if k != "cells"}, indent=2))
    if args.out:
        from rlhf_trust import fileio

        fileio.write_json(args.out, report)


if __name__ == "__main__":
    main()
