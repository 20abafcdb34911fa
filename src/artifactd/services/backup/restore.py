"""``artifactd restore``: a backup brought up in a new data dir (and a new database).

Nothing is written until everything was checked: the manifest, the index's checksum, every
index path, the schema revision (a backup of a newer schema than this release knows is
refused), the targets (an empty or missing data dir, a database without tables), and then
every blob, hashed as it is fetched into a work area of the new data dir. A failure at any
point removes what the restore made, so a refused restore leaves its targets as they were.

The database is brought to the backup's own revision, loaded in one transaction from the
tables as they were at that revision, and then migrated to this release's newest: a backup
of an older release restores into a newer one. Token hashes, the cursor key and every
setting come back as they were, so old API and repo tokens keep working.

Three things are not copied verbatim, because they describe the old deployment's moment
rather than its data: each repo's ``size_bytes`` (and the account totals) are measured on
the restored disk (a repo copy can be a push newer than the metadata snapshot); push
intents and their reservations are dropped (their pushes are in the copied refs or not);
event deliveries claimed by old nodes are released, so delivery resumes at once.

A backup of the ``s3`` repo store restores into a new database, a new empty bucket prefix
(``bucket``, the target deployment's repo store) and a new empty data dir (the first node's
cache): the pack objects are uploaded under their own keys, the ``s3_*`` rows come back as
they were (maintenance leases of the old nodes dropped) and each repo's size is the sum of
the packs it lists. A failed restore deletes the objects it uploaded.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, MetaData, inspect

from artifactd.errors import Code
from artifactd.services.backup.manifest import (
    INDEX,
    MANIFEST,
    REPO_STORE_S3,
    BackupError,
    FileEntry,
    Manifest,
    blob_name,
    parse_entry,
)
from artifactd.storage import tabledump
from artifactd.storage.backupstore import BackupMissing, BackupStore, BackupStoreError, sha256_file
from artifactd.storage.db import known_revision, make_engine, migrate
from artifactd.storage.repostore import RepoStore

if TYPE_CHECKING:
    from artifactd.storage.objectstore import ObjectStore

Progress = Callable[[str], None]
DATA_DIR_MODE = 0o700


@dataclass(frozen=True)
class RestoreSummary:
    location: str
    schema_revision: str
    migrated_to: str | None  # None: checked only
    tables: dict[str, int]
    repos: int
    files: int
    bytes: int


def _unavailable(store: BackupStore, exc: BackupStoreError) -> BackupError:
    return BackupError(f"cannot read {store.description}: {exc}", code=Code.BACKUP_STORE_UNAVAILABLE)


def read_backup(store: BackupStore, scratch: Path) -> tuple[Manifest, list[FileEntry]]:
    """The manifest and the index, checked (nothing else is read)."""
    try:
        store.get_file(MANIFEST, scratch / MANIFEST)
    except BackupMissing:
        raise BackupError(f"{store.description} has no {MANIFEST}: not a backup, or one that "
                          "did not finish", code=Code.BACKUP_NOT_FOUND) from None
    except BackupStoreError as exc:
        raise _unavailable(store, exc) from None
    manifest = Manifest.load(scratch / MANIFEST)
    if not known_revision(manifest.schema_revision):
        raise BackupError(
            f"the backup's schema revision {manifest.schema_revision} is newer than this release "
            f"knows (artifactd {manifest.artifactd_version} wrote it): restore with that release "
            "or a newer one", code=Code.BACKUP_SCHEMA_NEWER)
    try:
        store.get_file(INDEX, scratch / INDEX)
    except BackupMissing:
        raise BackupError(f"{INDEX} is missing from {store.description}") from None
    except BackupStoreError as exc:
        raise _unavailable(store, exc) from None
    if sha256_file(scratch / INDEX) != (manifest.index_sha256, manifest.index_size):
        raise BackupError(f"{INDEX} is corrupt or truncated (its checksum is not the manifest's)")
    with (scratch / INDEX).open(encoding="utf-8") as handle:
        entries = [parse_entry(line, number) for number, line in enumerate(handle, 1)]
    if len(entries) != manifest.files:
        raise BackupError(f"{INDEX} lists {len(entries)} files, the manifest {manifest.files}")
    return manifest, entries


def _check_targets(data_dir: Path, database_url: str | None) -> None:
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise BackupError(f"{data_dir} is not empty: restore into a new data dir",
                          code=Code.RESTORE_TARGET_NOT_EMPTY)
    if database_url is not None:
        engine = make_engine(database_url)
        try:
            names = inspect(engine).get_table_names()
        finally:
            engine.dispose()
        if names:
            raise BackupError("the target database is not empty (it has tables): restore into a "
                              "new database", code=Code.RESTORE_TARGET_NOT_EMPTY)


def _check_bucket(bucket: ObjectStore) -> None:
    """The target prefix of an ``s3`` restore: reachable, and holding nothing yet."""
    from artifactd.storage.objectstore import ObjectStoreError

    try:
        bucket.check()
        occupied = next(iter(bucket.list("")), None)
    except ObjectStoreError as exc:
        raise BackupError(f"cannot use the target bucket {bucket.bucket}: {exc}",
                          code=Code.OBJECT_STORE_UNAVAILABLE) from None
    if occupied is not None:
        raise BackupError(f"the target bucket prefix s3://{bucket.bucket}/{bucket.key('')} is not "
                          f"empty (it holds {occupied[0]}): restore into a new bucket or prefix",
                          code=Code.RESTORE_TARGET_NOT_EMPTY)


def _upload_packs(bucket: ObjectStore, entries: list[FileEntry], blobs: Path,
                  uploaded: list[str], progress: Progress) -> None:
    from artifactd.storage.objectstore import ObjectStoreError

    for entry in entries:
        key = entry.pack_key
        if key is None:
            continue
        try:
            bucket.put_file(key, blobs / entry.sha256)
        except ObjectStoreError as exc:
            raise BackupError(f"cannot write {key} to the target bucket: {exc}",
                              code=Code.OBJECT_STORE_UNAVAILABLE) from None
        uploaded.append(key)
        if len(uploaded) % 200 == 0:
            progress(f"uploaded {len(uploaded)} pack objects")


def _pack_sizes(tables_files: dict[str, Path]) -> dict[str, int]:
    """Each repo's bytes on the ``s3`` store: the packs it lists (what its limit counts)."""
    sizes: dict[str, int] = {}
    packs_file, lists_file = tables_files.get("s3_packs"), tables_files.get("s3_repo_packs")
    if packs_file is None or lists_file is None:
        return sizes
    pack_bytes = {str(row["pack"]): int(row["size_bytes"])
                  for row in tabledump.read_rows(packs_file, "metadata/s3_packs.jsonl")}
    for row in tabledump.read_rows(lists_file, "metadata/s3_repo_packs.jsonl"):
        repo_id = str(row["repo_id"])
        sizes[repo_id] = sizes.get(repo_id, 0) + pack_bytes.get(str(row["pack"]), 0)
    return sizes


