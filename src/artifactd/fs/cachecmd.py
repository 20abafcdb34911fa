"""The cache commands: ``prefetch`` (fetch paths ahead, mounted or not) and ``gc``.

Both work on the host's blob cache (``hostcache``), which every mount shares and reads
from disk when its own index misses, so a blob a command puts there serves a running mount.
``evict-cache`` is ``BlobCache.evict``: least recently read first (mounts refresh a file's
mtime when they first read it).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import trio

from artifactd.fs import credentials, objectinfo
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.gitcmd import GitFailed, run_git
from artifactd.fs.hostcache import HostCache, Usage, scan
from artifactd.fs.hydrate import MAX_BATCH, Hydrator
from artifactd.fs.inputs import InputError
from artifactd.fs.repos import clone_job
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.tree import Entry, list_tree
from artifactd.fs.wire import Remote, WireError

STALE_TMP_SECONDS = 3600.0


@dataclass(frozen=True)
class Prefetched:
    blobs: int
    bytes: int
    requests: int


def branch_entries(state: RootState, config: RepoConfig) -> list[Entry]:
    git_dir = state.git_dir(config.name)
    if not git_dir.is_dir():
        clone_now(state, config)
    commit = run_git(["--git-dir", str(git_dir), "rev-parse", "--verify", "--end-of-options",
                      f"refs/heads/{config.branch}^{{commit}}"]).decode().strip()
    return list_tree(git_dir, commit)


def clone_now(state: RootState, config: RepoConfig) -> None:
    """The clone of a repo ``add-repo`` recorded with no daemon running (its first mount
    would have made it behind the mount): made here, as ``add-repo`` used to, unless a
    mount is making it right now."""
    if os.path.ismount(config.mount_point):
        raise InputError(f"{config.name} is being cloned behind its mount: run this again once "
                         f"git -C {config.mount_point} status answers")
    clone_job(state, config)()


def _selected(entries: list[Entry], paths: tuple[str, ...]) -> list[Entry]:
    wanted = []
    for text in paths:
        parts = text.strip("/").split("/")
        if text.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InputError(f"{text!r} is not a path inside the repo: give it relative to the repo's root")
    prefixes = [p.strip("/").encode() for p in paths]
    for entry in entries:
        if entry.kind == "blob" and (not prefixes or any(
                entry.path == p or entry.path.startswith(p + b"/") for p in prefixes)):
            wanted.append(entry)
    if paths and not wanted:
        raise InputError(f"no file of the branch is at or under {', '.join(paths)}")
    return wanted


def prefetch(state: RootState, name: str, paths: tuple[str, ...], cache: BlobCache) -> Prefetched:
    """Fetch the blobs at or under ``paths`` (the whole branch when empty) into the cache."""
    config = state.load(name)
    if config is None:
        raise InputError(f"no repo {name!r} under {state.root}: see artifact-fs list-repos")
    entries = _selected(branch_entries(state, config), paths)
    missing = list(dict.fromkeys(e.oid for e in entries if not cache.has(e.oid)))
    socket = state.credential_socket
    auth = credentials.fill(socket, config.remote)
    sizes: dict[str, int] = {}
    if missing:
        remote = Remote(config.remote, auth, objectinfo.TIMEOUT)
        try:
            if objectinfo.supported(remote):
                sizes = objectinfo.sizes(remote, missing)  # the large ones then go through git
        except (objectinfo.ObjectInfoError, WireError) as exc:
            raise InputError(f"cannot reach {config.remote}: {exc}") from None
        finally:
            remote.close()
    hydrator = Hydrator(state.git_dir(name), cache, set(), config.remote,
                        lambda: credentials.fill(socket, config.remote), sizes=sizes)
    try:
        for start in range(0, len(missing), MAX_BATCH):
            try:
                trio.run(hydrator._hydrate, missing[start:start + MAX_BATCH], 0)
            except (RuntimeError, OSError) as exc:
                raise InputError(f"fetching from {config.remote} failed: {exc}") from None
    finally:
        hydrator.close()
        cache.flush()
    fetched = [oid for oid in missing if cache.has(oid)]
    return Prefetched(len(fetched), sum(sizes.get(oid, 0) for oid in fetched), hydrator.fetches)


def gc(state: RootState, host: HostCache) -> tuple[int, int]:
    """Remove cached blobs that no added repo's branch has, and stale partial writes.

    The cache is the host's: the repos are those of every mount root registered with it
    (``state``'s among them), not only ``state``'s. Returns (files removed, bytes freed).
    A running mount that still had such a blob open keeps reading it (the file is
    unlinked, not changed); one that opens it again fetches it.
    """
    referenced: set[str] = set()
    others = [r for r in host.registered_roots() if r.absolute() != state.root.absolute()]
    roots = [state, *(RootState(r, host) for r in others)]
    for owner in roots:
        for config in owner.repos():
            try:
                referenced.update(e.oid for e in branch_entries(owner, config) if e.kind == "blob")
            except (GitFailed, InputError) as exc:
                raise InputError(f"cannot read the branch of {config.name} under {owner.root}: {exc}; "
                                 "nothing removed") from None
    removed = freed = 0
    now = time.time()
    with Usage(host.blobs).locked() as usage:  # no eviction nor count update meanwhile
        for sub in sorted(host.blobs.glob("??")):
            for item in sub.iterdir():
                info = item.stat()
                if item.name.endswith(".tmp"):
                    stale = now - info.st_mtime > STALE_TMP_SECONDS or not _alive(item.name)
                    if not stale:
                        continue
                elif sub.name + item.name in referenced:
                    continue
                item.unlink(missing_ok=True)
                removed += 1
                freed += info.st_size
        Usage.write(usage, sum(size for _, _, size in scan(host.blobs)))
    return removed, freed


def _alive(tmp_name: str) -> bool:
    """Whether the process that writes ``<oid>.<pid>[.<thread>].tmp`` still runs."""
    parts = tmp_name.split(".")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
