"""The mount process's control socket, ``run/<name>.ctl`` (mode 0600 in a 0700 directory).

One JSON line in (``{"op": "commit", "message": ...}``, ``{"op": "refresh"}``,
``{"op": "status"}``), one JSON line out (``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}``). ``artifact-fs commit``, ``refresh`` and ``status`` are its clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from artifactd.fs.branch import BranchSync
from artifactd.fs.commit import CommitFailed
from artifactd.fs.gitcmd import GitFailed

MAX_REQUEST = 1 << 16  # a commit message and an op; more is not a request of ours
CLIENT_TIMEOUT = 900.0  # a commit of large files pushes them


class ControlError(RuntimeError):
    pass


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """``path`` through its open directory: a socket path is limited to 107 bytes, and a
    mount root can be longer than that."""
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


async def _answer(sync: BranchSync, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return {"ok": True, **sync.describe()}
    if op == "refresh":
        try:
            await sync.refresh()
            sync.status.refresh_error, sync.status.refresh_failures = "", 0
        except Exception as exc:  # reported to the caller, and in status until a refresh succeeds
            sync.status.refresh_failures += 1
            sync.status.refresh_error = str(exc) or type(exc).__name__
            return {"ok": False, "error": f"refresh failed: {sync.status.refresh_error}"}
        return {"ok": True, **sync.describe()}
    if op == "commit":
        message = request.get("message")
        if not isinstance(message, str) or not message.strip():
            return {"ok": False, "error": "-m MESSAGE is required and must not be empty"}
        try:
            return {"ok": True, **await sync.commit(message)}
        except (CommitFailed, GitFailed, OSError) as exc:
            return {"ok": False, "error": f"{exc} (the overlay is kept)"}
    return {"ok": False, "error": f"unknown op {op!r}"}


async def serve(path: Path, sync: BranchSync) -> None:
    path.unlink(missing_ok=True)
    listener_socket = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with _short(path) as short:
        await listener_socket.bind(short)
    os.chmod(path, 0o600)
    listener_socket.listen()
    listener = trio.SocketListener(listener_socket)

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\n" not in data and len(data) < MAX_REQUEST:
                chunk = await stream.receive_some(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data.split(b"\n", 1)[0])
                answer = await _answer(sync, request if isinstance(request, dict) else {})
            except ValueError:
                answer = {"ok": False, "error": "not a JSON request"}
            await stream.send_all(json.dumps(answer).encode() + b"\n")

    try:
        await trio.serve_listeners(handle, [listener])
    finally:
        path.unlink(missing_ok=True)


def ask(path: Path, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """One request to a running mount; ``ControlError`` when none answers at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            with _short(path) as short:
                client.connect(short)
        except OSError:
            raise ControlError("not mounted: start it with artifact-fs daemon") from None
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    try:
        answer: dict[str, Any] = json.loads(data)
    except ValueError:
        raise ControlError("the mount process closed the connection without an answer: see its log") from None
    return answer
