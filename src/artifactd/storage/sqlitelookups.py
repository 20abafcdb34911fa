"""The hot one-statement lookups on SQLite, on plain ``sqlite3`` connections (one per thread).

The counterpart of ``pglookups.py``. Every control-plane request looks up its API token, most
look up a repo, and every git request looks up its repo token: one indexed row each, about
eight per agent loop. Through SQLAlchemy a lookup cost 60-75 µs (pool checkout, ``begin`` and
the connection's reset, the execution context, Core's result objects) for a query that the
``sqlite3`` module answers in 4 µs from a statement it keeps prepared.

Each thread that looks something up (the event loop, the thread pool's workers) gets its own
connection, opened on first use: a ``sqlite3`` connection must not run two statements at once
from two threads, and a lock would be one more thing on the hot path. The connections are
read-only (``PRAGMA query_only``) and in autocommit: every lookup is a statement of its own
that reads the newest committed data (WAL), so a token revoked by another worker or another
process fails its very next request. The rows are read to the end (``fetchall``) so that
SQLite resets the statement at once: a statement left stepping would hold its read snapshot
open, and the next lookup on the connection would see that old snapshot.

Rows come back as SQLAlchemy's would: a ``Boolean`` column is ``bool``, not SQLite's 0/1.
Errors are SQLAlchemy's too (``sqlite3.OperationalError`` becomes ``OperationalError``), so
that a locked or unreadable database is answered as for any other statement.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

from artifactd.storage.sqliteexec import NAMED

# As the engine's connections wait (storage/db.py): a reader in WAL mode rarely waits at
# all, only while another connection recovers the WAL after a crash.
BUSY_TIMEOUT_S = 30.0


def _as_bool(value: Any) -> Any:
    return value if value is None else bool(value)


class Lookup:
    """A SELECT compiled once to SQLite's SQL text, with its result columns' names and the
    conversions that make its values what SQLAlchemy returns."""

    def __init__(self, statement: Select[Any]) -> None:
        self.sql = str(statement.compile(dialect=NAMED))
        self.columns = tuple(str(column.key) for column in statement.selected_columns)
        self.converters: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (index, _as_bool) for index, column in enumerate(statement.selected_columns)
            if isinstance(column.type, Boolean))


class SqliteLookups:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every connection opened, with its thread: the thread pool's threads come and go
        # (anyio ends a worker idle for 10 s), and a dead thread's connection is closed when
        # the next one opens, not kept open for the life of the process.
        self._opened: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        # Bumped by ``close``: a thread's connection from before is not used again.
        self._generation = 0
        self._pid = os.getpid()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._opened)

    def lookup(self, statement: Select[Any]) -> Lookup:
        return Lookup(statement)

    def first(self, lookup: Lookup, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of ``lookup`` as a dict of column name to value, or None."""
        found = self.rows(lookup, params)
        return found[0] if found else None

    def rows(self, lookup: Lookup, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row of ``lookup``, as dicts of column name to value."""
        conn = self._connection()
        try:
            fetched = conn.execute(lookup.sql, params).fetchall()
        except sqlite3.Error as exc:
            # No parameters in the error: they are secret hashes, and the error is logged.
            raise DBAPIError.instance(lookup.sql, None, exc, sqlite3.Error) from exc
        return [self._mapping(lookup, row) for row in fetched]

    @staticmethod
    def _mapping(lookup: Lookup, row: tuple[Any, ...]) -> dict[str, Any]:
        values = list(row)
        for index, convert in lookup.converters:
            values[index] = convert(values[index])
        return dict(zip(lookup.columns, values, strict=True))

    def close(self) -> None:
        with self._lock:
            self._generation += 1
            opened, self._opened = self._opened, []
        for _thread, conn in opened:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self._generation and self._pid == os.getpid():
            conn: sqlite3.Connection = held[1]
            return conn
        if self._pid != os.getpid():
            # A forked child must not share its parent's connections: start afresh.
            self._pid = os.getpid()
            self._local = threading.local()
            with self._lock:
                self._opened = []
        try:
            conn = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise DBAPIError.instance("connect", None, exc, sqlite3.Error) from exc
        with self._lock:
            kept = []
            for thread_ref, held in self._opened:
                thread = thread_ref()
                if thread is not None and thread.is_alive():
                    kept.append((thread_ref, held))
                else:
                    held.close()
            kept.append((weakref.ref(threading.current_thread()), conn))
            self._opened = kept
            self._local.held = (self._generation, conn)
        return conn
