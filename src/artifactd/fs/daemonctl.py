"""The daemon's control socket, ``run/daemon.ctl``: ``add-repo`` handed to a running daemon.

When ``artifact-fs daemon --root ROOT`` runs, ``add-repo --mount-root ROOT`` does not start
a second mount process by way of a second interpreter: it sends the repo to the daemon
(one JSON line, the remote with its credentials inside, over a socket of mode 0600 in the
root's 0700 ``run`` directory: never in ``argv``, a file or a log), and the daemon, which
has the FUSE side imported already, clones, forks the mount and answers once it is
mounted. Without a daemon (no socket, or nobody listening) ``add-repo`` clones by itself
and the mount waits for ``daemon``, the guide's flow.

The daemon serves the socket on its main thread between checks of its mounts, so a
mount is forked from the main thread, as at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from artifactd.fs import handoff
from artifactd.fs.write.control import ControlError, short_path

if TYPE_CHECKING:  # not at run time: add-repo's client (fs/handoff.py) starts without it
    from artifactd.fs.state import RootState

RUN_DIR = Path(".artifact-fs") / "run"  # state.STATE_DIR's run directory (test_mount_handoff checks)

MAX_REQUEST = 1 << 16
REQUEST_TIMEOUT = 10.0  # to read one request line from a connected client


def socket_path(state: RootState) -> Path:
    return state.dir / "run" / "daemon.ctl"


def socket_at(root: Path) -> Path:
    """``socket_path`` of the mount root ``root``, without its ``RootState``."""
    return root / RUN_DIR / "daemon.ctl"


def ask(state: RootState, request: dict[str, Any]) -> dict[str, Any] | None:
    """The running daemon's answer, or ``None`` when no daemon listens for this root."""
    return ask_at(socket_path(state), request)


def ask_at(path: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """``ask`` of the daemon listening at ``path`` (``handoff.ask``: one client for both)."""
    try:
        return handoff.ask(str(path), request)
    except OSError as exc:
        raise ControlError(str(exc)) from None


def _alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            with short_path(path) as short:
                probe.connect(short)
        except OSError:
            return False
    return True


def listen(state: RootState) -> socket.socket | None:
    """The daemon's listening socket; ``None`` if another daemon of this root has it."""
    path = socket_path(state)
    if path.exists():
        if _alive(path):
            return None
        path.unlink()  # a daemon that died left it
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with short_path(path) as short:
            server.bind(short)
    finally:
        os.umask(old)
    server.listen(8)
    return server


def close(state: RootState, server: socket.socket | None) -> None:
    if server is None:
        return
    server.close()
    with contextlib.suppress(FileNotFoundError):
        socket_path(state).unlink()


def serve_one(server: socket.socket, timeout: float,
              handle: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Answer at most one request, waiting up to ``timeout`` for it."""
    ready, _, _ = select.select([server], [], [], timeout)
    if not ready:
        return
    connection, _ = server.accept()
    with connection:
        connection.settimeout(REQUEST_TIMEOUT)
        try:
            request = json.loads(handoff.read_line(connection, MAX_REQUEST))
        except (OSError, ValueError):
            return
        if not isinstance(request, dict):
            answer: dict[str, Any] = {"ok": False, "error": "not a request"}
        else:
            answer = handle(request)
        with contextlib.suppress(OSError):
            connection.sendall(json.dumps(answer).encode() + b"\n")
