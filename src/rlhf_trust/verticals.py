"""What a trust vertical is (`VerticalSpec`) and where the registered ones are found.

A vertical is one module under rlhf_trust/evals/ that declares `SPEC = VerticalSpec(...)`: its
dataset (raw files, parser, hub source, validation suite), its protocols and settings, its headline
and direction, its bootstrap unit and the test loss attribution contrasts. Adding a module that
declares a SPEC (and its params entry, eval.verticals.<name>) registers the vertical: nothing else
names it.

This module is the bottom of the stack (it imports no other module of the project statically): the
data stages, config validation, eval, influence and report all read the specs from here. The
vertical modules are plugins found by name (`importlib`), so the registry depends on none of them.
"""

from __future__ import annotations

import functools
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_trust.errors import UserError

PACKAGE = "rlhf_trust.evals"   # where vertical modules live (evals/<name>.py)
KNOWN_PROTOCOLS = ("generation", "loglik")


def copy_file(src: Path, dest: Path) -> None:
    import shutil

    shutil.copyfile(src, dest)


@dataclass(frozen=True)
class HubFile:
    """One file of the vertical's dataset on the Hugging Face hub and the raw-layout file it becomes."""

    repo: str                  # dataset repository, e.g. AI-secure/DecodingTrust
    path: str                  # the file in that repository
    dest: str                  # where it goes, relative to the raw data dir
    # (downloaded file, destination) -> writes the destination; a plain copy unless the hub holds
    # the data in another format than the raw layout's (e.g. parquet instead of the study's JSON)
    convert: Callable[[Path, Path], None] = copy_file
    revision: str | None = None  # None = the repository's default branch


@dataclass(frozen=True)
class VerticalSpec:
    """Everything about one trust vertical. Callables are the module's own functions."""

    name: str                                   # = the module name and the params key
    dataset: str                                # outputs/prepared/<dataset>.jsonl
    raw_files: tuple[str, ...]                  # globs under the raw data dir: the data the parser reads
    expected_rows: int                          # records the parser yields from the full raw files
    load: Callable[[Path], list[dict]]          # raw data dir -> records (one DataError line when bad)
    hub: tuple[HubFile, ...]                    # `data.source: hub`: what to fetch and where it goes
    expectations: Callable[[Any], list]         # x (data.validate.SuiteKit) -> its GX suite
    protocols: tuple[str, ...]                  # generation and/or loglik
    settings: type                              # its params entry (a dataclass; defaults = the full protocol)
    run: Callable[..., tuple[dict, list[dict]]]  # (backend, records, settings, seed=, n_boot=, model=)
    headline: str                               # the metric the report leads with
    higher_is_better: bool                      # direction of "more trustworthy"
    unit: str                                   # what one bootstrap unit is (units.csv)
    units: Callable[[list[dict]], list[tuple[str, float | None]]]  # samples rows -> (unit id, value)
    test_loss: str                              # what its influence test pair contrasts
    other_files: tuple[str, ...] = ()           # files shipped beside the data and not read
    frame: Callable[[Any, list[dict]], Any] | None = None  # computed columns the suite checks
    finite_scores: tuple[str, ...] = ()         # numeric fields that may be absent but never NaN / inf
    headline_is_abs_mean: bool = False          # headline = |mean of units| (report orients the units)
    # a graded metric beside the headline (e.g. the calibrated probability of the untrustworthy
    # verdict): its name, direction and per-unit values (units_graded.csv, the ids of units.csv)
    graded: str | None = None
    graded_higher_is_better: bool = False
    graded_units: Callable[[list[dict]], list[tuple[str, float | None]]] | None = None

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in KNOWN_PROTOCOLS]
        if not self.protocols or bad:
            raise UserError(f"vertical '{self.name}': protocols must be among {list(KNOWN_PROTOCOLS)}, got {bad}")
        if not isinstance(self.higher_is_better, bool):
            raise UserError(f"vertical '{self.name}': higher_is_better must be a bool")
        for f in ("dataset", "headline", "unit", "test_loss"):
            if not isinstance(getattr(self, f), str) or not getattr(self, f).strip():
                raise UserError(f"vertical '{self.name}': {f} must be a non-empty string")
        if not self.raw_files or not self.hub:
            raise UserError(f"vertical '{self.name}': declare its raw_files and hub source")


_DECLARES = re.compile(r"^SPEC\s*=", re.MULTILINE)


def _declares_spec(path: Path) -> bool:
    """The module's source assigns SPEC at top level (read, not imported: the engine modules beside the
    verticals are never loaded just to be looked at)."""
    try:
        return bool(_DECLARES.search(path.read_text(encoding="utf-8")))
    except OSError:
        return False


@functools.cache
def _registry() -> dict[str, VerticalSpec]:
    pkg = importlib.import_module(PACKAGE)
    out: dict[str, VerticalSpec] = {}
    for d in pkg.__path__:
        for path in sorted(Path(d).glob("[!_]*.py")):
            if not _declares_spec(path):
                continue  # an engine module (backends, stats, ...), not a vertical
            _add(out, path.stem)
    return dict(sorted(out.items()))


def _add(out: dict[str, VerticalSpec], name: str) -> None:
    spec = getattr(importlib.import_module(f"{PACKAGE}.{name}"), "SPEC", None)
    if not isinstance(spec, VerticalSpec) or spec.name != name:
        raise UserError(f"{PACKAGE}.{name}: SPEC must be a VerticalSpec named '{name}'")
    out[name] = spec


def names() -> tuple[str, ...]:
    """The registered verticals, by name."""
    return tuple(_registry())


def specs() -> tuple[VerticalSpec, ...]:
    return tuple(_registry().values())


def get(name: str) -> VerticalSpec:
    reg = _registry()
    if name not in reg:
        raise UserError(f"unknown vertical '{name}' (known: {', '.join(reg)})")
    return reg[name]


def by_dataset() -> dict[str, VerticalSpec]:
    """dataset name -> its vertical's spec."""
    return {s.dataset: s for s in specs()}
