"""The process environment every stage runs in: offline, no telemetry, short retries."""

from __future__ import annotations

import os


def configure_env() -> None:
    """Offline + no telemetry for every library the pipeline touches."""
    for k, v in {
        "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false", "HF_HUB_DISABLE_TELEMETRY": "1", "TRL_EXPERIMENTAL_SILENCE": "1",
        "TOKENIZERS_PARALLELISM": "false", "HF_MLFLOW_LOG_ARTIFACTS": "0",
        # a dead tracking server costs seconds, not MLflow's default 7 retries with backoff (minutes)
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
        # system metrics: a sample every 2 s, logged at once (a tiny stage lasts seconds)
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "2", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1",
        # offline unless the user opts in (HF_HUB_OFFLINE=0) to hub models or hub data
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }.items():
        os.environ.setdefault(k, v)
