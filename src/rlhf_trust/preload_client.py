"""A stage's side of the fork server (rlhf_trust/preload.py): when $RLHF_TRUST_PRELOAD names a
server's socket, `cli.main` hands it the command line and waits for the child's exit status.

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


def run_via_server(path: str, argv: list[str]) -> int | None:
    """Run this command line in a child of the server at `path`; its exit status, or None when no
    server answers (the caller then runs the command itself)."""
    import json

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    with sock:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        payload = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(sock, [HEADER.pack(len(payload)) + payload], [0, 1, 2])
        try:
            pid = int(recv_msg(sock))  # the server sends the child's pid once it has forked
        except (ConnectionError, ValueError):
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
