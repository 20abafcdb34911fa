"""``artifactd backup``: a consistent snapshot of a running deployment.

1. The metadata: every table read in one snapshot transaction (``storage.tabledump``) at an
   instant T. The repos to copy are the rows of that snapshot.
2. Each repo, one at a time, under its push lock (``storage.reposnapshot``): refs, then
   hard links to its objects, in a work area of the data dir; then each file is hashed
   and written to the destination, verified, and the work area dropped.
3. The index, then the manifest, last: a backup is complete exactly when it has one.

What this guarantees: a push acknowledged before the backup began is in it (its refs were
on disk before T, the repo is copied after T); a push landing during the backup is in it
or not, never half (the push lock). The repo copies are a little *newer* than the
metadata (a push between T and its repo's copy); restore measures every repo's size from
the restored disk, so limits stay exact. A repo created after T is not in the backup; one
deleted after T is copied from the trash while it is still there.

Backend ``s3`` (repo store in the bucket): the metadata snapshot then also holds every
repo's refs and pack list (the ``s3_*`` tables), so step 2 copies instead the bucket's pack
objects (data and index) that the snapshot's ``s3_repo_packs`` rows name, each pack once
however many forks list it. The snapshot is one transaction, so its refs only point into
packs it lists; a pack stays in the bucket while listed and for the grace period after
(``gc_grace_seconds``), so every pack the snapshot lists can still be read. A push that
commits after T is not in the backup at all, neither its refs nor its pack.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from artifactd import __version__
from artifactd.errors import Code
from artifactd.services.backend import Backend
from artifactd.services.backup.manifest import (
    INDEX,
    MANIFEST,
    REPO_STORE_LOCAL,
    REPO_STORE_S3,
    BackupError,
    FileEntry,
    Manifest,
    blob_name,
    pack_path,
    repo_path,
    table_path,
)
from artifactd.services.clock import iso, now_us
from artifactd.storage import tabledump
from artifactd.storage.backupstore import BackupStore, BackupStoreError, sha256_file
from artifactd.storage.reposnapshot import SnapshotBusy, snapshot_repo

if TYPE_CHECKING:
    from artifactd.storage.objectstore import ObjectStore

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BackupSummary:
    location: str
    schema_revision: str
    tables: dict[str, int]
    repos: int
    files: int
    bytes: int
    stored_bytes: int  # after content addressing: a pack shared by forks is stored once


@dataclass
class _BlobWriter:
    """Writes each distinct content once; remembers inodes so shared links are hashed once.

    Only object files are remembered by inode (``by_inode=True``), and their links are kept
    in the work area until the backup ends: an inode still linked cannot be reused for
    another file, so the same inode is the same bytes for the whole backup.
    """

    store: BackupStore
    entries: list[FileEntry] = field(default_factory=list)
    written: set[str] = field(default_factory=set)
    by_inode: dict[tuple[int, int, int], str] = field(default_factory=dict)
    stored_bytes: int = 0

    def add(self, path: Path, logical: str, *, by_inode: bool = False) -> FileEntry:
        stat = os.stat(path)
        inode = (stat.st_dev, stat.st_ino, stat.st_size)
        sha = self.by_inode.get(inode) if by_inode else None
        if sha is None:
            sha, size = sha256_file(path)
            if by_inode:
                self.by_inode[inode] = sha
        else:
            size = stat.st_size
        if sha not in self.written:
            self.store.put_file(blob_name(sha), path, sha, size)
            self.written.add(sha)
            self.stored_bytes += size
        entry = FileEntry(logical, sha, size)
        self.entries.append(entry)
        return entry


def _files(root: Path) -> Iterator[tuple[Path, str]]:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory) / name
            yield path, path.relative_to(root).as_posix()


def _deleted_copy(backend: Backend, repo_id: str) -> Path | None:
    """A repo deleted after the snapshot is still in the trash until it is swept."""
    for entry in backend.repos.trash_root.glob(f"{repo_id}.*"):
        if (entry / "HEAD").is_file():
            return entry
    return None


def take_backup(backend: Backend, store: BackupStore, *, progress: Progress = lambda _m: None,
                lock_timeout: float = 300.0) -> BackupSummary:
    try:
        empty = store.is_empty()
    except BackupStoreError as exc:
        raise BackupError(f"cannot use {store.description}: {exc}",
                          code=Code.BACKUP_STORE_UNAVAILABLE) from None
    if not empty:
        raise BackupError(f"{store.description} is not empty: back up into a new directory or prefix",
                          code=Code.BACKUP_TARGET_NOT_EMPTY)
    # Named as a work area of this process (repostore's ``kind-id-owner-nonce``), so what a
    # killed backup leaves in tmp/ is reclaimed by the next start-up like any other.
    name = f"backup-{secrets.token_hex(16)}-{backend.owner.token}-{secrets.token_hex(4)}"
    work = backend.repos.tmp_root / name
    work.mkdir()
    writer = _BlobWriter(store)
    try:
        summary = _take(backend, store, writer, work, progress, lock_timeout)
    except BackupStoreError as exc:
        store.remove_all()
        raise BackupError(f"writing the backup to {store.description} failed: {exc}",
                          code=Code.BACKUP_STORE_UNAVAILABLE) from None
    except SnapshotBusy as exc:
        store.remove_all()
        raise BackupError(f"{exc}: try again when it is quieter, or raise --lock-timeout",
                          code=Code.BACKUP_REPO_BUSY) from None
    except BaseException:
        store.remove_all()  # it was empty: nothing half-written is left behind
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return summary


def _take(backend: Backend, store: BackupStore, writer: _BlobWriter, work: Path,
          progress: Progress, lock_timeout: float) -> BackupSummary:
    repo_ids: list[str] = []
    packs: set[str] = set()
    tables: dict[str, int] = {}
    metadata_dir = work / "metadata"
    metadata_dir.mkdir()
    bucket: ObjectStore | None = getattr(backend.repos, "objects", None)

    def note_repo(row: dict[str, Any]) -> None:
        repo_ids.append(str(row["id"]))

    def note_pack(row: dict[str, Any]) -> None:
        packs.add(str(row["pack"]))

    watch = {"repos": note_repo, "s3_repo_packs": note_pack}

    engine = backend.meta.engine
    with tabledump.snapshot(engine) as connection:
        revision = tabledump.revision(connection)
        if revision is None:
            raise BackupError("the database has no artifactd schema", code=Code.BACKUP_NOT_FOUND)
        for table in tabledump.tables(connection):
            with (metadata_dir / f"{table.name}.jsonl").open("w", encoding="utf-8") as out:
                dumped = tabledump.dump_table(connection, table, out, watch.get(table.name))
            tables[table.name] = dumped.rows
    progress(f"metadata: {len(tables)} tables, {sum(tables.values())} rows at revision {revision}")
    for name in tables:
        writer.add(metadata_dir / f"{name}.jsonl", table_path(name))

    copied = 0
    if bucket is not None:
        _copy_packs(bucket, writer, work, sorted(packs), progress)
        copied = len(repo_ids)  # each is whole in the metadata (refs) and the packs
    else:
        for number, repo_id in enumerate(repo_ids, 1):
            if _copy_repo(backend, writer, work, repo_id, lock_timeout):
                copied += 1
            if number % 100 == 0 or number == len(repo_ids):
                progress(f"repos: {number}/{len(repo_ids)}")

    with tempfile.NamedTemporaryFile("w", dir=work, delete=False, encoding="utf-8") as index:
        for entry in writer.entries:
            index.write(entry.line())
    index_sha, index_size = sha256_file(Path(index.name))
    store.put_file(INDEX, Path(index.name), index_sha, index_size)
    store.flush()  # everything the manifest vouches for is durable before it exists
    total = sum(entry.size for entry in writer.entries)
    manifest = Manifest(
        artifactd_version=__version__, created_at=iso(now_us()) or "",
        schema_revision=revision, source_database=engine.dialect.name,
        repo_store=REPO_STORE_LOCAL if bucket is None else REPO_STORE_S3,
        index_sha256=index_sha, index_size=index_size,
        tables=tables, repos=copied, files=len(writer.entries), bytes=total,
    )
    manifest_path = work / MANIFEST
    manifest_path.write_text(manifest.to_json(), encoding="utf-8")
    manifest_sha, manifest_size = sha256_file(manifest_path)
    store.put_file(MANIFEST, manifest_path, manifest_sha, manifest_size)
    store.flush()
    return BackupSummary(store.description, revision, tables, copied, len(writer.entries), total,
                         writer.stored_bytes)


def _copy_repo(backend: Backend, writer: _BlobWriter, work: Path, repo_id: str,
               lock_timeout: float) -> bool:
    """Snapshot one repo into the work area and write its files; the copied refs are
    dropped at once, the object links kept until the backup ends (see ``_BlobWriter``)."""
    staging = work / "repo"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        source = None if backend.repos.exists(repo_id) else _deleted_copy(backend, repo_id)
        if not snapshot_repo(backend.repos, repo_id, staging, lock_timeout=lock_timeout,
                             source=source):
            return False  # never materialised (no push yet): restored as the empty repo it is
        for path, relative in _files(staging):
            writer.add(path, repo_path(repo_id, relative), by_inode=relative.startswith("objects/"))
        links = work / "links"
        links.mkdir(exist_ok=True)
        (staging / "objects").rename(links / repo_id)
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_packs(bucket: ObjectStore, writer: _BlobWriter, work: Path, packs: list[str],
                progress: Progress) -> None:
    """Every pack the snapshot lists, its data and index, fetched one at a time into the
    work area, hashed and written to the backup (a shared pack is listed here once)."""
    from artifactd.storage.objectstore import ObjectMissing, ObjectStoreError
    from artifactd.storage.s3store.catalog import pack_keys

    staged = work / "pack"
    for number, name in enumerate(packs, 1):
        for key in pack_keys(name):
            try:
                bucket.get_file(key, staged)
            except ObjectMissing:
                raise BackupError(f"pack object {key}, listed by the snapshot, is missing from "
                                  "the bucket", code=Code.PACK_MISSING) from None
            except ObjectStoreError as exc:
                raise BackupError(f"cannot read {key} from the repo store's bucket: {exc}",
                                  code=Code.OBJECT_STORE_UNAVAILABLE) from None
            try:
                writer.add(staged, pack_path(key))
            finally:
                staged.unlink(missing_ok=True)
        if number % 100 == 0 or number == len(packs):
            progress(f"packs: {number}/{len(packs)}")
