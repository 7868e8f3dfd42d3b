"""`rlhf-trust study`: check the grid, write the state, hand the cells that are not done to the
executor, record each result as it comes, then write the pooled report.

Exit 0 when every cell is done, 1 when some failed (they are listed in the report; the rest are
reported), 2 for bad input (unknown executor, a grid key that is not a params key, a bad value).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rlhf_trust.errors import UserError
from rlhf_trust.study import executors, gather, grid, state

# passed to every cell: the team's servers and credentials, offline switches, the package path
PASS_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL_S3", "RLHF_TRUST_ARTIFACT_ROOT", "RLHF_TRUST_TRACKING_TIMEOUT",
            "AWS_DEFAULT_REGION", "PYTHONPATH", "PATH", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
            "TRANSFORMERS_OFFLINE", "MLFLOW_DISABLE_TELEMETRY", "DVC_NO_ANALYTICS", "TOKENIZERS_PARALLELISM")


def _git(*args: str) -> str:
    r = subprocess.run(["git", *args], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"git {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return r.stdout.strip()


def validate_cells(raw: dict[str, Any], cells: dict[str, dict]) -> dict[str, str]:
    """cell id -> its params.yaml text; every section of every cell is checked (ConfigError, exit 2)."""
    import yaml

    from rlhf_trust import config

    out = {}
    for cid, overrides in cells.items():
        applied = grid.apply(raw, overrides)
        for name in config.SECTIONS:
            if name in applied:
                config.section(name, applied)
        out[cid] = yaml.safe_dump(applied, sort_keys=False)
    return out


def _dirty_tar(root: Path, dest: Path) -> str | None:
    """The working tree's uncommitted changes (tracked and new files), as `make smoke` takes them."""
    files = [f for f in _git("ls-files", "-z", "-m", "-o", "--exclude-standard").split("\0")
             if f and not f.startswith("studies/") and f != "params.yaml" and (root / f).is_file()]
    if not files:
        return None
    import tarfile

    from rlhf_trust.fileio import atomic_path

    with atomic_path(dest) as tmp, tarfile.open(tmp, "w") as tar:
        for f in files:
            tar.add(root / f, arcname=f)
    return str(dest.resolve())


def cli(args: Any) -> int:
    executor = executors.check(args.executor)
    root = Path(_git("rev-parse", "--show-toplevel"))
    from rlhf_trust import config

    params_file = Path(args.params)
    raw = config.read_params(params_file)
    g = grid.parse_grid(args.grid, raw)
    skey = grid.seed_key(g, args.seed_key)
    cells = grid.cells(g)
    texts = validate_cells(raw, cells)
    name = args.name or "grid-" + hashlib.sha1(json.dumps(g, sort_keys=True, default=str).encode()).hexdigest()[:8]
    study = state.study_dir(root, name)
    path = study / "study.json"
    settings = {"name": name, "params_file": str(params_file), "targets": list(args.target), "seed_key": skey,
                "executor": executor}
    st = state.merge(state.load(path), g, cells, settings)
    todo = state.to_submit(st, cells)
    commit = _git("rev-parse", "HEAD")
    st["commit"] = commit
    state.save(path, st)
    print(f"study {name}: {len(cells)} cells, {len(cells) - len(todo)} done, submitting {len(todo)} to {executor}")
    if todo:
        _ready_store()
        dirty = _dirty_tar(root, study / "source.tar")
        env = {k: os.environ[k] for k in PASS_ENV if k in os.environ}
        specs = {cid: {"repo": str(root), "commit": commit, "workspace": str(study / "work" / cid),
                       "params_text": texts[cid], "targets": list(args.target), "env": env, "dirty_tar": dirty,
                       "processes": max(args.gpus_per_cell, 1),
                       "accelerate_config": args.accelerate_config or str(root / "configs/accelerate_gpu8.yaml"),
                       "pid_file": str(study / "work" / f"{cid}.pid")} for cid in todo}

        def started(cid: str, job: str) -> None:
            state.mark(st, cid, status=state.RUNNING, job_id=job, attempts=st["cells"][cid].get("attempts", 0) + 1,
                       error=None, rc=None, wall_s=None, log=None, mlflow_runs={}, pushed=None)
            state.save(path, st)

        def finished(cid: str, result: dict[str, Any]) -> None:
            units = result.pop("units", None) or {}
            _write_units(study / "cells" / cid, units)
            state.mark(st, cid, **result)
            state.save(path, st)
            line = f"  {cid}: {result['status']}" + (f" ({result['error']})" if result.get("error") else "")
            print(line + (f" in {result['wall_s']:.0f} s" if result.get("wall_s") else ""), flush=True)

        res = executors.Resources(parallel=args.parallel, cpus=args.cpus_per_cell, gpus=args.gpus_per_cell,
                                  timeout_min=args.timeout_min,
                                  slurm={"slurm_partition": args.slurm_partition} if args.slurm_partition else {},
                                  ray_address=args.ray_address, ray_num_cpus=args.ray_num_cpus)
        try:
            executors.run(executor, specs, study / "jobs", res, started, finished)
        except ImportError as e:
            raise UserError(f"the {executor} executor needs {e.name} (make setup installs it)") from None
    report = gather.build(st, study)
    failed = report["not_done"]
    print(f"study {name}: {len(report['done'])} of {len(cells)} cells done; report: {study / 'report.md'}")
    for cid in failed:
        print(f"  not done: {cid} ({st['cells'][cid].get('error') or st['cells'][cid].get('status')})", file=sys.stderr)
    return 1 if failed else 0


def _ready_store() -> None:
    """A local sqlite store is created (and migrated) once here: cells creating it at the same time
    race on its schema. A server is left to the cells (each stage checks that it answers)."""
    from rlhf_trust.tracking.store import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:"):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _write_units(cell_dir: Path, units: dict[str, str]) -> None:
    """The cell's eval/**/units.csv as the worker sent them (replacing an earlier attempt's)."""
    from rlhf_trust.fileio import write_text

    for rel, text in units.items():
        write_text(cell_dir / rel, text)
