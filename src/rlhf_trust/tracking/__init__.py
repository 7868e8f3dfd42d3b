"""One MLflow run per stage execution, with provenance tags, and the stage's metrics JSON.

Every stage goes through `track_stage`: it opens the run (name = stage), tags it with the git
commit + dirty flag, the `data.dvc` md5, the md5 of each input file, a params hash and library
versions, calls the stage, then writes the final metrics exactly once to MLflow and to the
stage's metrics JSON (atomically). An exception marks the run FAILED and writes no metrics.

One job per module: env.py (the process environment), store.py (where runs go and whether it
answers), provenance.py (what produced a run), runs.py (a run's lifecycle), reaper.py (runs that
died or are stopped), stage.py (the stage contract), console.py (the stage's summary line).
"""

from __future__ import annotations

from rlhf_trust.tracking.console import summary_line
from rlhf_trust.tracking.env import configure_env
from rlhf_trust.tracking.provenance import data_version, datasets, git_info, safe_params
from rlhf_trust.tracking.runs import StageRun, log_datasets, numeric_metrics, stage_run
from rlhf_trust.tracking.stage import peak_rss_mb, track_stage
from rlhf_trust.tracking.store import (
    EXPERIMENT,
    artifact_root,
    check_reachable,
    experiment_name,
    redact,
    registered_model_name,
    store_errors,
    tracking_uri,
)

__all__ = [
    "EXPERIMENT",
    "StageRun",
    "artifact_root",
    "check_reachable",
    "configure_env",
    "data_version",
    "datasets",
    "experiment_name",
    "git_info",
    "log_datasets",
    "numeric_metrics",
    "peak_rss_mb",
    "redact",
    "registered_model_name",
    "safe_params",
    "stage_run",
    "store_errors",
    "summary_line",
    "track_stage",
    "tracking_uri",
]
