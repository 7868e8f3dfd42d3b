"""`rlhf-trust eval --vertical V [--model M] [--limit N]`: one DVC stage process per vertical.

Without `--model` it evaluates every model in `eval.models` (base, sft, ppo, dpo) in this one
process, the base once and each trained model once per training seed (train.seeds): the cells
share the interpreter, the imports and the MLflow set-up. Each model is a `LazyBackend` behind the
sqlite cache: its weights are loaded on the first cache miss only, so an unchanged model (every
unit cached) costs no model load and no model call. Each cell runs inside an MLflow run named
"eval_<V>@<M>" (base) or "eval_<V>@<M>/s<k>" and writes {metrics.json, metrics.run.json,
samples.jsonl.gz, units.csv, units_graded.csv} atomically to eval/<V>/base/ or eval/<V>/<M>/s<k>/.
samples.jsonl.gz (every generation, verdict and score; gzip with a fixed header, so a re-run with the
same results leaves it byte for byte) is committed to git like units.csv: a fresh clone has what is
behind every number. The run also gets the cell as an MLflow table (samples_table.json: one row per
unit) and a system-metrics sample at its start and end.
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

from rlhf_trust import config, evals, fileio, paths, pipeline
from rlhf_trust.errors import UserError

MODELS = pipeline.MODELS


def out_paths(cfg: Any, vertical: str, model: str, seed: int | None = None) -> tuple[Path, Path]:
    """metrics.json and samples.jsonl.gz of one cell: eval/<V>/<M>/ (base, or no seed) or eval/<V>/<M>/s<k>/."""
    d = Path(cfg.out_dir) / vertical / model
    if seed is not None and model != "base":
        d = d / paths.seed_part(seed)
    return d / "metrics.json", d / "samples.jsonl.gz"


def cells(models: list[str], seeds: list[int]) -> list[tuple[str, int | None]]:
    """(model, seed) of every cell: the base once (seed None), each trained model once per seed."""
    return [(m, None) if m == "base" else (m, k) for m in models for k in ([None] if m == "base" else seeds)]


def write_units(path: Path, units: list[tuple[str, float]]) -> None:
    """units.csv (`unit_id,value`): the headline's per-unit values, paired across models by id."""
    import csv
    import io as stdio

    buf = stdio.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["unit_id", "value"])
    w.writerows([u, repr(float(v))] for u, v in units)
    fileio.write_text(path, buf.getvalue())


def read_units(path: Path) -> list[tuple[str, float]]:
    import csv

    with open(path, newline="") as f:
        return [(r["unit_id"], float(r["value"])) for r in csv.DictReader(f)]


def peak_rss_mb() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def resolve_threads(threads: int | str) -> int:
    """`auto` = every core this process may use; 0 = torch's default."""
    if threads == "auto":
        import os

        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(threads)


def eval_dtype(model_dir: Path, dtype: str = "auto", device: str = "cpu") -> str:
    """The dtype an eval computes in: `eval.dtype`, or with `auto` the one `load_causal_lm` gives
    the stage (an adapter takes its root's dtype). bfloat16 on a CPU without native bf16 (no
    AVX512-BF16 / AMX, e.g. an AVX2-only AMD EPYC, where torch emulates it ~5x slower than float32)
    runs float32 instead, with one warning line; the cache key names the dtype actually used."""
    if dtype == "bfloat16":
        from rlhf_trust.models import store

        if store.resolve_device(device) == "cpu" and not store.cpu_bf16_or_warn("eval", "eval.dtype"):
            return "float32"
    if dtype != "auto":
        return dtype
    from rlhf_trust.models import load_stage_info, parent_path

    d, root = model_dir, load_stage_info(model_dir)
    while root.get("kind") == "adapter":
        d = parent_path(d, root)
        root = load_stage_info(d)
    return root.get("dtype") or "float32"


def model_fingerprint(model_dir: Path, dtype: str = "auto", device: str = "cpu") -> str:
    """The cache identity of a stage's model without loading it: its content md5 + the dtype the
    eval runs it in, so float32 and bfloat16 generations / log-likelihoods never mix in the cache."""
    from rlhf_trust.models import load_stage_info

    md5 = load_stage_info(model_dir).get("md5") or fileio.md5_dir(model_dir)
    return f"{md5}:torch.{eval_dtype(model_dir, dtype, device)}"


def batch_size(cfg: Any, vertical: str) -> int:
    """The vertical's `batch_size` if its entry sets one (the decode step's cost barely grows with
    the rows: docs/evaluation.md), else `eval.batch_size`."""
    return int((cfg.verticals.get(vertical) or {}).get("batch_size", cfg.batch_size))


