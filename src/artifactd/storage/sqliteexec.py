"""The hot write paths' statements on SQLite, run on the transaction's own ``sqlite3``
connection instead of through SQLAlchemy's execution machinery.

A create, a push's admission and record, and a delete are about 20 statements an agent loop,
each inside a transaction that SQLAlchemy opened (``engine.begin()``, which stays: the pool,
the commit, the rollback on an error). Executed through ``Connection.execute`` a statement
cost 40-60 µs of SQLAlchemy (the compiled cache's lookup, an execution context, parameter
processing, a result object) for a write SQLite does in a few. Here each statement is
compiled once, per set of parameter names, to SQLite's SQL with named parameters, and run
with ``sqlite3``'s own prepared-statement cache; the SQL text is the one SQLAlchemy sends.

What SQLAlchemy would have added is supplied by the callers or not needed: every INSERT
passes a value for each column it names (the row dataclasses hold them all), the columns
are integers and strings (no type conversion on the way in; a ``bool`` is an ``int`` to
``sqlite3``), and a row comes back as a named tuple with the statement's column names.
A ``sqlite3`` error becomes SQLAlchemy's (``IntegrityError`` for a duplicate name), as
``Connection.execute`` would raise it.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import DBAPIError

# SQLite's dialect with parameters by name (``:h``), as the statements' ``bindparam`` name
# them; the engine's own dialect compiles to ``?``. The hot lookups compile with it too.
NAMED = sqlite_dialect.dialect(paramstyle="named")

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]]


class Result:
    """What the hot paths read of a result: ``rowcount`` and ``first()``."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rowcount: int, rows: list[Any]) -> None:
        self.rowcount = rowcount
        self._rows = rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None


class _Compiled:
    def __init__(self, statement: Any, names: tuple[str, ...]) -> None:
        self.statement = statement  # held: the cache is keyed by its id
        column_keys = None
        if statement.is_insert:
            # An INSERT without values of its own names the columns it is given.
            table_columns = statement.table.c
            named = [name for name in names if name in table_columns]
            column_keys = named or None
        compiled = statement.compile(dialect=NAMED, column_keys=column_keys)
        self.sql = str(compiled)
        # Values the statement carries itself (``pushes_since_maintenance + 1`` binds its 1).
        self.defaults = {name: value for name, value in compiled.params.items()
                         if name not in names}
        self.row: Any = None
        if statement.is_select:
            keys = [str(column.key) for column in statement.selected_columns]
            self.row = collections.namedtuple("Row", keys, rename=True)  # type: ignore[misc]


class SqliteStatements:
    def __init__(self) -> None:
        self._compiled: dict[tuple[int, tuple[str, ...]], _Compiled] = {}

    @property
    def compiled_count(self) -> int:
        """How many statement texts were compiled (the tests check it stops growing)."""
        return len(self._compiled)

    def execute(self, conn: Connection, statement: Any, params: Params) -> Result:
        many = not isinstance(params, Mapping)
        first_params: Mapping[str, Any] = params[0] if many else params  # type: ignore[index, assignment]
        names = tuple(first_params)
        compiled = self._compiled.get((id(statement), names))
        if compiled is None:
            compiled = _Compiled(statement, names)
            self._compiled[(id(statement), names)] = compiled
        if compiled.defaults:
            if many:
                params = [{**compiled.defaults, **one} for one in params]  # type: ignore[dict-item]
            else:
                params = {**compiled.defaults, **first_params}
        raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
        try:
            if many:
                cursor = raw.executemany(compiled.sql, params)
                return Result(cursor.rowcount, [])
            cursor = raw.execute(compiled.sql, params)
            if compiled.row is None:
                return Result(cursor.rowcount, [])
            return Result(cursor.rowcount, [compiled.row(*row) for row in cursor.fetchall()])
        except sqlite3.Error as exc:
            # No parameters in the error: they can hold token hashes, and errors are logged.
            raise DBAPIError.instance(compiled.sql, None, exc, sqlite3.Error) from exc
