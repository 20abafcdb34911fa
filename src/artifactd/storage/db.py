"""Engine creation and migrations for SQLite and PostgreSQL.

Migrations run under a lock, so that several workers or nodes starting at once upgrade the
schema exactly once: a ``flock`` on a file beside the SQLite database (one machine), or a
transaction-scoped ``pg_advisory_xact_lock`` on PostgreSQL (any number of machines). The
second process waits, then finds the schema at head and does nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from artifactd.storage.checkpointer import BACKSTOP_PAGES

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The pg_advisory_lock key every artifactd node agrees on ("artd" in ASCII).
PG_MIGRATION_LOCK_KEY = 0x61727464
PRIVATE_FILE_MODE = 0o600  # the database holds token hashes and the cursor key

log = logging.getLogger("artifactd.migrate")


@dataclass(frozen=True)
class MigrationResult:
    before: str | None  # None: an empty database
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def sqlite_path(url: str | URL) -> Path | None:
    """The file of a SQLite URL, or None for another database or an in-memory one."""
    parsed = make_url(normalise_url(url) if isinstance(url, str) else url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _create_private_file(path: Path) -> None:
    """Create the SQLite file ourselves (an empty file is an empty database) so that it is
    0600 from the start; SQLite gives its -wal and -shm files the same mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))


def normalise_url(url: str) -> str:
    """Let users write ``postgresql://`` and still get the psycopg 3 driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, background_checkpoints: bool = False) -> Engine:
    """``background_checkpoints``: SQLite leaves WAL checkpoints to a ``WalCheckpointer``
    (storage/checkpointer.py) instead of running them inside a commit."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            _create_private_file(path)
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=8,
            max_overflow=8,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run beside the one writer and across --workers processes;
            # NORMAL sync is durable across process crashes (only an OS crash can lose the
            # last transactions), the usual trade-off for WAL.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            if background_checkpoints:
                cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            cursor.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_idle_connections(engine)
    return engine


IDLE_PING_S = 10.0  # a pooled connection idle this long is checked before it is handed out


def _ping_idle_connections(engine: Engine) -> None:
    """Check a connection at checkout only if it sat idle in the pool (SQLAlchemy's
    documented pessimistic recipe, narrowed): ``pool_pre_ping`` would add a ``SELECT 1``
    round trip to every request, while a busy pool's connections are seconds old at most.
    A dead idle connection raises ``DisconnectionError``, and the pool replaces it and tries
    again; a server restart under load fails the statements in flight, and SQLAlchemy then
    invalidates the whole pool, so the next requests reconnect."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("pooled connection is dead") from exc


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another process to finish migrating the database")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _pg_lock(connection: Connection) -> None:
    """Held until the migration transaction ends (commit or rollback)."""
    key = {"key": PG_MIGRATION_LOCK_KEY}
    if not connection.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), key).scalar():
        log.warning("waiting for another process to finish migrating the database")
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)


def known_revision(revision: str) -> bool:
    """Whether this release has the migration ``revision`` (a newer release's is unknown)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None
    except Exception:  # alembic raises several kinds for an unknown or malformed id
        return False


def migrate(engine: Engine, target: str = "head") -> MigrationResult:
    """Bring the schema to ``target``, the newest revision by default (idempotent, safe to
    run concurrently; ``restore`` migrates to a backup's revision before loading it)."""
    path = sqlite_path(engine.url)
    lock = _file_lock(path.with_name(path.name + ".migrate-lock")) if path else contextlib.nullcontext()
    with lock, engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            _pg_lock(connection)
        before = current_revision(connection)
        command.upgrade(_alembic_config(connection), target)
        after = current_revision(connection)
    assert after is not None
    if before != after:
        log.info("database migrated from %s to %s", before or "an empty schema", after)
    return MigrationResult(before, after)


def is_migrated(engine: Engine) -> bool:
    return "repos" in inspect(engine).get_table_names()
