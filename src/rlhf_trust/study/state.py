"""The study's state file, studies/<name>/study.json: the grid, every cell's overrides and status
(pending, running, done, failed), its job id, workspace, commit, MLflow run ids and error line.
Written atomically after every change, so a killed driver leaves the last consistent state; a
re-run submits the cells that are not done.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_trust.errors import UserError
from rlhf_trust.fileio import read_json, write_json

DONE, FAILED, RUNNING, PENDING = "done", "failed", "running", "pending"


def study_dir(root: Path, name: str) -> Path:
    return Path(root) / "studies" / name


def load(path: Path) -> dict[str, Any] | None:
    return read_json(path) if Path(path).is_file() else None


def merge(old: Mapping[str, Any] | None, grid: Mapping[str, list], cells: Mapping[str, dict],
          settings: Mapping[str, Any]) -> dict[str, Any]:
    """The state for this invocation: the old cells' records kept (a cell present before keeps its
    status and history), new cells pending. A study's name stands for one params file and target."""
    if old:
        for k in ("params_file", "targets"):
            if old.get(k) != settings.get(k):
                raise UserError(f"'{settings['name']}' was run with {k}={old.get(k)!r}, "
                                f"not {settings.get(k)!r}; choose another --name")
    state = {**(old or {}), **settings, "grid": {k: list(v) for k, v in grid.items()}}
    records = dict((old or {}).get("cells", {}))
    for cid, overrides in cells.items():
        rec = records.get(cid) or {"status": PENDING, "attempts": 0}
        rec["overrides"] = dict(overrides)
        records[cid] = rec
    state["cells"] = records
    return state


def to_submit(state: Mapping[str, Any], cells: Mapping[str, dict]) -> list[str]:
    """This grid's cells that are not done: missing, failed, pending, or left running by a driver
    that is gone."""
    return [cid for cid in cells if state["cells"].get(cid, {}).get("status") != DONE]


def mark(state: dict[str, Any], cid: str, **fields: Any) -> None:
    rec = state["cells"][cid]
    rec.update(fields)
    rec["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def save(path: Path, state: Mapping[str, Any]) -> None:
    write_json(path, state)
