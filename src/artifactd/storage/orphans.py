"""Finding and ending git processes that outlived the server process that started them.

Every git the server starts carries two variables in its environment (``GitRunner.env``):
``ARTIFACTD_GIT_DATA_DIR`` (which data dir it works on) and ``ARTIFACTD_GIT_OWNER`` (the owner
token of the server process that started it, see ``owner``). git passes its environment on
to everything it starts (``git-remote-https``, ``index-pack``, ``pack-objects``), so the
marks find a whole tree of helpers, whatever session or parent they ended up in, and
never a process of another data dir or of a live server. Linux only (``/proc``); elsewhere
nothing is found.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

# Not ARTIFACTD_DATA_DIR: that is a setting, and may be in the server's own environment.
DATA_DIR_VAR = "ARTIFACTD_GIT_DATA_DIR"
OWNER_VAR = "ARTIFACTD_GIT_OWNER"
PROC = Path("/proc")
KILL_ROUNDS = 50  # a process may fork a helper between two scans; scan until none is left
ROUND_PAUSE = 0.02
TERM_GRACE = 1.0  # seconds git gets after SIGTERM to remove its quarantine and lock files


def marked_processes(data_dir: Path) -> Iterator[tuple[int, str]]:
    """(pid, owner token) of every process marked as working on ``data_dir``."""
    want = f"{DATA_DIR_VAR}={data_dir}".encode()
    me = os.getpid()
    try:
        entries = list(os.scandir(PROC))
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"{entry.path}/environ", "rb") as handle:
                env = handle.read().split(b"\0")
        except OSError:  # gone already, or not ours to read
            continue
        if want not in env:
            continue
        owner = next((v[len(OWNER_VAR) + 1:] for v in env if v.startswith(f"{OWNER_VAR}=".encode())), b"")
        yield int(entry.name), owner.decode(errors="replace")


def end_processes(data_dir: Path, doomed: Callable[[str], bool], grace: float = TERM_GRACE) -> int:
    """End every marked process whose owner token ``doomed`` accepts; returns how many.

    SIGTERM first: git removes a push's quarantine directory and its ref locks on SIGTERM,
    not on SIGKILL. After ``grace`` seconds SIGKILL, scanning again after each round until a
    scan finds none: a git killed between two scans may just have started a helper.
    """
    found = [pid for pid, owner in marked_processes(data_dir) if doomed(owner)]
    ended = set(found)
    for pid in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while found and time.monotonic() < deadline:
        time.sleep(ROUND_PAUSE)
        found = [pid for pid, owner in marked_processes(data_dir) if doomed(owner)]
    for _round in range(KILL_ROUNDS):
        found = [pid for pid, owner in marked_processes(data_dir) if doomed(owner)]
        if not found:
            break
        ended.update(found)
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(ROUND_PAUSE)
    return len(ended)
