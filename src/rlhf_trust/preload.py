"""A fork server for a run of many short stage processes (`make smoke`): cheaper process starts.

Every `rlhf-trust <stage>` process imports MLflow, torch, transformers, peft, TRL or Great
Expectations before it does any work: ~4-8 s of each tiny smoke stage (18 of them) on the shared
2-core machine, more than most stages' own work. `python -m rlhf_trust.preload -- <command>` runs
<command> (e.g. `dvc repro`) next to one server process that imports those libraries once; a stage
started under it ($RLHF_TRUST_PRELOAD = the server's socket) hands its argv, cwd, environment and
stdin/stdout/stderr to the server, which forks a child that runs the stage exactly as `rlhf-trust`
would (same code, its own process, pid and MLflow run) and reports its exit status back. Signals the
stage process gets (DVC's SIGTERM/SIGINT) are passed on to the child.

Nothing else changes: without $RLHF_TRUST_PRELOAD, or when the server does not answer, the stage runs
in its own process as always (the stage's side is rlhf_trust/preload_client.py). Hand-written
because no library forks a pre-imported Python for a command line (multiprocessing's forkserver
runs functions, not a CLI with the caller's stdio). The client trusts only a 0700 socket directory
of its user's and a peer (SO_PEERCRED) that is the server the wrapper started; the server serves only
its own user, dies with its wrapper (PR_SET_PDEATHSIG), and a SIGTERM to the wrapper reaches the
command, then ends the server.
Only third-party libraries (and the few light modules of this package that set their environment)
are preloaded, so each stage runs the code of the moment it starts.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

from rlhf_trust.preload_client import ENV, HEADER, PID_ENV, peer_credentials, recv_exact, send_msg

# what the stages import, heaviest first (a failed import only means that stage pays for it itself)
PRELOAD = ("mlflow", "mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
           "pandas", "great_expectations", "torch", "transformers", "peft", "trl", "datasets", "accelerate",
           "scipy.stats", "sklearn.svm")
FIRST = 5  # imported before the server listens: what validate and curate need (MLflow, its store, GX)


# ---------------------------------------------------------------------------------------------
# server
# ---------------------------------------------------------------------------------------------
def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the stage process, run the CLI, send the status, exit."""
    for i, fd in enumerate(fds[:3]):
        os.dup2(fd, i)
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)  # the child runs the command itself (and starts no server's clients)
    os.environ.pop(PID_ENV, None)
    sys.argv = list(request["argv"])
    rc = 1
    try:
        from rlhf_trust import cli

        rc = cli.main()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - a bug in the stage: its traceback, as a stage process shows it
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            send_msg(conn, str(int(rc)).encode())
        except OSError:
            pass
    os._exit(int(rc))  # not the server's exit path (its socket, its loop); the stage already ended its run


def _import(name: str) -> None:
    """Import a module (or call `module.function`: SQLAlchemy maps MLflow's ~70 tables on first use,
    ~1-2 s of every stage's first store call); a failure only means the stage pays for it itself."""
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if name.endswith("configure_mappers"):
                module, _, func = name.rpartition(".")
                getattr(importlib.import_module(module), func)()
            else:
                importlib.import_module(name)
        except Exception:  # noqa: BLE001, S110 - optional: the stage imports it itself then
            pass


def die_with_parent() -> None:
    """SIGTERM to this process when its parent (the wrapper) dies, however it dies (Linux prctl
    PR_SET_PDEATHSIG); if the parent is already gone, exit now."""
    import ctypes
    import ctypes.util

    parent = int(os.environ.get(PID_ENV + "_PARENT", "0") or 0)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # not Linux: the wrapper's SIGTERM handler still ends the server
    if parent and os.getppid() != parent:
        os._exit(0)


def serve(path: str) -> None:
    """Import the first stages' libraries, listen at `path`, then fork one child per request and
    import the other libraries while no request waits."""
    import select

    from rlhf_trust import quiet
    from rlhf_trust.tracking import configure_env

    configure_env()
    quiet.install()
    die_with_parent()
    modules = os.environ.get("RLHF_TRUST_PRELOAD_MODULES")  # comma-separated override (tests: none)
    names = list(PRELOAD if modules is None else filter(None, modules.split(",")))
    first, rest = names[:FIRST], names[FIRST:]
    for name in first:
        _import(name)
    if modules is None:
        _import("sqlalchemy.orm.configure_mappers")
    # Listen once the first stages' libraries are in: prepare starts before, and runs on its own
    # in parallel with them; the rest are imported between requests (a stage waits at most one import).
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # bound under a temporary name and renamed once listening: a client never finds a socket that
    # refuses connections (which it would read as "no server" and run the stage itself)
    tmp = f"{path}.{os.getpid()}.tmp"
    srv.bind(tmp)
    srv.listen(16)
    os.replace(tmp, path)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    while True:
        if rest and not select.select([srv], [], [], 0)[0]:
            _import(rest.pop(0))
            continue
        conn, _ = srv.accept()
        try:
            if peer_credentials(conn)[1] != os.getuid():  # only this user's processes
                conn.close()
                continue
            msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
            size = HEADER.unpack(msg[:HEADER.size])[0]
            data = msg[HEADER.size:]
            if len(data) < size:
                data += recv_exact(conn, size - len(data))
            import json

            request = json.loads(data)
        except (OSError, ValueError, struct.error):
            conn.close()
            continue
        pid = os.fork()
        if pid == 0:
            srv.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            send_msg(conn, str(os.getpid()).encode())
            _child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m rlhf_trust.preload -- <command...>`: run <command> with a preload server."""
    import subprocess
    import tempfile

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m rlhf_trust.preload -- <command> [args...]", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rlhf-trust-preload-") as tmp:  # mode 0700, this user's
        path = os.path.join(tmp, "sock")
        server = subprocess.Popen([sys.executable, "-c", f"from rlhf_trust.preload import serve; serve({path!r})"],
                                  env={**os.environ, PID_ENV + "_PARENT": str(os.getpid())})
        command = None

        def forward(signum, frame):  # SIGTERM/SIGHUP: to the command (DVC stops its stage), then end
            if command is not None and command.poll() is None:
                command.send_signal(signum)
            else:
                raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, forward)
        try:  # until the server listens (after its imports), a stage finds no socket and runs itself
            command = subprocess.Popen(args, env={**os.environ, ENV: path, PID_ENV: str(server.pid)})
            # Ctrl-C reaches the command itself (same process group); ignored here only after the start,
            # as an ignored signal would stay ignored in the command
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            rc = command.wait()
            return 128 - rc if rc < 0 else rc
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