def _fetch_blobs(store: BackupStore, entries: list[FileEntry], blobs: Path, progress: Progress) -> None:
    """Every distinct blob into ``blobs/``, each hashed: a bad one names the file it holds."""
    seen: set[str] = set()
    for entry in entries:
        if entry.sha256 in seen:
            continue
        target = blobs / entry.sha256
        try:
            store.get_file(blob_name(entry.sha256), target)
        except BackupMissing:
            raise BackupError(f"{entry.path} is missing from the backup "
                              f"({blob_name(entry.sha256)})") from None
        except BackupStoreError as exc:
            raise _unavailable(store, exc) from None
        digest, size = sha256_file(target)
        if (digest, size) != (entry.sha256, entry.size):
            raise BackupError(f"{entry.path} is corrupt or truncated in the backup "
                              f"({blob_name(entry.sha256)}: {size} bytes, checksum mismatch)")
        seen.add(entry.sha256)
        if len(seen) % 500 == 0:
            progress(f"checked {len(seen)} files")


def _build_repos(entries: list[FileEntry], blobs: Path, repos: RepoStore) -> list[str]:
    """Lay the repo files out in ``repos/``; objects are hard links to one blob (forks share)."""
    by_repo: dict[str, list[tuple[str, FileEntry]]] = {}
    for entry in entries:
        located = entry.repo
        if located is not None:
            by_repo.setdefault(located[0], []).append((located[1], entry))
    for repo_id, files in by_repo.items():
        root = repos.path(repo_id)
        root.mkdir(parents=True, exist_ok=True)
        # The store's own layout; a file's logical ``objects/...`` path lands in it either way.
        repos.make_skeleton(root)
        for relative, entry in files:
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if relative.startswith("objects/"):
                os.link(blobs / entry.sha256, target)  # immutable, as git treats it
            else:
                shutil.copyfile(blobs / entry.sha256, target)  # refs are replaced, never shared
    return list(by_repo)


