"""A consistent copy of one repository directory, taken while the server serves it.

The repo's push lock is held *exclusively* for the moment of the copy: receive-pack holds
it shared for the life of a push (``RepoStore.lock_push``), so no push is half-applied in
the snapshot (an atomic push's refs move together or not at all, as the client was told).
Pushes to that repo wait for the lock for the few milliseconds the copy takes; other
repos are not touched.

Inside the lock the refs are read before the objects: objects are always written before
a ref points at them (receive-pack, REST writes, imports), so every object a copied ref
reaches is already there when the objects are linked. Loose refs are copied before
``packed-refs``: ``pack-refs`` writes the packed file before deleting the loose ones,
so a ref being packed is found in one of the two. Objects are hard links (as a fork's
are, ``forklink``): git never changes an object file in place, so a link is a frozen copy
of it, taken in time independent of the repo's size. A repack replacing packs meanwhile
makes the link fail (``ObjectsMoved``) and the objects are linked again.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

from artifactd.storage.forklink import ObjectsMoved, link_objects
from artifactd.storage.repostore import RepoStore, open_push_lock

LINK_ATTEMPTS = 5  # a repack between two attempts is rare; five in a row means something is wrong
LOCK_POLL_S = 0.01
# Besides HEAD, packed-refs, refs/ and objects/, the one file of a repo directory that is
# state: an import's ``shallow``. Nothing else is taken (no ``config`` or ``hooks/``: git's
# settings come from the server, never from a repo's files; see repostore.SKELETON_DIRS).
EXTRA_FILES = ("shallow",)


class SnapshotBusy(Exception):
    """The repo's pushes did not leave it idle within the wait."""


def _copy_file(src: Path, dst: Path) -> bool:
    try:
        data = src.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return True


def _copy_refs(src: Path, dst: Path) -> None:
    """Every loose ref under ``src/refs`` (a ref deleted meanwhile is simply not there)."""
    for directory, _dirs, files in os.walk(src / "refs"):
        for name in files:
            if name.endswith(".lock"):
                continue  # a ref update in progress: its old value is the ref's file itself
            path = Path(directory) / name
            _copy_file(path, dst / path.relative_to(src))
    (dst / "refs").mkdir(exist_ok=True)


def _lock_exclusive(path: Path, timeout: float) -> int | None:
    """The push lock, exclusively, waiting up to ``timeout`` s for pushes in flight to end;
    None when the repo directory does not exist (never pushed to, or deleted)."""
    try:
        fd = open_push_lock(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    deadline = time.monotonic() + timeout
    # Polled rather than a blocking LOCK_EX, so the wait has an end: a repo pushed to
    # without pause would otherwise hold a blocking backup forever.
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise SnapshotBusy(f"pushes to {path.name} kept it busy for {timeout:.0f} s") from None
            time.sleep(LOCK_POLL_S)


def snapshot_repo(store: RepoStore, repo_id: str, staging: Path, *, lock_timeout: float = 300.0,
                  source: Path | None = None) -> bool:
    """Copy the repo into the empty directory ``staging``; False if it has no directory.

    ``source``: the directory to copy instead of the live one (a deleted repo's trash entry).
    """
    path = source or store.path(repo_id)
    fd = _lock_exclusive(path, lock_timeout)
    if fd is None:
        return False
    try:
        if not (path / "HEAD").is_file():
            return False
        _copy_refs(path, staging)
        _copy_file(path / "packed-refs", staging / "packed-refs")
        _copy_file(path / "HEAD", staging / "HEAD")
        for name in EXTRA_FILES:
            _copy_file(path / name, staging / name)
        for attempt in range(LINK_ATTEMPTS):
            objects = staging / "objects"
            shutil.rmtree(objects, ignore_errors=True)
            objects.mkdir()
            try:
                link_objects(path / "objects", objects)
                break
            except ObjectsMoved:
                if attempt == LINK_ATTEMPTS - 1:
                    raise
        return True
    finally:
        os.close(fd)
