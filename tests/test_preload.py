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


class _FakeServer:
    """A listener of this user's at `path` that records what a client sends and answers exit 0."""

    def __init__(self, path):
        import socket
        import threading

        self.received = b""
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.srv.settimeout(5)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2)
            try:
                while chunk := conn.recv(1 << 16):
                    self.received += chunk
                    if len(self.received) > 4:  # a request: answer like a server whose command succeeded
                        preload_client.send_msg(conn, b"4242")
                        preload_client.send_msg(conn, b"0")
            except OSError:
                pass

    def close(self):
        self.srv.close()
        self.thread.join(5)


def test_a_socket_in_a_directory_others_can_write_is_never_used(tmp_path, capfd, monkeypatch):
    d = tmp_path / "preload"
    d.mkdir()
    d.chmod(0o755)                     # e.g. re-created by another local user after the wrapper exited
    fake = _FakeServer(d / "sock")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret")
    try:
        assert preload_client.run_via_server(str(d / "sock"), ["rlhf-trust", "prepare"]) is None
        err = capfd.readouterr().err
        assert "not using the preload server" in err and "mode 755" in err and err.count("\n") == 1
        d.chmod(0o700)                 # mode right, owner not this user
        monkeypatch.setattr(os, "getuid", lambda: os.geteuid() + 1)
        assert preload_client.run_via_server(str(d / "sock"), ["rlhf-trust", "prepare"]) is None
        assert "not this user's alone" in capfd.readouterr().err
    finally:
        fake.close()
    assert fake.received == b""        # no environment, no file descriptors, no fake exit status taken


def test_a_peer_that_is_not_the_recorded_server_or_user_gets_nothing(tmp_path, capfd, monkeypatch):
    fake = _FakeServer(tmp_path / "sock")     # this user's, but not the server the wrapper started
    try:
        assert preload_client.run_via_server(str(tmp_path / "sock"), ["rlhf-trust", "x"], server_pid=os.getpid() + 1) is None
        assert "is pid" in capfd.readouterr().err
        real = preload_client.peer_credentials
        monkeypatch.setattr(preload_client, "peer_credentials", lambda s: (real(s)[0], os.getuid() + 1, 0))
        assert preload_client.run_via_server(str(tmp_path / "sock"), ["rlhf-trust", "x"]) is None   # another uid
    finally:
        fake.close()
    assert fake.received == b""
    # without the checks' objections the same listener would have been handed the request
    fake = _FakeServer(tmp_path / "sock2")
    monkeypatch.undo()
    try:
        assert preload_client.run_via_server(str(tmp_path / "sock2"), ["rlhf-trust", "x"], server_pid=os.getpid()) == 0
    finally:
        fake.close()
    assert b'"argv"' in fake.received


def test_the_server_refuses_clients_of_another_user(tmp_path):
    path = str(tmp_path / "sock")
    env = {**os.environ, "RLHF_TRUST_PRELOAD_MODULES": ""}
    code = ("from rlhf_trust import preload; preload.peer_credentials = lambda s: (1, 12345, 1); "  # every client: uid 12345
            f"preload.serve({path!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        assert preload_client.run_via_server(path, ["rlhf-trust", "--version"], server_pid=proc.pid) is None
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"   # a zombie nobody reaped yet: dead
    except FileNotFoundError:
        return True


def _wrapper(tmp_path):
    """The wrapper around a command that prints the socket and the server's pid, then sleeps."""
    env = {**os.environ, "RLHF_TRUST_PRELOAD_MODULES": ""}
    code = (f"import os, time; print(os.environ[{preload_client.ENV!r}], os.environ[{preload_client.PID_ENV!r}], os.getpid(), "
            "flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-m", "rlhf_trust.preload", "--", sys.executable, "-c", code],
                            env=env, stdout=subprocess.PIPE, text=True)
    path, server, command = proc.stdout.readline().split()
    for _ in range(200):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    assert os.path.exists(path) and not _gone(int(server))
    return proc, path, int(server), int(command)


def test_sigterm_to_the_wrapper_ends_the_command_and_the_server_and_closes_the_pipe(tmp_path):
    import signal

    proc, path, server, command = _wrapper(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 128 + signal.SIGTERM
    assert proc.stdout.read() == ""                   # EOF: nobody holds the caller's stdout any more
    assert _gone(server) and _gone(command)
    assert not os.path.exists(os.path.dirname(path))  # the socket's directory is removed


def test_the_server_dies_with_a_killed_wrapper(tmp_path):
    import signal

    proc, _, server, command = _wrapper(tmp_path)
    try:
        proc.kill()                                   # no handler runs: the kernel's parent-death signal does it
        proc.wait(10)
        for _ in range(100):
            if _gone(server):
                break
            time.sleep(0.1)
        assert _gone(server)
    finally:
        try:
            os.kill(command, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stdout.close()


def test_the_command_keeps_default_signal_handling(tmp_path):
    env = {**os.environ, "RLHF_TRUST_PRELOAD_MODULES": ""}
    code = "import signal, sys; sys.exit(0 if signal.getsignal(signal.SIGINT) is signal.default_int_handler else 5)"
    run = subprocess.run([sys.executable, "-m", "rlhf_trust.preload", "--", sys.executable, "-c", code],
                         check=False, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0   # Ctrl-C still interrupts the command (DVC), not only the wrapper