def hf_backend(model_dir: Path, cfg: Any, batch: int | None = None):
    """The batched HF backend for a stage's model dir (loads the weights now)."""
    import torch

    from rlhf_trust.evals.backends import HFBackend
    from rlhf_trust.models import load_causal_lm

    threads = resolve_threads(cfg.threads)
    if threads:
        torch.set_num_threads(threads)
    model, tok = load_causal_lm(model_dir, device=cfg.device)
    # cast after loading: LoRA adapters merge in the stage's own dtype (float32), then the merged
    # weights are rounded once (bfloat16 matmuls run on AMX / AVX512-BF16, docs/evaluation.md)
    model = model.to(getattr(torch, eval_dtype(model_dir, cfg.dtype, cfg.device)))
    return HFBackend(model, tok, batch_size=batch or cfg.batch_size,
                     fingerprint=model_fingerprint(model_dir, cfg.dtype, cfg.device),
                     name=model_dir.name)


def lazy_backend(model_dir: Path, cfg: Any, batch: int | None = None):
    """The HF backend, loaded on its first model call (a fully cached cell never loads it)."""
    from rlhf_trust.evals.backends import LazyBackend

    batch = batch or cfg.batch_size
    return LazyBackend(lambda: hf_backend(model_dir, cfg, batch), name=model_dir.name,
                       fingerprint=model_fingerprint(model_dir, cfg.dtype, cfg.device), batch_size=batch)


def evaluate_cell(cfg: Any, vertical: str, model: str, backend: Any, limit: int | None = None,
                  inputs: list[Path] | None = None, seed: int | None = None) -> dict:
    """Run one cell with any backend (the CLI passes the HF one; tests a CallableBackend)."""
    from rlhf_trust.evals import sample_table
    from rlhf_trust.evals.cache import Cache, CachedBackend
    from rlhf_trust.tracking import track_stage

    metrics_path, samples_path = out_paths(cfg, vertical, model, seed)
    cell = model if seed is None or model == "base" else f"{model}/{paths.seed_part(seed)}"
    cache = Cache(cfg.cache) if cfg.cache else None
    cached = CachedBackend(backend, cache) if cache is not None else backend

    def work(sr) -> dict:
        t0 = time.perf_counter()
        sr.log_system_sample(0)
        res = evals.run(vertical, cached, data_dir=cfg.data_dir, limit=limit, seed=cfg.seed,
                        settings_entry=cfg.verticals.get(vertical), n_boot=cfg.bootstrap_samples,
                        model=model)
        fileio.write_jsonl(samples_path, res.rows)
        write_units(samples_path.with_name("units.csv"), res.units)
        # the graded metric's units (header only where the vertical's protocol has none)
        write_units(samples_path.with_name("units_graded.csv"), res.graded_units)
        sr.log_artifact(samples_path)
        sr.log_table(sample_table.table(res.rows, dict(res.units)), "samples_table.json")
        sr.log_system_sample(1)
        return {**res.metrics,
                "model_calls": getattr(cached, "misses", None),
                "model_loaded": getattr(backend, "loaded", True),
                "cache_hits": getattr(cached, "hits", None),
                "wall_s": round(time.perf_counter() - t0, 2),
                "peak_rss_mb": round(peak_rss_mb(), 1)}

    try:
        return track_stage(f"eval_{vertical}", work, cfg=cfg, inputs=inputs or [],
                           metrics_path=metrics_path, run_name=f"eval_{vertical}@{cell}",
                           tags={"vertical": vertical, "model": model,
                                 "seed": "none" if seed is None or model == "base" else str(seed)})
    finally:
        if cache is not None:
            cache.close()


def cli(args) -> int:
    cfgs = config.load_all(args.params)
    cfg, seeds = cfgs["eval"], cfgs["train"].seeds
    evals.check_entries(cfg.verticals)  # each vertical validates its own params entry
    vertical = args.vertical
    evals.get(vertical)  # unknown vertical -> one line, before any model loads
    models = [args.model] if args.model else list(cfg.models)
    bad = [m for m in models if m not in MODELS]
    if bad:
        raise UserError(f"unknown model '{bad[0]}' (known: {', '.join(MODELS)})")
    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UserError(f"eval.data_dir not found: {data_dir} (run `rlhf-trust prepare` first)")
    from rlhf_trust.data import records

    records.load(evals.get(vertical).dataset, data_dir)  # missing / malformed data: fail before any model
    dirs = {(m, k): paths.model_dir(m, k) for m, k in cells(models, seeds)}
    for (m, k), d in dirs.items():
        if not d.is_dir():
            seed = "" if k is None else f" --seed {k}"
            raise UserError(f"model directory not found: {d} (run `rlhf-trust {m}{seed}` first)")
    data_file = data_dir / f"{evals.get(vertical).dataset}.jsonl"
    for (m, k), d in dirs.items():  # each cell ends with its summary line
        evaluate_cell(cfg, vertical, m, lazy_backend(d, cfg, batch_size(cfg, vertical)), args.limit,
                      inputs=[p for p in (data_file, d) if p.exists()], seed=k)
    return 0
