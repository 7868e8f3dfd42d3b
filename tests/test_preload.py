"""The smoke run's fork server (rlhf_trust.preload): a stage handed to it runs in a forked child with
the caller's argv, cwd, environment and stdio, and its exit status comes back; without a server the
command runs in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from rlhf_trust import preload_client


def _server(tmp_path):
    path = str(tmp_path / "sock")
    env = {**os.environ, "RLHF_TRUST_PRELOAD_MODULES": ""}  # no heavy imports: seconds, not a minute
    proc = subprocess.Popen([sys.executable, "-c", f"from rlhf_trust.preload import serve; serve({path!r})"], env=env)
    for _ in range(200):
        if os.path.exists(path):
            return proc, path
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the preload server did not listen")


def test_a_stage_runs_in_the_servers_child_with_the_callers_cwd_stdio_and_status(tmp_path, capfd, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "params.yaml").write_text("prepare: {seed: [not, an, int]}\n")
    proc, path = _server(tmp_path)
    try:
        monkeypatch.chdir(work)
        rc = preload_client.run_via_server(path, ["rlhf-trust", "prepare"])
        err = capfd.readouterr().err
        assert rc == 2  # unusable params: the stage's own exit code, through the server
        assert "rlhf-trust prepare: error: params: prepare.seed: must be an integer" in err  # on our stderr
        # a bad command line: argparse's exit status 2 comes back too
        assert preload_client.run_via_server(path, ["rlhf-trust", "no-such-stage"]) == 2
        assert "invalid choice" in capfd.readouterr().err
        assert proc.poll() is None  # the server outlives its children
    finally:
        proc.terminate()
        proc.wait(10)


def test_without_a_server_the_command_runs_itself(tmp_path):
    assert preload_client.run_via_server(str(tmp_path / "none"), ["rlhf-trust", "--version"]) is None
    env = {**os.environ, preload_client.ENV: str(tmp_path / "none")}
    out = subprocess.run([sys.executable, "-m", "rlhf_trust.cli", "--version"], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "rlhf-trust" in out


def test_the_wrapper_runs_the_command_with_the_socket_in_its_environment_and_returns_its_status(tmp_path):
    env = {**os.environ, "RLHF_TRUST_PRELOAD_MODULES": ""}
    code = f"import os, sys; print(os.environ[{preload_client.ENV!r}]); sys.exit(3)"
    run = subprocess.run([sys.executable, "-m", "rlhf_trust.preload", "--", sys.executable, "-c", code],
                         check=False, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 3
    assert run.stdout.strip().endswith("/sock")
