"""A node's cache of one repo on the ``s3`` backend: a bare repo brought to a catalog snapshot.

The cache holds the packs the repo lists (downloaded from the bucket, ``.pack`` before
``.idx``: git only sees a pack through its index, so a half-downloaded pack is invisible),
``packed-refs`` written from SQL, no loose refs, and the generation it was brought to in
``artifactd-generation``. Anything here can be removed at any moment: a missing file or
directory only means the next request downloads again.

``refs_lock`` (an exclusive flock) orders the two writers of a cache's refs on this node: a
sync rewriting them from SQL, and a receive-pack between its SQL commit and its own ref
update (which checks the old value against the refs on disk).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from artifactd.storage.forklink import write_packed_refs
from artifactd.storage.objectstore import ObjectMissing, ObjectStore
from artifactd.storage.repostore import flock_busy
from artifactd.storage.s3store.catalog import Pack, Snapshot, pack_keys

GENERATION_FILE = "artifactd-generation"
REFS_LOCK = "artifactd-refs.flock"


class PackMissing(Exception):
    """A pack the catalog lists is not in the bucket."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@contextlib.contextmanager
def refs_lock(git_dir: Path) -> Iterator[int]:
    fd = open_refs_lock(git_dir)
    try:
        yield fd
    finally:
        os.close(fd)


def open_refs_lock(git_dir: Path) -> int:
    """The cache's refs lock, held exclusively until the descriptor is closed."""
    fd = os.open(git_dir / REFS_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_busy(git_dir: Path, name: str) -> bool:
    """Whether some process holds the flock of ``git_dir/name`` (a push, a sync)."""
    try:
        return flock_busy(os.open(git_dir / name, os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False


def local_generation(git_dir: Path) -> int:
    try:
        return int((git_dir / GENERATION_FILE).read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def pack_file(git_dir: Path, name: str, suffix: str) -> Path:
    return git_dir / "objects" / "pack" / f"pack-{name}{suffix}"


def download_packs(git_dir: Path, packs: tuple[Pack, ...], store: ObjectStore,
                   replaced: frozenset[str] = frozenset()) -> int:
    """Fetch the packs the cache lacks, except ``replaced`` ones (a repack running here holds
    their objects in a pack of its own); returns the bytes downloaded."""
    pack_dir = git_dir / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    fetched = 0
    for pack in packs:
        index = pack_file(git_dir, pack.name, ".idx")
        if pack.name in replaced or index.is_file():
            continue
        data_key, index_key = pack_keys(pack.name)
        try:
            fetched += store.get_file(data_key, pack_file(git_dir, pack.name, ".pack"))
            fetched += store.get_file(index_key, index)
        except ObjectMissing:
            raise PackMissing(pack.name) from None
    return fetched


def write_refs(git_dir: Path, refs: tuple[tuple[str, str], ...]) -> None:
    """Make the cache's refs exactly ``refs``: ``packed-refs`` rewritten, loose refs removed
    (receive-pack writes loose ones; SQL says what they are now)."""
    write_packed_refs(git_dir, refs)
    for dirpath, _dirs, files in os.walk(git_dir / "refs"):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, name))


def set_generation(git_dir: Path, generation: int) -> None:
    tmp = git_dir / f"{GENERATION_FILE}.{secrets.token_hex(4)}"
    tmp.write_text(f"{generation}\n")
    os.replace(tmp, git_dir / GENERATION_FILE)


def bring_current(git_dir: Path, snapshot: Snapshot, store: ObjectStore,
                  replaced: frozenset[str] = frozenset()) -> int:
    """Packs, then refs, then the generation (call with ``refs_lock`` held)."""
    fetched = download_packs(git_dir, snapshot.packs, store, replaced)
    write_refs(git_dir, snapshot.refs)
    set_generation(git_dir, snapshot.generation)
    return fetched


def mark_used(git_dir: Path) -> None:
    """The repo's place in the LRU order is its generation file's mtime."""
    with contextlib.suppress(FileNotFoundError):
        os.utime(git_dir / GENERATION_FILE)


def last_used(git_dir: Path) -> float:
    for name in (GENERATION_FILE, "HEAD"):
        with contextlib.suppress(FileNotFoundError):
            return (git_dir / name).stat().st_mtime
    return time.time()


def cache_bytes(git_dir: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(git_dir):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
