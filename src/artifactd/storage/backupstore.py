"""Where a backup is kept: a local directory or a prefix of an S3-compatible bucket.

Both sides speak in *names* (``manifest.json``, ``blobs/ab/<sha256>``) that the backup code
builds from checksums and fixed words only, never from user strings. Every write is
checked as it is made: a directory's file is read back and hashed, a bucket's object is
asked for its size. Writes into a directory go to a temporary name and are renamed into
place, so a crash never leaves a file that looks complete and is not.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

CHUNK = 1 << 20
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # no C library to load (not Linux): os.sync instead
    _LIBC = None
_NAME = re.compile(r"[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class BackupStoreError(Exception):
    """The place cannot be used (unreachable, refused, not a directory)."""


class BackupMissing(BackupStoreError):
    """No object of that name there."""


class WriteMismatch(BackupStoreError):
    """What was read back is not what was written."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or any(part in {".", ".."} for part in name.split("/")):
        raise ValueError(f"not a backup object name: {name!r}")
    return name


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


class BackupStore(Protocol):
    description: str

    def is_empty(self) -> bool: ...
    def exists(self, name: str) -> bool: ...
    def put_file(self, name: str, path: Path, sha256: str, size: int) -> None: ...
    def flush(self) -> None: ...
    def get_file(self, name: str, path: Path) -> None: ...
    def remove_all(self) -> None: ...


def _private_dirs(root: Path, directory: Path) -> None:
    """``directory`` and its parents up to ``root`` (included), each made 0700."""
    missing = []
    for parent in (directory, *directory.parents):
        if parent.is_dir():
            break
        missing.append(parent)
        if parent == root:
            break
    for parent in reversed(missing):
        parent.mkdir(mode=PRIVATE_DIR_MODE, parents=parent == root, exist_ok=True)


class DirectoryStore:
    """Names are paths under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.description = str(root)

    def is_empty(self) -> bool:
        if not self.root.exists():
            return True
        if not self.root.is_dir():
            raise BackupStoreError(f"{self.root} exists and is not a directory")
        return not any(self.root.iterdir())

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def put_file(self, name: str, path: Path, sha256: str, size: int) -> None:
        target = self._path(name)
        partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            _private_dirs(self.root, target.parent)
            # 0600 from the start: a backup holds what the database does (token hashes, the
            # cursor key, webhook secrets).
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
            shutil.copyfile(path, partial)
            # Verified as written: the bytes on the backup's disk are hashed again.
            if sha256_file(partial) != (sha256, size):
                raise WriteMismatch(f"{name}: the copy in {self.root} does not match its source")
            os.replace(partial, target)
        except OSError as exc:
            raise BackupStoreError(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            partial.unlink(missing_ok=True)

    def flush(self) -> None:
        """Make every file written so far durable: one ``syncfs`` of the backup's filesystem
        before the manifest, instead of an ``fsync`` per file (the cost of most of a backup
        of many small repos)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if _LIBC is not None and _LIBC.syncfs(fd) == 0:
                return
            os.sync()
        finally:
            os.close(fd)

    def get_file(self, name: str, path: Path) -> None:
        source = self._path(name)
        try:
            shutil.copyfile(source, path)
        except FileNotFoundError:
            raise BackupMissing(name) from None
        except OSError as exc:
            raise BackupStoreError(f"cannot read {source}: {exc.strerror or exc}") from None

    def remove_all(self) -> None:
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def open_store(location: str, *, endpoint_url: str | None = None, region: str | None = None) -> BackupStore:
    """A directory path, or ``s3://bucket/prefix`` (credentials from the AWS variables)."""
    if location.startswith("s3://"):
        parts = urlsplit(location)
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not _BUCKET.fullmatch(bucket):
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        if prefix and not _NAME.fullmatch(prefix):
            raise ValueError(f"not a usable key prefix: {prefix!r} (letters, digits, . _ - and /)")
        # Imported here: boto3 comes with the ``s3`` extra, which a directory backup needs not.
        from artifactd.storage.backupbucket import BucketStore
        from artifactd.storage.objectstore import ObjectStore, ObjectStoreConfig

        config = ObjectStoreConfig(
            endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL", ""),
            bucket=bucket, prefix=prefix,
            region=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
        )
        return BucketStore(ObjectStore(config), location)
    if "://" in location:
        raise ValueError(f"unsupported backup location {location!r}: a directory or s3://bucket/prefix")
    return DirectoryStore(Path(location).resolve())
