"""Which processes of this machine work on a data dir: found from /proc, with no help from
the server (its own process marks are what is under test, so they are not used here)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


def _mentions(proc: Path, needle: bytes) -> bool:
    for name in ("cmdline", "environ"):
        try:
            if needle in (proc / name).read_bytes():
                return True
        except OSError:
            continue
    try:
        return os.readlink(proc / "cwd").encode().startswith(needle)
    except OSError:
        return False


def _is_live(proc: Path) -> bool:
    try:
        return "State:\tZ" not in (proc / "status").read_text()
    except OSError:
        return False


def git_processes(data_dir: Path) -> dict[int, str]:
    """pid -> command line of every live git process whose arguments, environment or working
    directory point into ``data_dir`` (git itself and the helpers it starts)."""
    needle = str(data_dir).encode()
    found = {}
    for proc in PROC.iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            exe = os.path.basename(os.readlink(proc / "exe"))
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if exe.startswith("git") and _mentions(proc, needle) and _is_live(proc):
            found[int(proc.name)] = cmdline
    return found


def server_helpers(data_dir: Path) -> list[int]:
    """pids of the watchdogs supervising servers of ``data_dir``."""
    needle = str(data_dir).encode()
    found = []
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"artifactd.storage.watchdog" in cmdline and needle in cmdline and _is_live(proc):
            found.append(int(proc.name))
    return found


def wait_for(condition: object, seconds: float = 30, step: float = 0.05) -> bool:
    """Poll ``condition()`` until it is true or ``seconds`` passed; returns its last value."""
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


def wait_gone(data_dir: Path, seconds: float = 20) -> dict[int, str]:
    """The git processes of ``data_dir`` still alive after waiting up to ``seconds``."""
    wait_for(lambda: not git_processes(data_dir), seconds)
    return git_processes(data_dir)


def kill_all(pids: list[int] | dict[int, str]) -> None:
    """Test cleanup: SIGKILL processes a failing test left (they would hold the data dir)."""
    for pid in list(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