class OutboxRenumbering:
    """Restored events renumbered 1..n in their order, for a PostgreSQL target.

    A PostgreSQL outbox seq is the writing transaction's id shifted left
    (storage/outboxseq.py), and a fresh cluster's ids start low: events restored with the
    old cluster's seqs would sort after every event the new one writes, and cursors restored
    past them would skip those for ever. Ranks sort below any seq the target writes; cursors
    and delivery-log seqs become the number of restored events at or below them."""

    def __init__(self, seqs: list[int]) -> None:
        self.seqs = sorted(seqs)

    @classmethod
    def of_dump(cls, path: Path | None) -> OutboxRenumbering:
        rows = tabledump.read_rows(path, "metadata/event_outbox.jsonl") if path else iter(())
        return cls([int(row["seq"]) for row in rows])

    def event(self, seq: int) -> int:
        return bisect.bisect_left(self.seqs, seq) + 1

    def position(self, seq: int) -> int:
        return bisect.bisect_right(self.seqs, seq)


def _load_database(engine: Engine, manifest: Manifest, tables_files: dict[str, Path],
                   sizes: dict[str, int]) -> str:
    migrate(engine, manifest.schema_revision)
    per_account: dict[str, int] = {}
    repos_file = tables_files.get("repos")
    if repos_file is not None:
        for row in tabledump.read_rows(repos_file, "metadata/repos.jsonl"):
            account = str(row.get("account_id"))
            per_account[account] = per_account.get(account, 0) + sizes.get(str(row.get("id")), 0)
    accounts_seen: set[str] = set()
    renumbering = (OutboxRenumbering.of_dump(tables_files.get("event_outbox"))
                   if engine.dialect.name == "postgresql" else None)

    def transform(name: str, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for row in rows:
            if name in {"push_intents", "s3_leases"}:
                continue
            if name == "repos":
                row["size_bytes"] = sizes.get(str(row["id"]), 0)
                row["reserved_bytes"] = 0
            elif name == "account_storage":
                accounts_seen.add(str(row["account_id"]))
                row["used_bytes"] = per_account.get(str(row["account_id"]), 0)
                row["reserved_bytes"] = 0
            elif name == "event_subscriptions":
                row["claimed_by"] = None
                row["claimed_until_us"] = 0
            if renumbering is not None:
                if name == "event_outbox":
                    row["seq"] = renumbering.event(int(row["seq"]))
                elif name == "event_subscriptions":
                    row["cursor_seq"] = renumbering.position(int(row["cursor_seq"]))
                elif name == "event_deliveries":
                    row["seq"] = renumbering.position(int(row["seq"]))
            yield row

    with engine.begin() as connection:
        present = {table.name: table for table in tabledump.tables(connection)}
        unknown = set(tables_files) - set(present)
        if unknown:
            raise BackupError(f"metadata/{sorted(unknown)[0]}.jsonl: no such table at revision "
                              f"{manifest.schema_revision}")
        for name, table in present.items():
            path = tables_files.get(name)
            if path is None:
                continue
            rows = tabledump.read_rows(path, f"metadata/{name}.jsonl")
            try:
                tabledump.load_table(connection, table, transform(name, rows))
            except tabledump.DumpError as exc:
                raise BackupError(str(exc)) from None
            tabledump.reset_sequences(connection, table)
        if "account_storage" in present:
            missing = [{"account_id": account, "used_bytes": used, "reserved_bytes": 0}
                       for account, used in per_account.items() if account not in accounts_seen]
            if missing:
                connection.execute(present["account_storage"].insert(), missing)
    return migrate(engine).after


def _drop_everything(engine: Engine) -> None:
    with contextlib.suppress(Exception), engine.begin() as connection:
        reflected = MetaData()
        reflected.reflect(bind=connection)
        reflected.drop_all(bind=connection)


def restore_backup(store: BackupStore, data_dir: Path, database_url: str | None = None, *,
                   bucket: ObjectStore | None = None, check_only: bool = False,
                   progress: Progress = lambda _m: None) -> RestoreSummary:
    """Restore into ``data_dir`` (and ``database_url``, default SQLite in the data dir; and
    for a backup of the ``s3`` store, ``bucket``); ``check_only``: verify every checksum and
    write nothing."""
    data_dir = data_dir.resolve()
    if not check_only:
        _check_targets(data_dir, database_url)
        if bucket is not None:
            _check_bucket(bucket)
    uploaded: list[str] = []
    made_dir = not data_dir.exists()
    if check_only:
        work = Path(tempfile.mkdtemp(prefix="artifactd-check-"))
    else:
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        work = data_dir / f".restore-{secrets.token_hex(6)}"
        work.mkdir(mode=DATA_DIR_MODE)
    blobs = work / "blobs"
    blobs.mkdir()
    database_loaded: Engine | None = None
    try:
        manifest, entries = read_backup(store, work)
        if not check_only and (manifest.repo_store == REPO_STORE_S3) != (bucket is not None):
            raise BackupError(
                f"the backup is of the {manifest.repo_store!r} repo store: restore it with "
                + ("storage_backend = 's3' and the target bucket set (docs/backup.md)"
                   if bucket is None else "storage_backend = 'local'"),
                code=Code.RESTORE_BACKEND_MISMATCH)
        _fetch_blobs(store, entries, blobs, progress)
        tables_files = {entry.table: blobs / entry.sha256 for entry in entries if entry.table}
        if check_only:
            return RestoreSummary(store.description, manifest.schema_revision, None,
                                  manifest.tables, manifest.repos, manifest.files, manifest.bytes)
        repos = RepoStore(data_dir)
        if bucket is not None:
            _upload_packs(bucket, entries, blobs, uploaded, progress)
            sizes = _pack_sizes(tables_files)
            restored_count = manifest.repos
        else:
            restored = _build_repos(entries, blobs, repos)
            sizes = {repo_id: repos.size(repo_id) for repo_id in restored}
            restored_count = len(restored)
        url = database_url or f"sqlite:///{data_dir / 'artifactd.db'}"
        engine = make_engine(url)
        database_loaded = engine
        try:
            head = _load_database(engine, manifest, tables_files, sizes)
        finally:
            engine.dispose()
        database_loaded = None
        progress(f"restored {restored_count} repos and {sum(manifest.tables.values())} rows")
        return RestoreSummary(store.description, manifest.schema_revision, head, manifest.tables,
                              restored_count, manifest.files, manifest.bytes)
    except BaseException:
        if bucket is not None:
            for key in uploaded:
                with contextlib.suppress(Exception):
                    bucket.delete(key)
        if database_loaded is not None and database_url is not None:
            _drop_everything(database_loaded)
            database_loaded.dispose()
        if not check_only:
            _empty(data_dir, remove=made_dir)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _empty(data_dir: Path, *, remove: bool) -> None:
    """Undo a failed restore: the data dir was empty (or missing) before it began."""
    if remove:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for entry in data_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
