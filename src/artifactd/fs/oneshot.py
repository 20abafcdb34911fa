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
from artifactd.fs.inputs import DEFAULT_CREDENTIAL_TTL, InputError, check_branch, check_name, parse_remote
from artifactd.fs.mountprep import Prepared
from artifactd.fs.repos import forget, plan_repo, record, store_then
from artifactd.fs.state import RootState

STOP_TIMEOUT = 30.0


def mount(remote: str, directory: str, branch: str) -> Path:
    target = Path(directory).absolute()
    check_name(target.name)
    if os.path.ismount(target):
        raise InputError(f"{target} is already mounted: run artifactd unmount {target} first")
    state = RootState(target.parent)
    given = None
    if target.parent.is_dir() and not state.git_dir(target.name).is_dir():
        # A new repo, mounted from its root while the clone runs behind it. The root read
        # and the FUSE side's import (0.1 s of CPU) run at once: each is on the critical path.
        check_branch(branch)
        parsed = parse_remote(remote)
        given = rootfirst.EarlyRoot(parsed.url, parsed.auth, branch)
    try:
        # With the root read running, the credentials go to git's cache (a git process) in
        # the mount process, before its clone: not on the way to the first ls.
        config, clone = plan_repo(target.name, remote, branch, str(target.parent), store=given is None)
        if given is not None:
            from artifactd.fs import mountproc  # the import is the point: it overlaps the root read
    except BaseException:
        if given is not None:
            given.wait()
            given.remote.close()
        raise
    if clone is not None and given is not None:
        clone = store_then(state, remote, DEFAULT_CREDENTIAL_TTL, clone)
    if clone is None:  # cloned before: read it while the FUSE side is imported
        if given is not None:  # cloned meanwhile by another command
            given.wait()
            given.remote.close()
            given = None
            store_then(state, remote, DEFAULT_CREDENTIAL_TTL, lambda: None)()  # its mount asks the cache
        early = Prepared.start(state, config)
        from artifactd.fs import mountproc  # noqa: F401 - the import is the point: it overlaps the reading
    else:
        early = None
        record(config)
        if given is None:  # its clone was removed between the two checks
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
