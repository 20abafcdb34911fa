"""``add-repo`` and ``remove-repo``: the blobless clone, its credentials and its config."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from artifactd.fs import credentials
from artifactd.fs.gitcmd import GitFailed, run_git
from artifactd.fs.inputs import (
    DEFAULT_CREDENTIAL_TTL,
    InputError,
    Remote,
    check_branch,
    check_mount_root,
    check_name,
    parse_remote,
)
from artifactd.fs.state import RepoConfig, RootState


def clone_settings(state: RootState) -> list[tuple[str, str]]:
    helper = credentials.helper_setting(state.credential_socket)
    return [("credential.helper", ""), ("credential.helper", helper), ("credential.useHttpPath", "true")]


# What the clone keeps in its own config: the credential helper (a socket path, no secret),
# and the stat checks the mount's index is written for (see index.py).
REPO_SETTINGS = (("core.checkStat", "minimal"), ("core.trustctime", "false"),
                 ("core.untrackedCache", "false"), ("core.fsmonitor", "false"), ("gc.auto", "0"),
                 ("maintenance.auto", "false"), ("credential.useHttpPath", "true"))


def _explain(exc: GitFailed, remote: Remote, branch: str) -> InputError:
    from artifactd.fs.remotecheck import missing_branch, no_repository, refused  # the same words

    text = str(exc)
    if "not found in upstream" in text or "Remote branch" in text:
        return missing_branch(remote.url, branch)
    if "Authentication failed" in text or "401" in text or "403" in text or "could not read Username" in text:
        return refused(remote.url)
    if "not found" in text or "404" in text:
        return no_repository(remote.url)
    return InputError(f"cannot clone {remote.url}: {text}")


def record(config: RepoConfig) -> None:
    """Keep ``config`` (and its mount point): the repo is added."""
    os.makedirs(config.mount_point, exist_ok=True)
    RootState(Path(config.mount_point).parent).save(config)


def forget(config: RepoConfig) -> None:
    """Undo ``record`` of a repo whose first mount failed before its clone was made."""
    RootState(Path(config.mount_point).parent).remove(config.name)
    with contextlib.suppress(OSError):
        os.rmdir(config.mount_point)


def plan_repo(name: str, remote_text: str, branch: str, mount_root: str,
              credential_ttl: int = DEFAULT_CREDENTIAL_TTL,
              *, store: bool = True) -> tuple[RepoConfig, Callable[[], None] | None]:
    """``add-repo`` checked and its credentials cached, and the clone still to run (``None``
    when the clone is there already: the repo is recorded then). A root-first mount runs
    the clone behind itself (``fs/rootview.py``); ``register`` (add-repo with no daemon)
    leaves it to the first mount. ``store=False``: the credentials are the caller's to
    hand to git's cache (``store_then``, or a thread alongside the remote's check)."""
    check_name(name)
    check_branch(branch)
    remote = parse_remote(remote_text)
    root = check_mount_root(mount_root)
    state = RootState(root)
    state.ensure()
    mount_point = root / name
    if mount_point.exists() and not mount_point.is_dir():
        raise InputError(f"{mount_point} exists and is not a directory: choose another --name")
    if remote.has_credentials and store:  # else the caller's (``store_then``)
        credentials.store(state.credential_socket, remote, credential_ttl)
    existing = state.load(name)
    if existing is not None and (existing.remote != remote.url or existing.branch != branch):
        raise InputError(f"repo {name!r} already exists with another remote or branch: "
                         "run artifact-fs remove-repo first")
    config = RepoConfig(name=name, remote=remote.url, branch=branch, mount_point=str(mount_point))
    if state.git_dir(name).is_dir():
        record(config)
        return config, None
    return config, clone_job(state, config)


def clone_job(state: RootState, config: RepoConfig) -> Callable[[], None]:
    """The blobless clone of ``config``, to run: its credentials are those in the root's
    credential cache (``plan_repo`` put them there), never an argument."""
    remote = Remote(url=config.remote, username="", password="")
    work = state.work_dir(config.name)
    branch = config.branch

    def clone() -> None:
        shutil.rmtree(work, ignore_errors=True)
        # The clone's own config in the same command (one git process, not ten): the
        # credential helper (a socket path, no secret) and REPO_SETTINGS.
        configs = [f"credential.helper={value}" for key, value in clone_settings(state)
                   if key == "credential.helper"]
        configs += [f"{key}={value}" for key, value in REPO_SETTINGS]
        try:
            run_git(["clone", "--quiet", "--filter=blob:none", "--no-checkout", "--single-branch",
                     *[arg for config in configs for arg in ("--config", config)],
                     "--branch", branch, "--", remote.url, str(work)], settings=clone_settings(state))
        except GitFailed as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise _explain(exc, remote, branch) from None
        except subprocess.TimeoutExpired:
            shutil.rmtree(work, ignore_errors=True)
            raise InputError(f"cloning {remote.url} timed out: check the remote") from None

    return clone


def store_then(state: RootState, remote_text: str, credential_ttl: int,
               clone: Callable[[], None]) -> Callable[[], None]:
    """``clone`` after the credentials of ``remote_text`` went to git's cache: for a mount
    that reads its root with the credentials it was given, so that the cache's ``git``
    process runs behind the mount, not on the way to it."""
    remote = parse_remote(remote_text)

    def stored_then_cloned() -> None:
        if remote.has_credentials:
            credentials.store(state.credential_socket, remote, credential_ttl)
        clone()

    return stored_then_cloned


def register(name: str, remote_text: str, branch: str, mount_root: str,
             credential_ttl: int = DEFAULT_CREDENTIAL_TTL) -> tuple[RepoConfig, bool]:
    """``add-repo`` with no daemon running: the repo checked, its credentials cached and
    recorded, and whether it was cloned now. The clone is left to the mount (the daemon
    mounts a repo without one root first and clones behind the mount, ``rootview.py``)
    once one ``ls-refs`` has shown the remote, the token and the branch good, which is
    what the clone would have found wrong; a remote that cannot be asked that way (no
    protocol v2 over POST) is cloned now, as before."""
    config, clone = plan_repo(name, remote_text, branch, mount_root, credential_ttl, store=False)
    remote = parse_remote(remote_text)
    state = RootState(Path(config.mount_point).parent)
    # The token goes to git's cache (a git process, which starts the cache's daemon the
    # first time) while the remote is asked: both are on the way to the guide's first ls.
    # (a thread, not concurrent.futures: that import costs more than the overlap saves)
    failed: list[BaseException] = []

    def store() -> None:
        try:
            credentials.store(state.credential_socket, remote, credential_ttl)
        except BaseException as exc:  # raised on the caller's thread, below
            failed.append(exc)

    storing = threading.Thread(target=store, name="credentials")
    if remote.has_credentials:
        storing.start()
    cloned = False
    try:
        if clone is not None:
            from artifactd.fs import remotecheck  # http.client: not for a repo cloned already

            if not remotecheck.branch_exists(remote, branch):
                _stored(storing, failed)  # the clone asks the cache
                clone()
                cloned = True
    finally:
        _stored(storing, failed)
    if clone is not None:
        record(config)
    return config, cloned


def _stored(storing: threading.Thread, failed: list[BaseException]) -> None:
    if storing.ident is not None:
        storing.join()
    if failed:
        raise failed[0]


def remove_repo(root: Path, name: str) -> None:
    check_name(name)
    state = RootState(root)
    config = state.load(name)
    if config is None:
        raise InputError(f"no repo {name!r} under {root}: see artifact-fs list-repos")
    if os.path.ismount(config.mount_point):
        raise InputError(f"{config.mount_point} is mounted: stop the daemon or run "
                         f"artifactd unmount {config.mount_point} first")
    overlay = state.overlay_dir(name)
    journal = overlay / "journal"
    if journal.exists() and journal.stat().st_size:
        raise InputError(f"{name} has uncommitted changes in {overlay}: mount it and run artifact-fs "
                         f"commit {name}, or delete that directory to discard them")
    credentials.erase(state.credential_socket, config.remote)
    shutil.rmtree(overlay, ignore_errors=True)
    shutil.rmtree(state.work_dir(name), ignore_errors=True)
    state.remove(name)
    if not state.repos():
        credentials.stop(state.credential_socket)
    mount_point = Path(config.mount_point)
    if mount_point.is_dir() and not any(mount_point.iterdir()):
        mount_point.rmdir()
