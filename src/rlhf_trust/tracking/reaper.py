"""Runs that cannot end themselves: earlier runs whose process died are marked KILLED, and
SIGTERM ends the current one as KILLED."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rlhf_trust import fileio
from rlhf_trust.tracking.store import experiment_name


def mark_dead_runs_killed(mlflow: Any, stage: str) -> list[str]:
    """Earlier runs of `stage` still RUNNING whose process is gone (SIGKILL, OOM, power loss) -> KILLED.

    Only runs started on this host are judged (a pid means nothing elsewhere). Returns their ids."""
    import socket

    client = mlflow.tracking.MlflowClient()
    exp = mlflow.get_experiment_by_name(experiment_name())
    if exp is None:
        return []
    host, done = socket.gethostname(), []
    for r in client.search_runs([exp.experiment_id], max_results=1000,
                                filter_string=f"tags.stage = '{stage}' and attributes.status = 'RUNNING'"):
        pid = r.data.tags.get("process.pid", "")
        if r.data.tags.get("process.host") == host and pid.isdigit() and not fileio.pid_alive(int(pid)):
            client.set_terminated(r.info.run_id, "KILLED")
            done.append(r.info.run_id)
    return done


@contextlib.contextmanager
def sigterm_kills_run(mlflow: Any, stage: str) -> Iterator[None]:
    """SIGTERM (kill, DVC or a scheduler stopping the stage): end the run as KILLED, exit 143.

    SystemExit unwinds the stage, so its `finally` blocks (atomic writes, output units) still run."""
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        mlflow.end_run("KILLED")  # pops the active run: the `with` block's end_run is then a no-op
        print(f"rlhf-trust {stage}: terminated (SIGTERM); MLflow run marked KILLED", file=sys.stderr, flush=True)
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
