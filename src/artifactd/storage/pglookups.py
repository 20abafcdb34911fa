"""The hot one-statement lookups on PostgreSQL, on plain psycopg connections held ready.

Every control-plane request looks up its API token, most look up a repo, and git requests
look up a repo token: one indexed row each. Through SQLAlchemy, a lookup in autocommit cost
about 150-190 µs (pool checkout, the connection's reset and Core's result machinery) for a
query that psycopg answers in 37 µs, and that overhead put PostgreSQL's GET at 1.8x
SQLite's. Here a lookup pops an idle connection off a stack, runs a statement that the
server has prepared once per connection (``prepare_threshold=0``), and pushes the
connection back.

There is no ping before a lookup: a connection found dead (the server restarted, an idle
timeout, ``pg_terminate_backend``) is dropped and the lookup is tried once more on a fresh
connection; a read is safe to repeat. A second failure is the database being unreachable,
raised as SQLAlchemy's ``OperationalError`` so that the app answers 503 as for any other
statement.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Select

if TYPE_CHECKING:
    import psycopg

# Idle connections kept for the next lookups (more are opened under a burst of concurrent
# requests and closed when they come back to a full stack).
KEEP_IDLE = 8


class Lookup:
    """A SELECT compiled once to PostgreSQL's SQL text, with its result column names."""

    def __init__(self, statement: Select[Any], engine: Engine) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        self.columns = tuple(str(column.key) for column in statement.selected_columns)


class PgLookups:
    def __init__(self, engine: Engine, keep_idle: int = KEEP_IDLE) -> None:
        # Imported here: a SQLite-only install has no psycopg (the PostgreSQL extra).
        import psycopg

        self._psycopg = psycopg
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._connect: Callable[[], psycopg.Connection[Any]] = lambda: psycopg.connect(
            *args, **kwargs, autocommit=True, prepare_threshold=0)
        self._engine = engine
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._keep_idle = keep_idle
        self._closed = False

    def lookup(self, statement: Select[Any]) -> Lookup:
        return Lookup(statement, self._engine)

    def first(self, lookup: Lookup, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``lookup`` as a dict of column name to value, or None."""
        found = self.rows(lookup, params, at_most_one=True)
        return found[0] if found else None

    def rows(self, lookup: Lookup, params: Mapping[str, Any],
             at_most_one: bool = False) -> list[dict[str, Any]]:
        """Every row of ``lookup`` (the first only, with ``at_most_one``), as dicts."""
        for attempt in (1, 2):
            try:
                conn = self._checkout() if attempt == 1 else self._connect()
            except self._psycopg.OperationalError as exc:
                raise _unavailable(lookup, exc) from exc
            try:
                cursor = conn.execute(lookup.sql, params)
                found = [cursor.fetchone()] if at_most_one else cursor.fetchall()
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
                # Dead, and the idle ones most likely with it (a server restart ends them
                # all): dropped, and the retry opens a fresh connection.
                conn.close()
                self._drop_idle()
                if attempt == 2:
                    raise _unavailable(lookup, exc) from exc
                continue
            except BaseException:
                # A statement error leaves an autocommit connection usable, but not one
                # interrupted mid-protocol: keep only an idle one.
                self._checkin(conn)
                raise
            self._checkin(conn)
            return [dict(zip(lookup.columns, row, strict=True)) for row in found
                    if row is not None]
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _checkout(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if not conn.closed and conn.info.transaction_status == idle:
            with self._lock:
                if not self._closed and len(self._idle) < self._keep_idle:
                    self._idle.append(conn)
                    return
        conn.close()


def _unavailable(lookup: Lookup, exc: Exception) -> OperationalError:
    # No parameters in the error: they are secret hashes, and the error is logged.
    return OperationalError(lookup.sql, None, exc)
