"""The mount process's side of the control socket (``control.py``): commit, refresh, status."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import trio

from artifactd.fs.gitcmd import GitFailed
from artifactd.fs.write.branch import BranchSync
from artifactd.fs.write.commit import CommitFailed
from artifactd.fs.write.control import MAX_REQUEST, short_path


async def _answer(sync: BranchSync, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "status":
        return {"ok": True, **sync.describe(), "requests": sync.fs.request_counts()}
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
    with short_path(path) as short:
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
