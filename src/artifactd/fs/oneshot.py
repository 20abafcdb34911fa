"""``artifactd mount REMOTE DIR`` and ``artifactd unmount DIR``: one repo, no daemon.

``mount`` is ``add-repo`` with DIR's parent as the mount root and DIR's name as the repo
name, then a detached mount process; it returns once DIR is mounted. One interpreter:
the blobless clone runs while the FUSE side (``pyfuse3``, ``trio``) is imported, and the
mount process is forked from this one, not started as a second Python.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from artifactd.fs import process
from artifactd.fs.inputs import InputError, check_name
from artifactd.fs.mountprep import Prepared
from artifactd.fs.repos import add_repo
from artifactd.fs.state import RepoConfig, RootState

STOP_TIMEOUT = 30.0


def mount(remote: str, directory: str, branch: str) -> Path:
    target = Path(directory).absolute()
    check_name(target.name)
    if os.path.ismount(target):
        raise InputError(f"{target} is already mounted: run artifactd unmount {target} first")
    config = _clone_while_importing(target, remote, branch)
    state = RootState(target.parent)
    start = process.log_size(state, config.name)
    proc = process.fork(state, config, early=Prepared.start(state, config), detach=True)
    error = process.wait_ready(state, config, proc, start)
    if error:
        raise InputError(error)
    return target


def _clone_while_importing(target: Path, remote: str, branch: str) -> RepoConfig:
    """``add_repo`` (the clone is a git child) on a thread while this one imports the FUSE side."""
    result: list[RepoConfig] = []
    failure: list[BaseException] = []

    def clone() -> None:
        try:
            result.append(add_repo(target.name, remote, branch, str(target.parent)))
        except BaseException as exc:  # re-raised on the calling thread
            failure.append(exc)

    worker = threading.Thread(target=clone, name="add-repo")
    worker.start()
    try:
        from artifactd.fs import mountproc  # noqa: F401 - the import is the point: it overlaps the clone
    finally:
        worker.join()
    if failure:
        raise failure[0]
    return result[0]


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
