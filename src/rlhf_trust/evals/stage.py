"""`rlhf-trust eval --vertical V --model M [--limit N]`: one (vertical, model) cell of the DVC matrix.

Loads outputs/models/<M> with `load_causal_lm`, wraps it in the batched HF backend and the sqlite
cache, runs the vertical inside an MLflow run named "eval_<V>@<M>", and writes
eval/<V>/<M>/metrics.json (via track_stage) and samples.jsonl (atomically, logged as an artifact).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from rlhf_trust import config, evals, io, paths
from rlhf_trust.errors import UserError

MODELS = ("base", "sft", "ppo", "dpo")


def out_paths(cfg: Any, vertical: str, model: str) -> tuple[Path, Path]:
    d = Path(cfg.out_dir) / vertical / model
    return d / "metrics.json", d / "samples.jsonl"


def write_units(path: Path, units: list[tuple[str, float]]) -> None:
    """units.csv (`unit_id,value`): the headline's per-unit values, paired across models by id."""
    import csv
    import io as stdio

    buf = stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["unit_id", "value"])
    w.writerows([u, repr(float(v))] for u, v in units)
    io.write_text(path, buf.getvalue())


def read_units(path: Path) -> list[tuple[str, float]]:
    import csv

    with open(path, newline="") as f:
        return [(r["unit_id"], float(r["value"])) for r in csv.DictReader(f)]


def peak_rss_mb() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def hf_backend(model_dir: Path, cfg: Any):
    """The batched HF backend for a stage's model dir; fingerprint = its content md5 + dtype."""
    import torch

    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.models import load_causal_lm, load_stage_info

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = load_stage_info(model_dir)
    model, tok = load_causal_lm(model_dir, device=cfg.device)
    fp = f"{info.get('md5') or io.md5_dir(model_dir)}:{next(model.parameters()).dtype}"
    return HFBackend(model, tok, batch_size=cfg.batch_size, fingerprint=fp, name=model_dir.name)


def evaluate_cell(cfg: Any, vertical: str, model: str, backend: Any, limit: int | None = None,
                  inputs: list[Path] | None = None) -> dict:
    """Run one cell with any backend (the CLI passes the HF one; tests a CallableBackend)."""
    from rlhf_trust.evals.cache import Cache, CachedBackend
    from rlhf_trust.tracking import track_stage

    metrics_path, samples_path = out_paths(cfg, vertical, model)
    cache = Cache(cfg.cache) if cfg.cache else None
    cached = CachedBackend(backend, cache) if cache is not None else backend

    def work(sr) -> dict:
        t0 = time.perf_counter()
        res = evals.run(vertical, cached, data_dir=cfg.data_dir, limit=limit, seed=cfg.seed,
                        settings_entry=cfg.verticals.get(vertical), n_boot=cfg.bootstrap_samples,
                        model=model)
        io.write_jsonl(samples_path, res.rows)
        write_units(samples_path.with_name("units.csv"), res.units)
        sr.log_artifact(samples_path)
        return {**res.metrics,
                "model_calls": getattr(cached, "misses", None),
                "cache_hits": getattr(cached, "hits", None),
                "wall_s": round(time.perf_counter() - t0, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1)}

    try:
        return track_stage(f"eval_{vertical}", work, cfg=cfg, inputs=inputs or [],
                           metrics_path=metrics_path, run_name=f"eval_{vertical}@{model}",
                           tags={"vertical": vertical, "model": model})
    finally:
        if cache is not None:
            cache.close()


def cli(args) -> int:
    cfg = config.load("eval", args.params)
    vertical, model = args.vertical, args.model
    evals.get(vertical)  # unknown vertical -> one line, before any model loads
    if model not in MODELS:
        raise UserError(f"unknown model '{model}' (known: {', '.join(MODELS)})")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"eval.data_dir not found: {data_dir} (run `rlhf-trust prepare` first)")
    from rlhf_trust.data import records

    records.load(evals.get(vertical).DATASET, data_dir)  # missing / malformed data: fail before the model loads
    model_dir = paths.model_dir(model)
    if not model_dir.is_dir():
        raise UserError(f"model directory not found: {model_dir} (run `rlhf-trust {model}` first)")
    backend = hf_backend(model_dir, cfg)
    data_file = data_dir / f"{evals.get(vertical).DATASET}.jsonl"
    evaluate_cell(cfg, vertical, model, backend, args.limit,
                  inputs=[p for p in (data_file, model_dir) if p.exists()])  # ends with its summary line
    return 0
