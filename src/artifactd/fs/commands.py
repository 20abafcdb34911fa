"""The `artifact-fs` commands (click). `cli.main` hands add-repo to a running daemon without loading them."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import click

from artifactd.fs import daemonctl
from artifactd.fs.inputs import (
    DEFAULT_CREDENTIAL_TTL,
    InputError,
    check_branch,
    check_mount_root,
    check_name,
    parse_remote,
)
from artifactd.fs.repos import clone_job, forget, plan_repo, record, register, remove_repo, store_then
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.write import control
from artifactd.fs.write.options import DEFAULT_POLL_INTERVAL, MountOptions

if TYPE_CHECKING:  # the mount side (ctypes, http.client, threads) loads only for `daemon` and `status`
    from artifactd.fs import process
    from artifactd.fs.mountprep import Prepared
    from artifactd.fs.rootfirst import EarlyRoot

ROOT_HELP = "The mount root given to add-repo (--mount-root). [env: ARTIFACT_FS_ROOT; default /tmp]"
STOP_TIMEOUT = 30.0


def _root(text: str) -> Path:
    try:
        return check_mount_root(text)
    except InputError as exc:
        raise click.UsageError(str(exc).replace("--mount-root", "--root")) from None


def _fail(message: str) -> NoReturn:
    click.echo(f"artifact-fs: {message}", err=True)
    sys.exit(1)


def _blobs(state: RootState) -> Path:
    """The host's blob cache folder (``ARTIFACT_FS_CACHE_DIR``), shared by every root."""
    try:
        return state.blobs
    except InputError as exc:
        _fail(str(exc))


