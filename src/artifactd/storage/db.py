"""Engine creation and migrations for SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from artifactd.storage.checkpointer import BACKSTOP_PAGES

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


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


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_migrated(engine: Engine) -> bool:
    return "repos" in inspect(engine).get_table_names()
