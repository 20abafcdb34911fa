"""SQL for the analytics events: batch insert, retention, and grouped aggregation.

Dimensions are SQL expressions over the ``events`` row; time buckets are integer
truncations of ``datetime_us`` so that they group identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Engine, delete, func, insert, literal, select

from artifactd.storage.schema import events
from artifactd.storage.writerlock import WriterLock

MINUTE_US = 60 * 1_000_000
# Width of the namespace and repo-name columns: PostgreSQL refuses longer values (SQLite
# does not), and an error event can name a repo that failed validation for being too long.
NAME_WIDTH: int = events.c.repo_name.type.length  # type: ignore[attr-defined]

# Dimension name -> (SQL expression, bucket width in microseconds for time dimensions).
_TIME_BUCKETS = {
    "date": 1440 * MINUTE_US,
    "datetimeMinute": MINUTE_US,
    "datetimeFiveMinutes": 5 * MINUTE_US,
    "datetimeFifteenMinutes": 15 * MINUTE_US,
    "datetimeHour": 60 * MINUTE_US,
    "datetimeSixHours": 360 * MINUTE_US,
}


def _bucket(width: int) -> ColumnElement[Any]:
    # Floor division (``//``) renders as integer division on both databases; ``/`` would be
    # SQLAlchemy's true division and return the timestamp unbucketed.
    return (events.c.datetime_us // literal(width, BigInteger)) * literal(width, BigInteger)


def dimension_expr(name: str) -> ColumnElement[Any]:
    if name in _TIME_BUCKETS:
        return _bucket(_TIME_BUCKETS[name])
    return {
        "repository": events.c.namespace + literal("/") + events.c.repo_name,
        "repositoryNamespace": events.c.namespace,
        "repositoryName": events.c.repo_name,
        "eventKind": events.c.event_kind,
        "eventType": events.c.event_type,
        "errorMessage": func.coalesce(events.c.error_message, literal("")),
        "datetime": events.c.datetime_us,
    }[name]


DIMENSIONS = (
    "repository", "repositoryNamespace", "repositoryName", "eventKind", "eventType",
    "errorMessage", "date", "datetime", "datetimeMinute", "datetimeFiveMinutes",
    "datetimeFifteenMinutes", "datetimeHour", "datetimeSixHours",
)
TIME_DIMENSIONS = frozenset({"datetime", *_TIME_BUCKETS})


@dataclass(frozen=True)
class Condition:
    dimension: str
    op: str  # one of = >= > <= <
    value: Any


@dataclass(frozen=True)
class Order:
    key: str  # "count", "sum_durationMs", "avg_durationMs" or a dimension name
    descending: bool


class EventStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._writer_lock = WriterLock(engine)

    def insert_many(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self._writer_lock.held(), self.engine.begin() as conn:
                conn.execute(insert(events), list(rows))

    def delete_older_than(self, cutoff_us: int) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(events).where(events.c.datetime_us < cutoff_us)).rowcount)

    def _where(self, account_id: str, conditions: Sequence[Condition]) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [events.c.account_id == account_id]
        for cond in conditions:
            expr = dimension_expr(cond.dimension)
            clauses.append({
                "=": lambda e, v: e == v, ">=": lambda e, v: e >= v, ">": lambda e, v: e > v,
                "<=": lambda e, v: e <= v, "<": lambda e, v: e < v,
            }[cond.op](expr, cond.value))
        return clauses

    def aggregate(
        self,
        account_id: str,
        conditions: Sequence[Condition],
        group_by: Sequence[str],
        order: Sequence[Order],
        limit: int,
    ) -> list[dict[str, Any]]:
        """Rows of ``{dimension: value, ..., count, sum, avg}``, ordered and limited in SQL."""
        dims = [dimension_expr(name).label(f"d_{name}") for name in group_by]
        count = func.count().label("count")
        total = func.coalesce(func.sum(events.c.duration_ms), 0.0).label("sum_durationMs")
        average = func.coalesce(func.avg(events.c.duration_ms), 0.0).label("avg_durationMs")
        query = select(*dims, count, total, average).where(*self._where(account_id, conditions))
        if dims:
            query = query.group_by(*dims)
        aggregates: dict[str, ColumnElement[Any]] = {
            "count": count, "sum_durationMs": total, "avg_durationMs": average,
        }
        grouped = dict(zip(group_by, dims, strict=True))
        order_by = []
        for wanted in order:
            # A grouped dimension is ordered by its label: a second copy of its expression
            # has bind parameters of its own, which PostgreSQL does not see as the GROUP BY
            # expression ("must appear in the GROUP BY clause").
            column = aggregates.get(wanted.key)
            if column is None:
                column = grouped.get(wanted.key)
            if column is None:
                column = dimension_expr(wanted.key)
            order_by.append(column.desc() if wanted.descending else column.asc())
        order_by += [d.asc() for d in dims]  # deterministic ties
        query = query.order_by(*order_by).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        result = []
        for row in rows:
            mapping = row._mapping
            if not mapping["count"]:
                continue  # an ungrouped aggregate over no events: no group at all
            item: dict[str, Any] = {name: mapping[f"d_{name}"] for name in group_by}
            item.update(count=int(mapping["count"]), sum=float(mapping["sum_durationMs"]),
                        avg=float(mapping["avg_durationMs"]))
            result.append(item)
        return result

    def durations(
        self, account_id: str, conditions: Sequence[Condition], group_by: Sequence[str],
        max_rows: int,
    ) -> list[tuple[tuple[Any, ...], float]]:
        """(group key, duration) pairs for quantiles, at most ``max_rows`` of them."""
        dims = [dimension_expr(name) for name in group_by]
        query = (select(*dims, events.c.duration_ms)
                 .where(*self._where(account_id, conditions)).limit(max_rows))
        with self.engine.connect() as conn:
            return [(tuple(row[:-1]), float(row[-1])) for row in conn.execute(query)]
