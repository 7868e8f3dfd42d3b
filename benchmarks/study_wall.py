"""Wall time of a 2-cell study, cells one after another vs at once, on submitit's local executor and
on a local Ray cluster (`num_cpus=2`).

Each measurement runs in a fresh clone of this repository (its committed code, with the raw data
hard-linked and its own MLflow store) so no cell is restored from an earlier run's DVC run cache.
Sequential: submitit with --parallel 1; Ray with 2 CPUs per cell on the 2-CPU cluster (Ray runs one
cell at a time). Parallel: both cells submitted at once (Ray: 1 CPU each). The cells run the tiny
model on the cut-down smoke profile of tests/test_study.py up to --target (default sft).
Prints one JSON line per measurement with the 1-minute load average before and after: on a shared
machine the numbers are indicative.

Usage: python benchmarks/study_wall.py --out benchmarks/results/study_wall.json [--target sft]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

MODES = {
    ("local", "sequential"): ["--executor", "local", "--parallel", "1"],
    ("local", "parallel"): ["--executor", "local"],
    ("ray", "sequential"): ["--executor", "ray", "--ray-num-cpus", "2", "--cpus-per-cell", "2"],
    ("ray", "parallel"): ["--executor", "ray", "--ray-num-cpus", "2", "--cpus-per-cell", "1"],
}


def tiny_params(path: Path) -> None:
    p = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    p["eval"]["verticals"] = {"truthfulness": p["eval"]["verticals"]["truthfulness"]}
    p["influence"]["verticals"] = ["truthfulness"]
    for s in ("sft", "rm", "dpo"):
        p[s]["max_train_pairs"] = 8
    p["ppo"].update(total_episodes=4, max_train_pairs=4)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def measure(executor: str, mode: str, target: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="study-wall-") as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        subprocess.run(["cp", "-al", str(ROOT / "data"), str(repo / "data")], check=True)
        tiny_params(repo / "params" / "study-wall.yaml")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
               "RLHF_TRUST_ARTIFACT_ROOT": Path(tmp, "mlruns").as_uri(), "RLHF_TRUST_ROOT": tmp,
               "PYTHONPATH": str(repo / "src"), "RAY_USAGE_STATS_ENABLED": "0"}
        cmd = [sys.executable, "-m", "rlhf_trust.cli", "study", "--params", "params/study-wall.yaml",
               "--grid", "prepare.seed=0,1", "--seed-key", "prepare.seed", "--name", "wall",
               "--target", *target, *MODES[(executor, mode)]]
        load0 = os.getloadavg()[0]
        t0 = time.time()
        r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=False)
        wall = time.time() - t0
        cells = json.loads((repo / "studies/wall/study.json").read_text())["cells"]
        return {"executor": executor, "mode": mode, "target": target, "rc": r.returncode,
                "wall_s": round(wall, 1), "cell_wall_s": {c: v.get("wall_s") for c, v in cells.items()},
                "load_1min_before": round(load0, 2), "load_1min_after": round(os.getloadavg()[0], 2),
                "cpus": os.cpu_count()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--target", nargs="+", default=["sft"])
    ap.add_argument("--only", default=None, help="executor:mode, e.g. ray:parallel")
    a = ap.parse_args()
    rows = []
    for executor, mode in MODES:
        if a.only and a.only != f"{executor}:{mode}":
            continue
        row = measure(executor, mode, a.target)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        a.out.write_text(json.dumps({"measured": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