DEFAULT_ROOT = "/tmp"  # noqa: S108 - the guide's mount root; the state inside it is mode 0700
root_option = click.option("--root", default=lambda: os.environ.get("ARTIFACT_FS_ROOT", DEFAULT_ROOT),
                           show_default=DEFAULT_ROOT, help=ROOT_HELP)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ArtifactFS: mount a git branch as a lazy filesystem (blobless clone + FUSE)."""


@main.command("add-repo")
@click.option("--name", required=True, help="Directory name of the mount under --mount-root.")
@click.option("--remote", required=True, help="http(s) git URL; credentials in it go to git's "
              "in-memory credential cache, never to disk.")
@click.option("--branch", default="main", show_default=True)
@click.option("--mount-root", required=True, help="Existing directory; the repo mounts at MOUNT_ROOT/NAME.")
@click.option("--credential-ttl", type=click.IntRange(1), default=DEFAULT_CREDENTIAL_TTL, show_default=True,
              help="Seconds the credential cache keeps the token.")
def add_repo_command(name: str, remote: str, branch: str, mount_root: str, credential_ttl: int) -> None:
    """Register REMOTE's BRANCH for `artifact-fs daemon` (a blobless clone, behind its mount).

    If a daemon already runs for MOUNT_ROOT, it mounts the repo at once; else the repo is
    recorded (the remote, the token and the branch checked) and `artifact-fs daemon` mounts
    it from its root while the clone runs behind the mount."""
    try:
        check_name(name)
        check_branch(branch)
        url = parse_remote(remote).url
        state = RootState(check_mount_root(mount_root))
        answer = daemonctl.ask(state, {"op": "add-repo", "name": name, "remote": remote, "branch": branch,
                                       "credential_ttl": credential_ttl})
        if answer is None:  # no daemon: recorded, the mount (and the clone behind it) by `daemon`
            config, _ = register(name, remote, branch, mount_root, credential_ttl)
            click.echo(f"added {config.name}: {config.remote} {config.branch} -> {config.mount_point}")
            return
    except (InputError, control.ControlError) as exc:
        _fail(str(exc))
    if not answer.get("ok"):
        _fail(str(answer.get("error")))
    click.echo(f"added {name}: {url} {branch} -> {answer['mount_point']} (mounted by the running daemon)")


@main.command("remove-repo")
@click.option("--name", required=True)
@root_option
def remove_repo_command(name: str, root: str) -> None:
    """Forget a repo: its clone, its cached credentials and its (empty) mount point."""
    try:
        remove_repo(_root(root), name)
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"removed {name}")


@main.command("list-repos")
@root_option
def list_repos(root: str) -> None:
    """The repos added under ROOT, one per line: name, branch, remote, mount point."""
    for config in RootState(_root(root)).repos():
        click.echo(f"{config.name}\t{config.branch}\t{config.remote}\t{config.mount_point}")


@main.command()
@root_option
def status(root: str) -> None:
    """Each repo's mount state and the blob cache's size."""
    from artifactd.fs import process

    state = RootState(_root(root))
    for config in state.repos():
        pid = process.running_pid(state, config.name)
        mounted = os.path.ismount(config.mount_point)
        what = f"mounted (pid {pid})" if mounted and pid else ("mounted" if mounted else "not mounted")
        click.echo(f"{config.name}\t{what}\t{config.mount_point}{_branch_state(state, config.name)}")
    blobs = _blobs(state)
    if blobs.is_dir():
        from artifactd.fs import hostcache
        found = hostcache.scan(blobs)
        click.echo(f"blob cache: {len(found)} blobs, {sum(size for _, _, size in found)} bytes in {blobs}")


def _branch_state(state: RootState, name: str) -> str:
    """The write and refresh state a running mount reports: tab-separated, empty if none."""
    try:
        answer = control.ask(state.control_socket(name), {"op": "status"}, timeout=10)
    except (control.ControlError, OSError):
        from artifactd.fs.write.overlay import replay
        changes = len(replay(state.overlay_dir(name) / "journal"))
        return f"\t{changes} uncommitted changes in the overlay" if changes else ""
    parts = [f"head {answer['head'][:12]}", f"{answer['changes']} changes" if answer["changes"] else "clean"]
    if answer["diverged"]:
        parts.append(f"remote {answer['branch']} was rewritten (now {answer['remote_head'][:12]}): "
                     "not followed")
    elif answer["behind"]:
        parts.append(f"behind the remote (now {answer['remote_head'][:12]})")
    if answer["refresh_error"]:
        parts.append(f"refresh failed {answer['refresh_failures']} times, retrying: "
                     f"{answer['refresh_error']}")
    return "\t" + "\t".join(parts)


def _ask(root: str, name: str, request: dict[str, object]) -> dict[str, object]:
    try:
        check_name(name)
        return control.ask(RootState(_root(root)).control_socket(name), request)
    except (InputError, control.ControlError, OSError) as exc:
        _fail(f"{name}: {exc}")
    raise AssertionError("unreachable")


@main.command()
@click.argument("name")
@click.option("-m", "--message", required=True, help="The commit message.")
@root_option
def commit(name: str, message: str, root: str) -> None:
    """Commit NAME's overlay to its branch and push it (compare-and-swap on the head shown).

    If the branch moved on the remote, the commit is pushed to a side branch instead and
    the overlay is kept."""
    answer = _ask(root, name, {"op": "commit", "message": message})
    if not answer["ok"]:
        _fail(f"{name}: commit failed: {answer['error']}")
    click.echo(str(answer["message"]))
    if answer.get("side_branch"):
        sys.exit(2)


@main.command()
@click.argument("name")
@root_option
def refresh(name: str, root: str) -> None:
    """Check NAME's branch on the remote now (a clean mount follows a fast-forward)."""
    answer = _ask(root, name, {"op": "refresh"})
    if not answer["ok"]:
        _fail(f"{name}: {answer['error']}")
    click.echo(f"{name}: head {str(answer['head'])[:12]}, remote {str(answer['remote_head'])[:12]}")


@main.command("evict-cache")
@root_option
@click.option("--max-bytes", type=click.IntRange(0), default=0, show_default=True,
              help="Keep at most this many bytes (least recently used go first).")
def evict_cache(root: str, max_bytes: int) -> None:
    """Shrink the blob cache; mounts fetch evicted blobs again when read."""
    blobs = _blobs(RootState(_root(root)))
    from artifactd.fs.blobcache import BlobCache  # not for add-repo's client: ~10 ms of imports
    freed = BlobCache(blobs, 1 << 62).evict(max_bytes) if blobs.is_dir() else 0
    click.echo(f"freed {freed} bytes")


