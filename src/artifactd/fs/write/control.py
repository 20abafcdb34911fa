"""The mount process's control socket, ``run/<name>.ctl`` (mode 0600 in a 0700 directory).

One JSON line in (``{"op": "commit", "message": ...}``, ``{"op": "refresh"}``,
``{"op": "status"}``), one JSON line out (``{"ok": true, ...}`` or ``{"ok": false,
"error": ...}``). ``artifact-fs commit``, ``refresh`` and ``status`` are its clients; the
mount process serves it (``controlserver.py``). This module imports neither trio nor FUSE,
so the commands stay quick to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAX_REQUEST = 1 << 16  # a commit message and an op; more is not a request of ours
CLIENT_TIMEOUT = 900.0  # a commit of large files pushes them


class ControlError(RuntimeError):
    pass


@contextlib.contextmanager
def short_path(path: Path) -> Iterator[str]:
    """``path`` through its open directory: a socket path is limited to 107 bytes, and a
    mount root can be longer than that."""
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def ask(path: Path, request: dict[str, Any], timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """One request to a running mount; ``ControlError`` when none answers at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            with short_path(path) as short:
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
