"""Trust evaluations: `evaluate(vertical, backend, data_dir=...)` and the vertical registry.

A vertical is one module (toxicity, bias, ethics, truthfulness, privacy) exposing NAME, DATASET,
HEADLINE, a `Settings` dataclass (its params entry under eval.verticals.<name>, defaults = the
study's full protocol) and `run(backend, records, settings, seed=, n_boot=, model=, data_dir=)`
-> (metrics, rows). Adding a vertical = one module + one line in VERTICALS + one params entry.
Modules import lazily, so importing this package stays instant.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from rlhf_trust.errors import DataError, UserError

VERTICALS: dict[str, str] = {
    "toxicity": "rlhf_trust.evals.toxicity",
    "bias": "rlhf_trust.evals.bias",
    "ethics": "rlhf_trust.evals.ethics",
    "truthfulness": "rlhf_trust.evals.truthfulness",
    "privacy": "rlhf_trust.evals.privacy",
    "fairness": "rlhf_trust.evals.fairness",
}


def get(vertical: str) -> ModuleType:
    if vertical not in VERTICALS:
        raise UserError(f"unknown vertical '{vertical}' (known: {', '.join(VERTICALS)})")
    return importlib.import_module(VERTICALS[vertical])


def settings(vertical: str, entry: dict[str, Any] | None = None) -> Any:
    """The vertical's validated Settings from its params entry (unknown keys / bad values -> one line)."""
    from rlhf_trust.config import build

    key = f"eval.verticals.{vertical}"
    s = build(get(vertical).Settings, entry or {}, key)
    s.check(key)
    return s


@dataclasses.dataclass
class Result:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    # the headline's bootstrap units (unit_id, value), units without a value dropped: the same
    # ids for every model on the same items, so two models' cells pair by id (units.csv)
    units: list[tuple[str, float]] = dataclasses.field(default_factory=list)


def run(vertical: str, backend: Any, *, data_dir: str | Path, limit: int | None = None, seed: int = 0,
        settings_entry: dict[str, Any] | None = None, n_boot: int = 1000, model: str | None = None) -> Result:
    """Metrics and samples.jsonl rows of one vertical. `limit` overrides the entry's limit."""
    mod = get(vertical)
    entry = dict(settings_entry or {})
    if limit is not None:
        entry["limit"] = limit
    s = settings(vertical, entry)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    from rlhf_trust.data import records

    recs = records.load(mod.DATASET, data_dir)
    name = model or getattr(backend, "name", "model")
    metrics, rows = mod.run(backend, recs, s, seed=seed, n_boot=n_boot, model=name, data_dir=data_dir)
    if not rows:
        raise DataError(f"{vertical}: no items selected from {data_dir}")
    head = {"vertical": vertical, "model": name, "headline": mod.HEADLINE, "seed": seed,
            "settings": dataclasses.asdict(s)}
    units = [(u, float(v)) for u, v in mod.units(rows) if v is not None]
    return Result({**head, **metrics}, rows, units)


def evaluate(vertical: str, backend: Any, *, data_dir: str | Path, limit: int | None = None,
             seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """The metrics dict of one vertical (headline key: the module's HEADLINE)."""
    return run(vertical, backend, data_dir=data_dir, limit=limit, seed=seed, **kwargs).metrics