def _mount_options(poll_interval: float, autocommit: str) -> MountOptions:
    if autocommit in ("off", "unmount"):
        return MountOptions(poll_interval, 0.0, autocommit == "unmount")
    try:
        seconds = float(autocommit)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise click.BadParameter("use off, unmount or a number of seconds above 0", param_hint="--autocommit")
    return MountOptions(poll_interval, seconds, False)


@main.command("prefetch")
@click.option("--name", required=True, help="The repo (see list-repos).")
@root_option
@click.argument("paths", nargs=-1)
def prefetch_command(name: str, root: str, paths: tuple[str, ...]) -> None:
    """Fetch PATHS (files or directories of the branch; all of it when none) into the blob
    cache, in batches, whether the repo is mounted or not."""
    from artifactd.fs import cachecmd  # trio and the fetch code: not for every command

    state = RootState(_root(root))
    try:
        from artifactd.fs.blobcache import BlobCache
        done = cachecmd.prefetch(state, name, paths, BlobCache(_blobs(state), 1 << 62))
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"prefetched {done.blobs} blobs ({done.bytes} bytes) in {done.requests} requests")


@main.command()
@root_option
def gc(root: str) -> None:
    """Remove cached blobs that no added repo's branch has, and leftovers of interrupted writes."""
    from artifactd.fs import cachecmd

    state = RootState(_root(root))
    if not _blobs(state).is_dir():
        click.echo("removed 0 files (0 bytes)")
        return
    try:
        removed, freed = cachecmd.gc(state, state.host)
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"removed {removed} files ({freed} bytes)")


def _start_mount(state: RootState, config: RepoConfig, cache_bytes: int | None, options: MountOptions,
                 early: Prepared | None, children: list[tuple[str, process.Forked]],
                 clone: Callable[[], object] | None = None, given: EarlyRoot | None = None) -> str | None:
    """Fork ``config``'s mount and wait until it is mounted; its one-line error if it fails.
    ``clone``: the clone still to run, behind the mount (root first, ``rootview.py``)."""
    from artifactd.fs import process

    start = process.log_size(state, config.name)
    proc = process.fork(state, config, cache_bytes, options, early, clone=clone, given=given)
    error = process.wait_ready(state, config, proc, start)
    if error:
        return process.plain_error(error, config.name)
    click.echo(f"mounted {config.name} at {config.mount_point}", err=True)
    children.append((config.name, proc))
    return None


def _add_to_daemon(state: RootState, request: dict[str, object], cache_bytes: int | None,
                   options: MountOptions, children: list[tuple[str, process.Forked]]) -> dict[str, object]:
    """``add-repo`` sent by a client: clone, then mount it from this daemon."""
    from artifactd.fs.mountprep import Prepared

    name, remote, branch, ttl = (request.get(key) for key in ("name", "remote", "branch", "credential_ttl"))
    if request.get("op") != "add-repo" or not all(isinstance(v, str) for v in (name, remote, branch)) \
            or not isinstance(ttl, int):
        return {"ok": False, "error": "not an add-repo request"}
    assert isinstance(name, str) and isinstance(remote, str) and isinstance(branch, str)
    started = time.monotonic()
    given: EarlyRoot | None = None
    try:
        check_name(name)
        check_branch(branch)
        parsed = parse_remote(remote)
        mounted = os.path.ismount(state.root / name)
        if not state.git_dir(name).is_dir() and not mounted:  # a new repo: mounted root first
            # The root read (two round trips, or three) runs while plan_repo checks and
            # records; the credentials go to git's cache (a git process) in the mount
            # process, before its clone: neither is on the way to the first ls.
            from artifactd.fs.rootfirst import EarlyRoot  # the root read: http.client, ssl
            given = EarlyRoot(parsed.url, parsed.auth, branch)
        config, clone = plan_repo(name, remote, branch, str(state.root), ttl, store=given is None)
        if given is not None and clone is not None:
            clone = store_then(state, remote, ttl, clone)
    except (InputError, OSError) as exc:  # the daemon stays up for its other mounts
        if given is not None:
            given.wait()
            given.remote.close()
        return {"ok": False, "error": str(exc)}
    planned = time.monotonic()
    answer: dict[str, object] = {"ok": True, "name": config.name, "remote": config.remote,
                                 "branch": config.branch, "mount_point": config.mount_point}
    if mounted:  # added again (a new token), its clone landed or not: the mount asks the cache
        return answer
    if clone is not None:  # a new repo: mounted from its root while the clone runs behind it
        record(config)
        if given is None:  # its clone was removed between the two checks
            from artifactd.fs.rootfirst import EarlyRoot
            given = EarlyRoot(config.remote, parsed.auth, config.branch)
        error = _start_mount(state, config, cache_bytes, options, None, children, clone, given)
        if error and not state.git_dir(config.name).is_dir():
            forget(config)
        # Each step of a hand-off, for the daemon's log (docs/benchmarks.md's mount-time rows).
        forked = children[-1][1].forked_at - started if children and children[-1][0] == config.name else 0.0
        click.echo(f"hand-off {config.name}: planned {planned - started:.3f} s, root read "
                   f"{given.seconds:.3f} s (alongside), forked {forked:.3f} s, mounted "
                   f"{time.monotonic() - started:.3f} s after the request", err=True)
        return {"ok": False, "error": error} if error else answer
    elif given is not None:  # cloned meanwhile by another command: mounted from the clone
        given.wait()
        given.remote.close()
        store_then(state, remote, ttl, lambda: None)()  # the clone's mount asks git's cache
    error = _start_mount(state, config, cache_bytes, options, Prepared.start(state, config), children)
    return {"ok": False, "error": error} if error else answer


