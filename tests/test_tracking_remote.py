"""A remote tracking URI that does not answer: the stage refuses in one line, exit 2, in seconds.

(tests/test_team.py runs the same cases against a real server that is stopped mid-test.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf_trust import tracking
from rlhf_trust.errors import UserError

RLHF_TRUST = str(Path(sys.executable).parent / "rlhf-trust")


def test_redact_hides_passwords_only():
    assert tracking.redact("http://alice:s3cr3t@mlflow.lab:5000") == "http://alice:***@mlflow.lab:5000"
    assert tracking.redact("postgresql://u:pw@db/mlflow") == "postgresql://u:***@db/mlflow"
    assert tracking.redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_artifact_root_defers_to_a_tracking_server(monkeypatch):
    monkeypatch.delenv("RLHF_TRUST_ARTIFACT_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.artifact_root() is None  # the server's --artifacts-destination
    monkeypatch.setenv("RLHF_TRUST_ARTIFACT_ROOT", "s3://bucket/mlflow")
    assert tracking.artifact_root() == "s3://bucket/mlflow"


def test_check_reachable_refused_port_is_one_line_with_the_uri():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://user:pw@127.0.0.1:{port}"
    with pytest.raises(UserError) as e:
        tracking.check_reachable(uri)
    msg = str(e.value)
    assert e.value.exit_code == 2 and "\n" not in msg
    assert f"http://user:***@127.0.0.1:{port}" in msg and "pw@" not in msg and "refused" in msg


def test_check_reachable_times_out_on_a_server_that_never_answers(monkeypatch):
    monkeypatch.setenv("RLHF_TRUST_TRACKING_TIMEOUT", "1")
    with socket.socket() as s:  # accepts connections (backlog) but never replies
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        uri = f"http://127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(UserError) as e:
            tracking.check_reachable(uri)
        assert time.monotonic() - t0 < 5
    assert uri in str(e.value) and "unreachable" in str(e.value)


def test_stage_refuses_before_work_when_the_server_is_down(raw_data, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "params.yaml").write_text("prepare: {max_train_pairs: 4, max_heldout_pairs: 2}\n")
    (tmp_path / "data").symlink_to(raw_data)
    env = {"PATH": str(Path(sys.executable).parent), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
           "HOME": str(tmp_path)}
    r = subprocess.run([RLHF_TRUST, "prepare"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        (f"rlhf-trust prepare: error: MLflow tracking server http://127.0.0.1:{port} is unreachable "
         "([Errno 111] Connection refused); start it, or unset MLFLOW_TRACKING_URI for the local store")]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "metrics").exists()


class _HealthThen:
    """127.0.0.1 server: /health answers 200; every other request is reset (RST) or left hanging."""

    def __init__(self, mode: str):
        import http.server
        import struct
        import threading

        hangs = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path.startswith("/health"):
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"OK")
                elif mode == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                else:
                    hangs.append(self.connection)
                    time.sleep(5)

            do_POST = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("mode", ["reset", "hang"])
def test_a_server_that_answers_health_then_fails_never_shows_the_password(raw_data, tmp_path, mode):
    server = _HealthThen(mode)
    try:
        (tmp_path / "params.yaml").write_text("prepare: {max_train_pairs: 4, max_heldout_pairs: 2}\n")
        (tmp_path / "data").symlink_to(raw_data)
        uri = f"http://alice:pl4nted-pw@127.0.0.1:{server.port}"
        env = {"PATH": str(Path(sys.executable).parent), "MLFLOW_TRACKING_URI": uri, "HOME": str(tmp_path),
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               **{k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}}   # this checkout's code
        r = subprocess.run([RLHF_TRUST, "prepare"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    finally:
        server.stop()
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "pl4nted-pw" not in r.stderr + r.stdout
    assert f"alice:***@127.0.0.1:{server.port}" in lines[0]
