"""A stage's side of the fork server (rlhf_trust/preload.py): when $RLHF_TRUST_PRELOAD names a
server's socket, `cli.main` hands it the command line and waits for the child's exit status.

Only a socket that can be trusted (OpenSSH's and systemd's rules): before it sends anything the
client checks that the socket's directory is its own user's with no group or other access, and that
the peer (SO_PEERCRED) runs as its user and is the server the wrapper started ($RLHF_TRUST_PRELOAD_PID).

Also the length-prefixed messages both sides exchange. Imports nothing of the project, so `cli`
reaches it without importing the server (which runs `cli` in its children).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

ENV = "RLHF_TRUST_PRELOAD"
PID_ENV = "RLHF_TRUST_PRELOAD_PID"  # the server's pid, which the peer on the socket must be
HEADER = struct.Struct("!I")


def send_msg(sock: socket.socket, data: bytes) -> None:
    sock.sendall(HEADER.pack(len(data)) + data)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def recv_msg(sock: socket.socket) -> bytes:
    return recv_exact(sock, HEADER.unpack(recv_exact(sock, HEADER.size))[0])


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket (Linux SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


def untrusted(path: str) -> str | None:
    """Why the socket at `path` is not to be trusted, or None: its directory (not a symlink) must be
    this user's with no group or other access, and the socket this user's too."""
    import stat

    uid = os.getuid()
    directory = os.path.dirname(os.path.abspath(path))
    try:
        d, f = os.lstat(directory), os.lstat(path)
    except OSError:
        return None  # no socket: nothing to trust, the caller runs the command itself
    if not stat.S_ISDIR(d.st_mode) or d.st_uid != uid or d.st_mode & 0o077:
        return f"directory {directory} is not this user's alone (owner uid {d.st_uid}, mode {stat.S_IMODE(d.st_mode):o})"
    if not stat.S_ISSOCK(f.st_mode) or f.st_uid != uid:
        return f"{path} is not a socket of this user's"
    return None


def run_via_server(path: str, argv: list[str], server_pid: int | None = None) -> int | None:
    """Run this command line in a child of the server at `path`; its exit status, or None when no
    server answers or it cannot be trusted (the caller then runs the command itself). `server_pid`:
    the pid the peer must have (the server the wrapper started)."""
    import json

    why = untrusted(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if why is None:
            sock.connect(path)
            pid_, uid, _ = peer_credentials(sock)
            if uid != os.getuid() or (server_pid is not None and pid_ != server_pid):
                why = f"its server is pid {pid_} of uid {uid}, not this user's pid {server_pid or 'any'}"
    except OSError:
        sock.close()
        return None
    if why is not None:
        sock.close()
        print(f"rlhf-trust: not using the preload server at {path}: {why}; running the command itself",
              file=sys.stderr)
        return None
    with sock:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        message = HEADER.pack(len(payload)) + payload
        try:
            sent = socket.send_fds(sock, [message], [0, 1, 2])
            sock.sendall(message[sent:])  # a large environment may not go in one sendmsg
            pid = int(recv_msg(sock))  # the server sends the child's pid once it has forked
        except (OSError, ValueError):  # the server closed the connection (it refused us, or is stopping)
            return None

        def forward(signum, frame):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        try:
            return int(recv_msg(sock))
        except (ConnectionError, ValueError):
            return 1  # the child died without a status (killed by a signal)