@main.command()
@root_option
@click.option("--cache-bytes", type=click.IntRange(1 << 20), default=None,
              help="Bound of the blob cache (default 2 GiB).")
@click.option("--poll-interval", type=click.FloatRange(0), default=DEFAULT_POLL_INTERVAL, show_default=True,
              help="Seconds between checks of each branch on the remote (a clean mount follows "
              "fast-forwards); 0: only on `artifact-fs refresh`.")
@click.option("--autocommit", default="off", show_default=True, metavar="off|unmount|SECONDS",
              help="Commit and push each overlay on unmount, or every SECONDS.")
def daemon(root: str, cache_bytes: int | None, poll_interval: float, autocommit: str) -> None:
    """Mount every repo added under ROOT; unmount them all on SIGTERM or Ctrl-C."""
    from artifactd.fs.mountprep import Prepared

    options = _mount_options(poll_interval, autocommit)
    state = RootState(_root(root))
    configs = [c for c in state.repos() if not os.path.ismount(c.mount_point)]
    if not configs:
        _fail(f"nothing to mount under {state.root}: run artifact-fs add-repo first")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Each clone's reading and the remote's answers run while the FUSE side is imported;
    # a repo add-repo recorded without its clone has its root read instead: it is mounted
    # root first, its clone behind the mount (the guide's flow: add-repo, then daemon).
    from artifactd.fs import credentials
    from artifactd.fs.rootfirst import EarlyRoot

    socket = state.credential_socket
    roots = {config.name: EarlyRoot(config.remote, None, config.branch,
                                    functools.partial(credentials.fill, socket, config.remote))
             for config in configs if not state.git_dir(config.name).is_dir()}
    early = {config.name: Prepared.start(state, config) for config in configs if config.name not in roots}
    children: list[tuple[str, process.Forked]] = []
    for config in configs:
        if config.name in roots:
            error = _start_mount(state, config, cache_bytes, options, None, children,
                                 clone_job(state, config), roots.pop(config.name))
        else:
            error = _start_mount(state, config, cache_bytes, options, early.pop(config.name), children)
        if error:
            click.echo(f"artifact-fs: {error}", err=True)
    if not children:
        sys.exit(1)

    def handle(request: dict[str, object]) -> dict[str, object]:
        return _add_to_daemon(state, request, cache_bytes, options, children)

    server = daemonctl.listen(state)
    try:
        while not stop.is_set() and any(proc.poll() is None for _, proc in children):
            if server is None:  # another daemon of this root answers add-repo
                stop.wait(0.2)
            else:
                daemonctl.serve_one(server, 0.2, handle)
    finally:
        daemonctl.close(state, server)
    for _, proc in children:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            click.echo(f"artifact-fs: {name}: killed after {STOP_TIMEOUT:.0f} s", err=True)
