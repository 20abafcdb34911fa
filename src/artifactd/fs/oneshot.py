"""``artifactd mount REMOTE DIR`` and ``artifactd unmount DIR``: one repo, no daemon.

``mount`` is ``add-repo`` with DIR's parent as the mount root and DIR's name as the repo
name, then a detached mount process; it returns once DIR is mounted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from artifactd.fs import process
from artifactd.fs.inputs import InputError, check_name
from artifactd.fs.repos import add_repo
from artifactd.fs.state import RootState

STOP_TIMEOUT = 30.0


def mount(remote: str, directory: str, branch: str) -> Path:
    target = Path(directory).absolute()
    check_name(target.name)
    config = add_repo(target.name, remote, branch, str(target.parent))
    state = RootState(target.parent)
    if os.path.ismount(target):
        raise InputError(f"{target} is already mounted: run artifactd unmount {target} first")
    start = process.log_size(state, config.name)
    proc = process.start(state, config, detach=True)
    error = process.wait_ready(state, config, proc, start)
    if error:
        raise InputError(error)
    return target


def unmount(directory: str) -> None:
    target = Path(directory).absolute()
    if not os.path.ismount(target):
        raise InputError(f"{target} is not mounted")
    state = RootState(target.parent)
    pid = process.running_pid(state, target.name) if target.name and ".." not in target.name else None
    process.unmount(target)
    deadline = time.monotonic() + STOP_TIMEOUT
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
