"""The backend: one object per process holding settings and the stores.

Every entry point (HTTP app, CLI admin commands, background workers) opens one of these and
passes it to the service functions, so all of them share one set of rules.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from artifactd.config import Settings
from artifactd.services.cursor import CursorCodec
from artifactd.storage.db import is_migrated, make_engine, migrate
from artifactd.storage.gitrunner import GitRunner
from artifactd.storage.metadata import MetadataStore
from artifactd.storage.repostore import RepoStore

DATA_DIR_MODE = 0o700


@dataclass
class Backend:
    settings: Settings
    meta: MetadataStore
    repos: RepoStore
    git: GitRunner
    cursors: CursorCodec
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
        return cls(
            settings=settings,
            meta=meta,
            repos=RepoStore(settings.data_path),
            git=GitRunner(settings.data_path),
            cursors=CursorCodec(bytes.fromhex(secret)),
        )

    def close(self) -> None:
        self.meta.engine.dispose()
