"""``artifactd mount REMOTE DIR`` and ``artifactd unmount DIR``: one repo, no daemon.

``mount`` is ``add-repo`` with DIR's parent as the mount root and DIR's name as the repo
name, then a detached mount process; it returns once DIR is mounted. One interpreter:
the mount process is forked from this one, not started as a second Python. A new repo is
mounted from its root (read over the git protocol, ``rootfirst.py``) while the blobless
clone runs behind the mount, in the mount process (``rootview.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from artifactd.fs import process, rootfirst
from artifactd.fs.inputs import InputError, check_name, parse_remote
from artifactd.fs.mountprep import Prepared
from artifactd.fs.repos import forget, plan_repo, record
from artifactd.fs.state import RootState

STOP_TIMEOUT = 30.0


def mount(remote: str, directory: str, branch: str) -> Path:
    target = Path(directory).absolute()
    check_name(target.name)
    if os.path.ismount(target):
        raise InputError(f"{target} is already mounted: run artifactd unmount {target} first")
    config, clone = plan_repo(target.name, remote, branch, str(target.parent))
    state = RootState(target.parent)
    if clone is None:  # cloned before: read it while the FUSE side is imported
        early, given = Prepared.start(state, config), None
        from artifactd.fs import mountproc  # noqa: F401 - the import is the point: it overlaps the reading
    else:  # a new repo: the mount answers from the root while the clone runs behind it
        early = None
        record(config)
        # The root is read while the fork imports the FUSE side.
        given = rootfirst.EarlyRoot(config.remote, parse_remote(remote).auth, config.branch)
    start = process.log_size(state, config.name)
    proc = process.fork(state, config, early=early, detach=True, clone=clone, given=given)
    error = process.wait_ready(state, config, proc, start)
    if error:
        if clone is not None and not state.git_dir(config.name).is_dir():
            forget(config)
        raise InputError(process.plain_error(error, config.name))
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
