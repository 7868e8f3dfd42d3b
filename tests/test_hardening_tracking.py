"""A stage stopped by SIGTERM ends its MLflow run KILLED (exit 143); one stopped by
SIGKILL is marked KILLED by the next start of the same stage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow

from rlhf_trust import tracking

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import sys, time
from rlhf_trust import tracking
with tracking.stage_run(sys.argv[1]) as sr:
    print(sr.run_id, flush=True)
    time.sleep(120)
"""


def _start(stage: str, tmp_path: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, stage], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read()
    return proc, run_id


def _run(run_id: str):
    mlflow.set_tracking_uri(tracking.tracking_uri())
    return mlflow.get_run(run_id)


def test_sigterm_marks_the_run_killed_and_exits_143(tmp_path):
    proc, run_id = _start("sigterm_probe", tmp_path)
    assert _run(run_id).info.status == "RUNNING"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    err = [line for line in proc.stderr.read().splitlines() if line.startswith("rlhf-trust")]
    assert err == ["rlhf-trust sigterm_probe: terminated (SIGTERM); MLflow run marked KILLED"]
    info = _run(run_id).info
    assert info.status == "KILLED" and info.end_time


def test_sigkilled_run_is_marked_killed_at_the_next_start(tmp_path):
    proc, run_id = _start("sigkill_probe", tmp_path)
    alive, alive_id = _start("sigkill_probe", tmp_path)  # a concurrent live run of the same stage
    try:
        proc.kill()
        proc.wait(timeout=60)
        time.sleep(0.2)
        assert _run(run_id).info.status == "RUNNING"  # what the issue found
        tags = _run(run_id).data.tags
        assert tags["process.pid"] == str(proc.pid) and tags["process.host"]
        with tracking.stage_run("sigkill_probe") as sr:
            pass
        assert _run(run_id).info.status == "KILLED" and _run(run_id).info.end_time
        assert _run(alive_id).info.status == "RUNNING"  # its process still runs: left alone
        assert _run(sr.run_id).info.status == "FINISHED"
    finally:
        alive.kill()
        alive.wait(timeout=60)
