"""The engines that run cells: submitit (LocalExecutor: local processes; AutoExecutor: Slurm) and
Ray (tasks on a cluster, or a local one). This module only hands cells to them and waits: the
engine starts, places and watches the jobs; nothing here schedules. A job that dies (killed, out of
memory, node lost) comes back as a failed cell with the engine's one-line reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_trust.errors import UserError

EXECUTORS = ("local", "slurm", "ray")
POLL_S = 1.0

Started = Callable[[str, str], None]          # (cell id, job id)
Finished = Callable[[str, dict[str, Any]], None]   # (cell id, result)


@dataclass
class Resources:
    parallel: int = 0                 # cells at once (0: all; submitit local and Slurm arrays)
    cpus: int = 1                     # per cell
    gpus: int = 0                     # per cell
    timeout_min: int = 24 * 60
    slurm: dict[str, Any] = field(default_factory=dict)   # extra AutoExecutor parameters (slurm_partition...)
    ray_address: str | None = None    # None: a local Ray cluster of ray_num_cpus CPUs, stopped afterwards
    ray_num_cpus: int = 2


def check(executor: str) -> str:
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    return executor


def run(executor: str, specs: Mapping[str, dict], folder: Path, res: Resources,
        started: Started, finished: Finished) -> None:
    """Run every spec (cell id -> run_cell's argument) on `executor`; `finished` gets each result."""
    if not specs:
        return
    if check(executor) == "ray":
        _ray(specs, res, started, finished)
    else:
        _submitit(executor, specs, folder, res, started, finished)


def _failure(e: BaseException) -> dict[str, Any]:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return {"status": "failed", "error": f"{type(e).__name__}: {lines[0] if lines else 'no message'}"}


def _submitit(executor: str, specs: Mapping[str, dict], folder: Path, res: Resources,
              started: Started, finished: Finished) -> None:
    import submitit

    from rlhf_trust.study.cell import run_cell

    if executor == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=res.timeout_min, gpus_per_node=res.gpus)
    else:
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        ex.update_parameters(timeout_min=res.timeout_min, gpus_per_node=res.gpus, cpus_per_task=res.cpus,
                             tasks_per_node=1, nodes=1, name="rlhf-trust-study", **res.slurm)
    waiting = list(specs)
    jobs: dict[str, Any] = {}
    limit = res.parallel or len(waiting)
    while waiting or jobs:
        while waiting and len(jobs) < limit:
            cid = waiting.pop(0)
            jobs[cid] = ex.submit(run_cell, specs[cid])
            started(cid, str(jobs[cid].job_id))
        for cid, job in list(jobs.items()):
            if job.done():
                del jobs[cid]
                try:
                    result = job.result()
                except Exception as e:  # noqa: BLE001 - any failure of the job died: the engine's reason, one line
                    result = _failure(e)
                finished(cid, result)
        time.sleep(POLL_S)


def _ray(specs: Mapping[str, dict], res: Resources, started: Started, finished: Finished) -> None:
    import os

    if not res.ray_address:
        # a local cluster listens on the loopback address only: Ray otherwise resolves 127.0.0.1 to the
        # machine's routable address; this switch (read when ray is imported) is how it keeps a
        # single-machine cluster on loopback on macOS and Windows
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    from rlhf_trust.study.cell import run_cell

    env = {k: os.environ[k] for k in ("PYTHONPATH", "PATH") if k in os.environ}
    if res.ray_address:
        ray.init(address=res.ray_address, runtime_env={"env_vars": env}, log_to_driver=False)
    else:   # a local cluster on this machine only, stopped by ray.shutdown()
        ray.init(num_cpus=res.ray_num_cpus, num_gpus=res.gpus or None, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(run_cell)
        refs = {}
        for cid, spec in specs.items():
            ref = task.remote(spec)
            refs[ref] = cid
            started(cid, ref.hex())
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - any failure of the worker died or the task raised
                    result = _failure(e)
                finished(refs[ref], result)
    finally:
        ray.shutdown()
