"""A backup kept under a prefix of an S3-compatible bucket (``backupstore.BackupStore``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from artifactd.storage.backupstore import (
    BackupMissing,
    BackupStoreError,
    WriteMismatch,
    check_name,
)
from artifactd.storage.objectstore import ObjectMissing, ObjectStore, ObjectStoreError


class BucketStore:
    """Names are keys under ``s3://bucket/prefix/``, through ``ObjectStore``."""

    def __init__(self, store: ObjectStore, description: str):
        self.store = store
        self.description = description

    def _guard(self, error: ObjectStoreError) -> BackupStoreError:
        return BackupStoreError(str(error) or type(error).__name__)

    def is_empty(self) -> bool:
        try:
            self.store.check()
            return next(iter(self.store.list("")), None) is None
        except ObjectStoreError as error:
            raise self._guard(error) from None

    def exists(self, name: str) -> bool:
        try:
            self.store.size(check_name(name))
            return True
        except ObjectMissing:
            return False
        except ObjectStoreError as error:
            raise self._guard(error) from None

    def put_file(self, name: str, path: Path, sha256: str, size: int) -> None:
        try:
            self.store.put_file(check_name(name), path)
            stored = self.store.size(name)
        except ObjectStoreError as error:
            raise self._guard(error) from None
        if stored != size:
            raise WriteMismatch(f"{name}: the bucket holds {stored} bytes, {size} were written")

    def flush(self) -> None:
        """Nothing to do: an object is durable once its PUT is answered."""

    def get_file(self, name: str, path: Path) -> None:
        try:
            self.store.get_file(check_name(name), path)
        except ObjectMissing:
            raise BackupMissing(name) from None
        except ObjectStoreError as error:
            raise self._guard(error) from None

    def remove_all(self) -> None:
        with contextlib.suppress(ObjectStoreError):
            for name, _size in list(self.store.list("")):
                self.store.delete(name)
