"""Trust evaluations: the vertical registry, `run(vertical, backend, ...)` and `evaluate(...)`.

A vertical is one module plus one params entry (eval.verticals.<name>). The module registers
itself with one line in VERTICALS below and declares, with no defaults (`check_module` refuses a
module that leaves one out):

- NAME, DATASET (outputs/prepared/<DATASET>.jsonl), RAW_FILES (globs under the raw data dir; with
  OTHER_FILES the exact file set), EXPECTED_ROWS, `load(raw_dir) -> records` (the parser);
- `expectations(x) -> list` (its Great Expectations suite; x = data.validate.SuiteKit) and
  optionally `frame(df, rows)` (computed columns the suite checks) and FINITE_SCORES;
- PROTOCOLS, a `Settings` dataclass (its params entry, defaults = the study's full protocol) and
  `run(backend, records, settings, seed=, n_boot=, model=, data_dir=) -> (metrics, rows)`;
- HEADLINE and HIGHER_IS_BETTER (direction of "more trustworthy");
- UNIT (what one bootstrap unit is) and `units(rows) -> [(unit_id, value)]` (units.csv);
- TEST_LOSS (what its influence test pair contrasts; attribution/testpairs.py).

Config validation, data (prepare, validate, the raw file set), eval, influence, report and the CLI
read this registry. Vertical modules import only light code, so importing them all is cheap.
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


# what every vertical module must declare (attributes, then callables)
REQUIRED = ("NAME", "DATASET", "RAW_FILES", "EXPECTED_ROWS", "PROTOCOLS", "HEADLINE", "HIGHER_IS_BETTER",
            "UNIT", "TEST_LOSS", "Settings")
REQUIRED_CALLABLES = ("load", "expectations", "run", "units")


def check_module(mod: ModuleType, name: str) -> ModuleType:
    """The module if it declares everything a vertical needs; else one line naming what is missing."""
    missing = [a for a in REQUIRED if not hasattr(mod, a)]
    missing += [f for f in REQUIRED_CALLABLES if not callable(getattr(mod, f, None))]
    if missing:
        raise UserError(f"vertical '{name}' ({mod.__name__}) does not declare {', '.join(missing)}")
    if mod.NAME != name or not isinstance(mod.HIGHER_IS_BETTER, bool):
        raise UserError(f"vertical '{name}': NAME must be '{name}' and HIGHER_IS_BETTER a bool")
    return mod


def modules() -> dict[str, ModuleType]:
    """Every registered vertical's module, checked."""
    return {name: get(name) for name in VERTICALS}


def get(vertical: str) -> ModuleType:
    if vertical not in VERTICALS:
        raise UserError(f"unknown vertical '{vertical}' (known: {', '.join(VERTICALS)})")
    return check_module(importlib.import_module(VERTICALS[vertical]), vertical)


def settings(vertical: str, entry: dict[str, Any] | None = None) -> Any:
    """The vertical's validated Settings from its params entry (unknown keys / bad values -> one line)."""
    from rlhf_trust.schema import build, require

    key = f"eval.verticals.{vertical}"
    entry = dict(entry or {})
    # an engine setting, not the protocol's: the vertical's own generation batch size (stage.py)
    bs = entry.pop("batch_size", None)
    require(bs is None or (isinstance(bs, int) and not isinstance(bs, bool) and bs >= 1), f"{key}.batch_size",
            f"must be an integer >= 1, got {bs!r}")
    s = build(get(vertical).Settings, entry, key)
    s.check(key)
    return s


def check_entries(entries: dict[str, Any]) -> None:
    """Every eval.verticals entry, validated by its own vertical (config.py checks only that each is
    a mapping): an unknown vertical or a bad key is one ConfigError line naming it."""
    from rlhf_trust.schema import require

    for name, entry in entries.items():
        require(name in VERTICALS, f"eval.verticals.{name}", f"unknown vertical (known: {', '.join(VERTICALS)})")
        settings(name, entry)


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
