"""Every metadata table as JSON lines, read in one snapshot, and loaded back into either engine.

A dump is what ``artifactd backup`` keeps of the database: one JSON object per row, one file
per table, plus the Alembic revision the rows were read at. The tables are *reflected* from
the database rather than taken from ``schema.py``: a dump holds every table the database
has, whichever release (or lane) added it. All of it is read in one transaction that sees
one instant of the database: ``REPEATABLE READ`` (a snapshot) on PostgreSQL, one read
transaction on SQLite (in WAL mode a reader keeps the snapshot of its first read while
writers go on). The server keeps running; nothing here takes a write lock.

JSON keeps the dump portable: the column types the schema uses (integers, strings, booleans,
floats, NULL) mean the same in both engines, so a SQLite dump loads into PostgreSQL and back.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Boolean, Connection, Engine, Float, Integer, MetaData, Table, select, text

from artifactd.storage.db import current_revision

VERSION_TABLE = "alembic_version"  # the revision is kept apart, in the manifest
INSERT_BATCH = 1000  # rows per executemany: bounded memory, few round trips


class DumpError(Exception):
    """A dump file that cannot be loaded (its name and line are in the message)."""


@dataclass(frozen=True)
class TableDump:
    name: str
    rows: int


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose every read sees the database at one instant; nothing is written."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")
        else:
            # pysqlite opens transactions only before writes; an explicit BEGIN makes the
            # reads below one transaction, which WAL serves from one snapshot.
            connection.exec_driver_sql("BEGIN")
        try:
            yield connection
        finally:
            connection.rollback()


def tables(connection: Connection) -> list[Table]:
    """The database's tables in dependency order (a referenced table before its referrers)."""
    reflected = MetaData()
    reflected.reflect(bind=connection)
    return [table for table in reflected.sorted_tables if table.name != VERSION_TABLE]


def revision(connection: Connection) -> str | None:
    return current_revision(connection)


def dump_table(connection: Connection, table: Table, out: IO[str],
               on_row: Callable[[dict[str, Any]], None] | None = None) -> TableDump:
    """Write ``table``'s rows to ``out`` as JSON lines, in primary-key order (stable dumps)."""
    order = list(table.primary_key.columns) or list(table.columns)
    query = select(table).order_by(*order)
    count = 0
    result = connection.execution_options(stream_results=True, yield_per=INSERT_BATCH).execute(query)
    for row in result.mappings():
        record = dict(row)
        if on_row is not None:
            on_row(record)
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        count += 1
    return TableDump(table.name, count)


def read_rows(path: Path, label: str) -> Iterator[dict[str, Any]]:
    """The rows of one dump file; ``DumpError`` naming ``label`` and the line if one is bad."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except ValueError:
                raise DumpError(f"{label} line {number} is not JSON") from None
            if not isinstance(record, dict):
                raise DumpError(f"{label} line {number} is not a JSON object")
            yield record


def _coerce(table: Table) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Rows as the target engine's driver wants them (a SQLite dump's 0/1 for a boolean)."""
    booleans = {c.name for c in table.columns if isinstance(c.type, Boolean)}
    floats = {c.name for c in table.columns if isinstance(c.type, Float)}
    known = {c.name for c in table.columns}

    def coerce(row: dict[str, Any]) -> dict[str, Any]:
        unknown = set(row) - known
        if unknown:
            raise DumpError(f"table {table.name} has no column {sorted(unknown)[0]!r}")
        for name in booleans & row.keys():
            if row[name] is not None:
                row[name] = bool(row[name])
        for name in floats & row.keys():
            if row[name] is not None:
                row[name] = float(row[name])
        return row

    return coerce


def load_table(connection: Connection, table: Table, rows: Iterable[dict[str, Any]]) -> int:
    """Insert ``rows`` into the (empty) ``table``; returns how many."""
    coerce = _coerce(table)
    batch: list[dict[str, Any]] = []
    count = 0
    for row in rows:
        batch.append(coerce(row))
        if len(batch) >= INSERT_BATCH:
            connection.execute(table.insert(), batch)
            count += len(batch)
            batch = []
    if batch:
        connection.execute(table.insert(), batch)
        count += len(batch)
    return count


def reset_sequences(connection: Connection, table: Table) -> None:
    """PostgreSQL: move a serial key's sequence past the loaded ids (SQLite does it itself),
    or the next insert would collide with a restored row."""
    if connection.dialect.name != "postgresql":
        return
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not isinstance(keys[0].type, Integer):
        return
    name, column = table.name, keys[0].name
    connection.execute(
        text(f'SELECT setval(pg_get_serial_sequence(:table, :column), '
             f'COALESCE(MAX("{column}"), 1), MAX("{column}") IS NOT NULL) FROM "{name}"'),
        {"table": name, "column": column},
    )
