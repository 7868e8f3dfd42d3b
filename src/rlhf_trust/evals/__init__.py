"""Trust evaluations: the vertical registry, `run(vertical, backend, ...)` and `evaluate(...)`.

A vertical is one module here, evals/<name>.py, declaring `SPEC = rlhf_trust.verticals.VerticalSpec(...)`
(its data, parser, hub source, GX suite, protocols, Settings, run, headline and direction, unit and
test loss), plus one params entry (eval.verticals.<name>). The registry finds the modules by their
SPEC (rlhf_trust.verticals): no list of verticals is kept anywhere else. Vertical modules import
only light code, so finding them all is cheap.

Optionally a SPEC declares a graded metric beside the headline (`graded`, e.g. the calibrated
probability of the untrustworthy verdict, `graded_higher_is_better`, `graded_units(rows)`:
units_graded.csv, the schema of units.csv; empty where the protocol has no graded score). A cell's
metrics carry `constant`: true when every unit has the same verdict (no change between models is
detectable); a vertical whose unit values are not its verdicts sets it itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rlhf_trust.errors import DataError
from rlhf_trust.verticals import VerticalSpec, get, names, specs

__all__ = ["VERTICALS", "Result", "VerticalSpec", "check_entries", "evaluate", "get", "names", "run",
           "settings", "specs"]


def __getattr__(name: str):
    if name == "VERTICALS":  # the registered verticals' names, found when first asked for
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings(vertical: str, entry: dict[str, Any] | None = None) -> Any:
    """The vertical's validated Settings from its params entry (unknown keys / bad values -> one line)."""
    from rlhf_trust.config.schema import build, require

    key = f"eval.verticals.{vertical}"
    entry = dict(entry or {})
    # an engine setting, not the protocol's: the vertical's own generation batch size (stage.py)
    bs = entry.pop("batch_size", None)
    require(bs is None or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1), f"{key}.batch_size",
            f"must be an integer >= 1, got {bs!r}")
    s = build(get(vertical).settings, entry, key)
    s.check(key)
    return s


def check_entries(entries: dict[str, Any]) -> None:
    """Every eval.verticals entry, validated by its own vertical (config.EvalConfig checks only that each is
    a mapping): an unknown vertical or a bad key is one ConfigError line naming it."""
    from rlhf_trust.config.schema import require

    known = names()
    for name, entry in entries.items():
        require(name in known, f"eval.verticals.{name}", f"unknown vertical (known: {', '.join(known)})")
        settings(name, entry)


@dataclasses.dataclass
class Result:
    metrics: dict[str, Any]
    rows: list[dict[str, Any]]
    # the headline's bootstrap units (unit_id, value), units without a value dropped: the same
    # ids for every model on the same items, so two models' cells pair by id (units.csv)
    units: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    # the graded metric's units (units_graded.csv): same ids, empty where there is none
    graded_units: list[tuple[str, float]] = dataclasses.field(default_factory=list)


def run(vertical: str, backend: Any, *, data_dir: str | Path, limit: int | None = None, seed: int = 0,
        settings_entry: dict[str, Any] | None = None, n_boot: int = 1000, model: str | None = None) -> Result:
    """Metrics and samples.jsonl rows of one vertical. `limit` overrides the entry's limit."""
    spec = get(vertical)
    entry = dict(settings_entry or {})
    if limit is not None:
        entry["limit"] = limit
    s = settings(vertical, entry)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    from rlhf_trust.data import records

    recs = records.load(spec.dataset, data_dir)
    name = model or getattr(backend, "name", "model")
    metrics, rows = spec.run(backend, recs, s, seed=seed, n_boot=n_boot, model=name, data_dir=data_dir)
    if not rows:
        raise DataError(f"{vertical}: no items selected from {data_dir}")
    head = {"vertical": vertical, "model": name, "headline": spec.headline, "seed": seed,
            "settings": dataclasses.asdict(s)}
    units = [(u, float(v)) for u, v in spec.units(rows) if v is not None]
    graded = [(u, float(v)) for u, v in (spec.graded_units(rows) if spec.graded_units else []) if v is not None]
    head["graded"] = spec.graded if graded else None
    metrics.setdefault("constant", len({v for _, v in units}) <= 1)
    return Result({**head, **metrics}, rows, units, graded)


def evaluate(vertical: str, backend: Any, *, data_dir: str | Path, limit: int | None = None,
             seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """The metrics dict of one vertical (headline key: its spec's headline)."""
    return run(vertical, backend, data_dir=data_dir, limit=limit, seed=seed, **kwargs).metrics
