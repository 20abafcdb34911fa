"""``artifact-fs``: the guide's ``add-repo`` and ``daemon``, plus status and cache commands."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

from artifactd.fs import process
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.inputs import InputError, check_mount_root
from artifactd.fs.repos import DEFAULT_CREDENTIAL_TTL, add_repo, remove_repo
from artifactd.fs.state import RootState

ROOT_HELP = "The mount root given to add-repo (--mount-root). [env: ARTIFACT_FS_ROOT; default /tmp]"
STOP_TIMEOUT = 30.0


def _root(text: str) -> Path:
    try:
        return check_mount_root(text)
    except InputError as exc:
        raise click.UsageError(str(exc).replace("--mount-root", "--root")) from None


def _fail(message: str) -> None:
    click.echo(f"artifact-fs: {message}", err=True)
    sys.exit(1)


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
    """Clone REMOTE's BRANCH without blobs and register it for `artifact-fs daemon`."""
    try:
        config = add_repo(name, remote, branch, mount_root, credential_ttl)
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"added {config.name}: {config.remote} {config.branch} -> {config.mount_point}")


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
    state = RootState(_root(root))
    for config in state.repos():
        pid = process.running_pid(state, config.name)
        mounted = os.path.ismount(config.mount_point)
        what = f"mounted (pid {pid})" if mounted and pid else ("mounted" if mounted else "not mounted")
        click.echo(f"{config.name}\t{what}\t{config.mount_point}")
    if state.blobs.is_dir():
        cache = BlobCache(state.blobs, 1 << 62)
        click.echo(f"blob cache: {len(cache.used)} blobs, {cache.total} bytes")


@main.command("evict-cache")
@root_option
@click.option("--max-bytes", type=click.IntRange(0), default=0, show_default=True,
              help="Keep at most this many bytes (least recently used go first).")
def evict_cache(root: str, max_bytes: int) -> None:
    """Shrink the blob cache; mounts fetch evicted blobs again when read."""
    state = RootState(_root(root))
    freed = BlobCache(state.blobs, 1 << 62).evict(max_bytes) if state.blobs.is_dir() else 0
    click.echo(f"freed {freed} bytes")


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
        done = cachecmd.prefetch(state, name, paths, BlobCache(state.blobs, 1 << 62))
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"prefetched {done.blobs} blobs ({done.bytes} bytes) in {done.requests} requests")


@main.command()
@root_option
def gc(root: str) -> None:
    """Remove cached blobs that no added repo's branch has, and leftovers of interrupted writes."""
    from artifactd.fs import cachecmd

    state = RootState(_root(root))
    if not state.blobs.is_dir():
        click.echo("removed 0 files (0 bytes)")
        return
    try:
        removed, freed = cachecmd.gc(state, state.blobs)
    except InputError as exc:
        _fail(str(exc))
    click.echo(f"removed {removed} files ({freed} bytes)")


@main.command()
@root_option
@click.option("--cache-bytes", type=click.IntRange(1 << 20), default=None,
              help="Bound of the blob cache (default 2 GiB).")
def daemon(root: str, cache_bytes: int | None) -> None:
    """Mount every repo added under ROOT; unmount them all on SIGTERM or Ctrl-C."""
    state = RootState(_root(root))
    configs = [c for c in state.repos() if not os.path.ismount(c.mount_point)]
    if not configs:
        _fail(f"nothing to mount under {state.root}: run artifact-fs add-repo first")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: list[tuple[str, process.Forked]] = []
    for config in configs:
        start = process.log_size(state, config.name)
        proc = process.fork(state, config, cache_bytes)
        error = process.wait_ready(state, config, proc, start)
        if error:
            click.echo(f"artifact-fs: {error}", err=True)
            continue
        click.echo(f"mounted {config.name} at {config.mount_point}", err=True)
        children.append((config.name, proc))
    if not children:
        sys.exit(1)
    while not stop.is_set() and any(proc.poll() is None for _, proc in children):
        stop.wait(0.2)
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
