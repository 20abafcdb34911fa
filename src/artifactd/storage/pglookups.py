"""The hot one-statement lookups (and the create) on PostgreSQL, on plain psycopg
connections held ready.

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

``write`` runs one data-modifying statement the same way (the repo create: storage/pgcreate.py,
one statement in autocommit). Through SQLAlchemy's autocommit connection its pool checkout,
reset, isolation-level switch and result machinery were more CPU in the node than
psycopg's own work for it. A write is not repeated after a failure (it may have committed
before the connection died): a connection that sat idle long enough to have been cut is
checked with a ``SELECT 1`` first, as the SQLAlchemy pool does (storage/db.py), and a
failure mid-statement is raised; the create's caller knows how to retry it safely (its
repo id is its own: a duplicate of it means the first try committed). A constraint
violation comes back as SQLAlchemy's ``IntegrityError``, which the callers already handle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, TextClause
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import Select

if TYPE_CHECKING:
    import psycopg

# Idle connections kept for the next lookups (more are opened under a burst of concurrent
# requests and closed when they come back to a full stack).
KEEP_IDLE = 8
# An idle connection older than this is checked before a write goes on it (db.IDLE_PING_S).
IDLE_CHECK_S = 10.0


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
        self._idle_since: dict[int, float] = {}  # id(connection) -> when it was checked in
        self._written: dict[int, tuple[TextClause, str]] = {}  # id(statement) -> its SQL
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
                raise _unavailable(lookup.sql, exc) from exc
            try:
                cursor = conn.execute(lookup.sql, params)
                found = [cursor.fetchone()] if at_most_one else cursor.fetchall()
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
                # Dead, and the idle ones most likely with it (a server restart ends them
                # all): dropped, and the retry opens a fresh connection.
                conn.close()
                self._drop_idle()
                if attempt == 2:
                    raise _unavailable(lookup.sql, exc) from exc
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

    def write(self, statement: TextClause, params: Mapping[str, Any], *,
              fresh: bool = False) -> None:
        """Run ``statement`` (one built once, module level or cached: its SQL text is kept
        by identity) in autocommit: all of it or, on an error, none of it. ``fresh``: on a
        new connection (the caller's retry after a connection died under its write)."""
        sql = self._sql_of(statement)
        try:
            conn = self._connect() if fresh else self._checkout_for_write()
        except self._psycopg.OperationalError as exc:
            raise _unavailable(sql, exc) from exc
        try:
            conn.execute(sql, params)
        except self._psycopg.IntegrityError as exc:
            self._checkin(conn)
            raise IntegrityError(sql, None, exc) from exc
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
            conn.close()
            self._drop_idle()
            raise _unavailable(sql, exc) from exc
        except BaseException:
            self._checkin(conn)
            raise
        self._checkin(conn)

    def _sql_of(self, statement: TextClause) -> str:
        known = self._written.get(id(statement))
        if known is None:
            # The statement is held with its text, so that its id is not reused.
            known = self._written[id(statement)] = (
                statement, str(statement.compile(dialect=self._engine.dialect)))
        return known[1]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._idle_since.clear()
        for conn in idle:
            conn.close()

    def _checkout(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._idle:
                conn = self._idle.pop()
                self._idle_since.pop(id(conn), None)
                return conn
        return self._connect()

    def _checkout_for_write(self) -> psycopg.Connection[Any]:
        with self._lock:
            if self._idle:
                conn = self._idle.pop()
                idle_since = self._idle_since.pop(id(conn), 0.0)
            else:
                conn, idle_since = None, 0.0
        if conn is None:
            return self._connect()
        if time.monotonic() - idle_since < IDLE_CHECK_S:
            return conn
        try:
            conn.execute("SELECT 1")
            return conn
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError):
            conn.close()
            self._drop_idle()
            return self._connect()

    def _checkin(self, conn: psycopg.Connection[Any]) -> None:
        idle = self._psycopg.pq.TransactionStatus.IDLE
        if not conn.closed and conn.info.transaction_status == idle:
            with self._lock:
                if not self._closed and len(self._idle) < self._keep_idle:
                    self._idle.append(conn)
                    self._idle_since[id(conn)] = time.monotonic()
                    return
        conn.close()


def _unavailable(sql: str, exc: Exception) -> OperationalError:
    # No parameters in the error: they are secret hashes, and the error is logged.
    return OperationalError(sql, None, exc)
