"""The stage contract: `track_stage` runs a stage inside its MLflow run and writes its record once
(MLflow + the metrics JSON), then prints the stage's summary line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.tracking.console import summary_line
from rlhf_trust.tracking.provenance import safe_params
from rlhf_trust.tracking.runs import StageRun, stage_run


def peak_rss_mb() -> float:
    import resource
    import sys

    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / 2**20 if sys.platform == "darwin" else ru / 1024


def track_stage(stage: str, fn: Callable[[StageRun], dict[str, Any]], *, cfg: Any = None,
                inputs: list[str | Path] = (), metrics_path: str | Path | None = None,
                run_name: str | None = None, tags: dict[str, str] | None = None,
                metric_keys: tuple[str, ...] | None = None,
                summary: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """Run `fn` inside the stage's MLflow run; write its record once (MLflow + JSON).

    The record also carries the stage's wall time and peak RSS. `metrics_path` gets the DVC metrics
    only (headline values, CIs, n: `runinfo.split`, `metric_keys`), `<stem>.run.json` beside it the
    rest (run id, timings, RSS, settings); MLflow gets numbers as metrics and settings as params.
    The stage ends with one summary line: stage, headline numbers (or `summary(metrics)`), wall
    time, peak RSS. `fn`'s own dict is returned."""
    from rlhf_trust import runinfo

    t0 = time.perf_counter()
    with stage_run(stage, cfg, inputs, run_name, tags) as sr:
        metrics = fn(sr)
        # every stage is its own process under DVC, so the process peak is the stage's peak
        recorded = {**metrics, "stage_wall_s": round(time.perf_counter() - t0, 2),
                    "stage_peak_rss_mb": round(peak_rss_mb(), 1)}
        sr.log_metrics({k: v for k, v in recorded.items() if k not in runinfo.SETTING_KEYS})
        logged = safe_params(cfg)
        settings = {k: v for k, v in runinfo.flat_settings(recorded).items() if k not in logged}
        if settings:
            sr.log_params(settings)
        sr.set_tags({"mlflow.note.content": f"stage {stage}: {len(metrics)} metrics"})
        if metrics_path is not None:
            dvc_metrics, info = runinfo.split({**recorded, "mlflow_run_id": sr.run_id}, metric_keys)
            fileio.write_json(runinfo.run_info_path(metrics_path), info)
            fileio.write_json(metrics_path, dvc_metrics)
    print(summary_line(run_name or stage, recorded, metric_keys, summary(metrics) if summary else None), flush=True)
    return metrics
