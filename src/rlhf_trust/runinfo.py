"""What a stage records, split in two: DVC metrics vs run info.

A stage's metrics JSON (declared under `metrics:` in dvc.yaml) holds only what is compared across
runs: headline values, their 95% CIs and n. Everything else a stage reports (the MLflow run id,
wall times, peak RSS, cache counters, the resolved settings, secondary breakdowns) goes to MLflow and
to `<stem>.run.json` beside it, a plain DVC output, so `dvc exp show --only-changed` and
`dvc metrics diff` stay readable. `read` merges both back for the report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Settings echoed by a stage: MLflow params, never metrics.
SETTING_KEYS = frozenset({"seed", "settings", "model", "headline", "spec", "train_loss", "test_loss"})
# Costs and bookkeeping: MLflow metrics + run info, not DVC metrics.
COST_KEYS = frozenset({"mlflow_run_id", "model_calls", "cache_hits", "resumed_from_step", "seconds",
                       "params_total", "params_trainable", "params_per_example", "layers"})
COST_SUFFIXES = ("_s", "_mb", "_per_s")


def run_info_path(metrics_path: str | Path) -> Path:
    p = Path(metrics_path)
    return p.with_name(f"{p.stem}.run.json")


def is_setting(key: str, value: Any) -> bool:
    return key in SETTING_KEYS or isinstance(value, (str, list, tuple, bool)) or value is None


def is_cost(key: str) -> bool:
    return key in COST_KEYS or key.endswith(COST_SUFFIXES)


def split(record: dict[str, Any], metric_keys: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    """(DVC metrics, run info). `metric_keys` names the headline values (their `_ci95` and `_n`
    companions come along); without it an eval record's `headline` decides, else every number that
    is neither a setting nor a cost."""
    if metric_keys is None and isinstance(record.get("headline"), str):
        metric_keys = (record["headline"], "n_samples")
    if metric_keys is not None:
        keep = {k for m in metric_keys for k in (m, f"{m}_ci95", f"{m}_n")}
        chosen = {k: v for k, v in record.items() if k in keep}
    else:
        chosen = {k: v for k, v in record.items()
                  if isinstance(v, (int, float)) and not is_setting(k, v) and not is_cost(k)}
    return chosen, {k: v for k, v in record.items() if k not in chosen}


def flat_settings(info: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Settings in `info` as MLflow params (nested dicts flattened with dots)."""
    out: dict[str, str] = {}
    for k, v in info.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and (prefix or k in SETTING_KEYS):
            out.update(flat_settings(v, key + "."))
        elif prefix or is_setting(k, v):
            out[key] = str(v)[:500]
    return out


def read(metrics_path: str | Path) -> dict[str, Any] | None:
    """A stage's metrics merged with its run info (None when the metrics file is missing/bad)."""
    def load(p: Path) -> Any:
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    m = load(Path(metrics_path))
    if not isinstance(m, dict):
        return None
    info = load(run_info_path(metrics_path))
    return {**info, **m} if isinstance(info, dict) else m
