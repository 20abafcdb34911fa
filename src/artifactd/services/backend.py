"""The backend: one object per process holding settings and the stores.

Every entry point (HTTP app, CLI admin commands, background workers) opens one of these and
passes it to the service functions, so all of them share one set of rules.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from sqlalchemy import Engine

from artifactd.config import Settings
from artifactd.services.cursor import CursorCodec
from artifactd.storage.db import is_migrated, make_engine, migrate
from artifactd.storage.gitrunner import GitRunner
from artifactd.storage.metadata import MetadataStore
from artifactd.storage.owner import Owner
from artifactd.storage.repostore import RepoStore

DATA_DIR_MODE = 0o700


@dataclass
class Backend:
    settings: Settings
    meta: MetadataStore
    repos: RepoStore
    git: GitRunner
    cursors: CursorCodec
    owner: Owner
    extras: dict[str, object] = field(default_factory=dict)

    @classmethod
    def open(cls, settings: Settings, *, run_migrations: bool = True, serving: bool = False) -> Backend:
        """``serving``: a server process, whose app checkpoints SQLite's WAL in a thread of
        its own (storage/checkpointer.py) instead of inside request commits."""
        # 0700: the data dir holds the database (token hashes, the cursor key) and every repo.
        settings.data_path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        engine = make_engine(settings.effective_database_url, background_checkpoints=serving)
        if run_migrations or not is_migrated(engine):
            migrate(engine)
        meta = MetadataStore(engine)
        secret = meta.get_or_create_setting("cursor_key", secrets.token_hex(32))
        owner = Owner(settings.data_path)
        return cls(
            settings=settings,
            meta=meta,
            repos=_repo_store(settings, engine, owner.token),
            git=GitRunner(settings.data_path, owner=owner.token, nice=settings.git_nice),
            cursors=CursorCodec(bytes.fromhex(secret)),
            owner=owner,
        )

    def close(self) -> None:
        self.meta.close()
        self.owner.release()


def _repo_store(settings: Settings, engine: Engine, owner: str) -> RepoStore:
    """The local store, or with ``storage_backend = "s3"`` the bucket-backed one (its bucket
    checked first: ``ObjectStoreUnavailable`` names what to fix)."""
    if settings.storage_backend != "s3":
        return RepoStore(settings.data_path, owner=owner)
    # Imported here: boto3 is the ``s3`` extra, not needed by a local deployment.
    from artifactd.storage.objectstore import ObjectStore, ObjectStoreConfig
    from artifactd.storage.s3store.catalog import Catalog
    from artifactd.storage.s3store.store import S3RepoStore

    objects = ObjectStore(ObjectStoreConfig(
        endpoint_url=settings.s3_endpoint_url, bucket=settings.s3_bucket,
        region=settings.s3_region, prefix=settings.s3_prefix,
        access_key_id=settings.s3_access_key_id or None,
        secret_access_key=settings.s3_secret_access_key or None,
    ))
    objects.check()
    return S3RepoStore(settings.data_path, Catalog(engine), objects, owner=owner,
                       cache_max_bytes=settings.cache_max_bytes,
                       pack_grace_seconds=settings.gc_grace_seconds,
                       upload_part_bytes=settings.s3_upload_part_bytes)
