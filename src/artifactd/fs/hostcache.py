"""The host's blob cache: one folder shared by every mount root and every mount of the user.

    $ARTIFACT_FS_CACHE_DIR (default $XDG_CACHE_HOME/artifact-fs, else ~/.cache/artifact-fs)
        blobs/ab/cdef...   the blobs by object id (``blobcache``): a fork reads its
                           baseline's bytes, whichever root either is mounted under
        blobs.usage        the bytes in blobs/, as every process that writes there counts
                           them (under ``flock``): the limit holds across all mounts
        roots/<hash>       the path of each mount root that uses the cache (``gc`` keeps
                           the blobs of every registered root's branches)

Two daemons may write at once: a blob goes to a temporary name and is renamed into place
(the same bytes, whoever wins), and the usage counter and every eviction take an
exclusive ``flock`` on ``blobs.usage``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from artifactd.fs.inputs import InputError

CACHE_DIR_ENV = "ARTIFACT_FS_CACHE_DIR"


def cache_dir() -> Path:
    """The host cache's folder: ``ARTIFACT_FS_CACHE_DIR``, else the user's cache dir."""
    explicit = os.environ.get(CACHE_DIR_ENV, "")
    if explicit:
        path = Path(explicit).absolute()
    else:
        base = os.environ.get("XDG_CACHE_HOME", "")
        path = (Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache") / "artifact-fs"
    if path.exists() and not path.is_dir():
        raise InputError(f"the blob cache {path} is not a directory: set {CACHE_DIR_ENV} to a directory")
    return path


class HostCache:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder if folder is not None else cache_dir()

    @property
    def blobs(self) -> Path:
        return self.folder / "blobs"

    @property
    def roots(self) -> Path:
        return self.folder / "roots"

    def ensure(self) -> None:
        for path in (self.folder, self.blobs, self.roots):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def register(self, root: Path) -> None:
        """Record that ``root``'s repos read from this cache (for ``gc``)."""
        text = str(root.absolute())
        entry = self.roots / hashlib.sha256(text.encode()).hexdigest()[:32]
        if not entry.exists():
            tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
            tmp.write_text(text + "\n")
            tmp.replace(entry)

    def registered_roots(self) -> list[Path]:
        """The mount roots using this cache that still exist (the others are forgotten)."""
        found = []
        if not self.roots.is_dir():
            return []
        for entry in sorted(self.roots.iterdir()):
            if entry.name.endswith(".tmp"):
                continue
            root = Path(entry.read_text().strip())
            if (root / ".artifact-fs" / "repos").is_dir():
                found.append(root)
            else:
                entry.unlink(missing_ok=True)
        return found


def usage_file(blobs: Path) -> Path:
    return blobs.with_name(f"{blobs.name}.usage")


def scan(blobs: Path) -> list[tuple[float, str, int]]:
    """(mtime, oid, size) of every blob file on disk (not the partial writes)."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for sub in os.scandir(blobs):
            if len(sub.name) != 2 or not sub.is_dir():
                continue
            for item in os.scandir(sub.path):
                if len(item.name) == 38:
                    with contextlib.suppress(FileNotFoundError):
                        info = item.stat()
                        found.append((info.st_mtime, sub.name + item.name, info.st_size))
    return found


class Usage:
    """The shared byte count of a blob folder, in ``<folder>.usage``, under ``flock``."""

    def __init__(self, blobs: Path) -> None:
        self.blobs = blobs
        self.path = usage_file(blobs)

    @contextlib.contextmanager
    def locked(self) -> Iterator[int]:
        """The file's descriptor, held under an exclusive lock."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def read(fd: int) -> int | None:
        text = os.pread(fd, 32, 0).strip()
        return int(text) if text.isdigit() else None

    @staticmethod
    def write(fd: int, total: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % max(0, total), 0)

    def add(self, delta: int) -> int:
        """Count ``delta`` more bytes; returns the new total (counted afresh the first time)."""
        with self.locked() as fd:
            total = self.read(fd)
            total = sum(size for _, _, size in scan(self.blobs)) if total is None else total + delta
            self.write(fd, total)
            return total
