"""Analytics: recording events in batches, and answering grouped queries over them.

Recording never waits on the database: ``EventRecorder`` appends to an in-memory buffer
(a deque append is atomic under the GIL) and a background thread writes the buffer in one
multi-row insert every ``FLUSH_INTERVAL`` seconds. If the database falls behind and the
buffer reaches ``MAX_BUFFER`` events, new events are dropped and counted (the
``artifactd_events_dropped_total`` metric) rather than growing memory without bound.
Events older than ``RETENTION_DAYS`` are deleted by the same thread once an hour.

One caller's event must never cost another's: text is made safe when the event is recorded
(tokens redacted, lone surrogates and U+0000 replaced: ``artifactd.redact``; names cut to
the column width, which PostgreSQL enforces), and if a batch insert still fails the batch is
written again row by row, so only the rows the database refuses are dropped (and counted).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from artifactd.errors import ValidationError
from artifactd.redact import redact
from artifactd.services.backend import Backend
from artifactd.services.clock import iso, now_us
from artifactd.services.events import events as domain_events
from artifactd.storage.events import (
    DIMENSIONS,
    NAME_WIDTH,
    TIME_DIMENSIONS,
    Condition,
    EventStore,
    Order,
)

log = logging.getLogger("artifactd.analytics")

FLUSH_INTERVAL = 0.5  # seconds: how stale a query may be for another worker's events
MAX_BUFFER = 100_000  # events held in memory at most (~20 MB) before dropping
RETENTION_DAYS = 31  # the spec: metrics can be queried for the past 31 days
PURGE_INTERVAL = 3600.0
# Row-by-row retry gives up after this many refusals in a row: then the database is failing,
# not one row, and retrying the rest of a large batch one by one would only stall the writer.
MAX_CONSECUTIVE_ROW_FAILURES = 20
MAX_LIMIT = 10_000
MAX_QUANTILE_ROWS = 1_000_000
QUANTILES = {"P25": 0.25, "P50": 0.50, "P75": 0.75, "P90": 0.90, "P95": 0.95, "P99": 0.99,
             "P999": 0.999}


class EventRecorder:
    def __init__(self, store: EventStore, on_drop: Callable[[int], None] | None = None):
        self.store = store
        self.on_drop = on_drop
        self.buffer: deque[dict[str, Any]] = deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge = 0.0

    def __call__(self, event: domain_events.Event) -> None:
        if len(self.buffer) >= MAX_BUFFER:
            if self.on_drop:
                self.on_drop(1)
            return
        self.buffer.append({
            "account_id": event.account_id, "namespace": redact(event.namespace)[:NAME_WIDTH],
            "repo_name": redact(event.repo_name)[:NAME_WIDTH], "event_kind": event.event_kind,
            "event_type": event.event_type,
            "error_message": None if event.error_message is None else redact(event.error_message),
            "datetime_us": event.datetime_us, "duration_ms": round(event.duration_ms, 3),
        })

    def flush(self) -> None:
        with self._flush_lock:
            rows = []
            while self.buffer:
                rows.append(self.buffer.popleft())
            if not rows:
                return
            try:
                self.store.insert_many(rows)
            except Exception:
                log.warning("could not write a batch of %d analytics events; writing them one by one",
                            len(rows), exc_info=True)
                lost = self._insert_one_by_one(rows)
                if lost and self.on_drop:
                    self.on_drop(lost)

    def _insert_one_by_one(self, rows: list[dict[str, Any]]) -> int:
        """Write each row in its own transaction; the number of rows dropped."""
        lost = 0
        refused_in_a_row = 0
        for index, row in enumerate(rows):
            try:
                self.store.insert_many([row])
                refused_in_a_row = 0
            except Exception:
                lost += 1
                refused_in_a_row += 1
                log.exception("dropping an analytics event the database refused")
                if refused_in_a_row >= MAX_CONSECUTIVE_ROW_FAILURES:
                    rest = len(rows) - index - 1
                    log.error("the database refused %d events in a row; dropping the other %d",
                              refused_in_a_row, rest)
                    return lost + rest
        return lost

    def purge(self) -> int:
        return self.store.delete_older_than(now_us() - RETENTION_DAYS * 86_400 * 1_000_000)

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()
            if time.monotonic() - self._last_purge > PURGE_INTERVAL:
                self._last_purge = time.monotonic()
                try:
                    self.purge()
                except Exception:
                    log.exception("event retention purge failed")
        self.flush()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="artifactd-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)


def install_recorder(backend: Backend, on_drop: Callable[[int], None] | None = None) -> EventRecorder:
    recorder = EventRecorder(EventStore(backend.meta.engine), on_drop)
    domain_events.add_sink(backend, recorder)
    backend.extras["event_recorder"] = recorder
    return recorder


# -- queries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupsQuery:
    account_id: str
    conditions: list[Condition]
    dimensions: list[str]
    order: list[Order]
    limit: int
    want_quantiles: bool


def parse_time(value: object, field: str) -> int:
    """GraphQL ``Time``/``Date`` scalars: RFC 3339 strings (``2026-01-01T00:00:00Z``)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: expected an RFC 3339 time string")
    text = value.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{field}: {value!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1_000_000)


_OPS = {"_geq": ">=", "_gt": ">", "_leq": "<=", "_lt": "<"}


def parse_filter(raw: dict[str, Any]) -> list[Condition]:
    """Translate ``{datetime_geq: ..., eventKind: "action", ...}`` into AND-ed conditions."""
    conditions = []
    for key, value in raw.items():
        if value is None:
            continue
        op = "="
        dimension = key
        for suffix, symbol in _OPS.items():
            if key.endswith(suffix):
                dimension, op = key[: -len(suffix)], symbol
                break
        if dimension not in DIMENSIONS:
            raise ValidationError(f"unknown filter field {key!r}")
        if dimension in TIME_DIMENSIONS:
            value = parse_time(value, key)
            if dimension == "date" and op == "=":
                value -= value % (86_400 * 1_000_000)
        conditions.append(Condition(dimension, op, value))
    return conditions


def parse_order(items: Sequence[str]) -> list[Order]:
    orders = []
    for item in items:
        key, _, direction = item.rpartition("_")
        if direction not in ("ASC", "DESC") or (
            key not in ("count", "sum_durationMs", "avg_durationMs") and key not in DIMENSIONS
        ):
            raise ValidationError(f"cannot order by {item!r}")
        orders.append(Order(key, direction == "DESC"))
    return orders


def _format_dimension(name: str, value: Any) -> Any:
    if name == "date":
        return datetime.fromtimestamp(int(value) / 1_000_000, tz=UTC).strftime("%Y-%m-%d")
    if name in TIME_DIMENSIONS:
        return iso(int(value)) or "1970-01-01T00:00:00.000000Z"
    if name == "errorMessage":
        return value or ""
    return value


def _quantile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    # Nearest-rank on the sorted sample (what analytics engines report for quantiles).
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def flush_local(backend: Backend) -> None:
    recorder = backend.extras.get("event_recorder")
    if isinstance(recorder, EventRecorder):
        recorder.flush()


def query_groups(backend: Backend, query: GroupsQuery) -> list[dict[str, Any]]:
    if not 1 <= query.limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}")
    flush_local(backend)
    store = EventStore(backend.meta.engine)
    rows = store.aggregate(query.account_id, query.conditions, query.dimensions, query.order,
                           query.limit)
    if query.want_quantiles:
        samples: dict[tuple[Any, ...], list[float]] = defaultdict(list)
        for key, duration in store.durations(query.account_id, query.conditions,
                                             query.dimensions, MAX_QUANTILE_ROWS):
            samples[key].append(duration)
        for row in rows:
            ordered = sorted(samples.get(tuple(row[d] for d in query.dimensions), []))
            row["quantiles"] = {f"durationMs{k}": _quantile(ordered, f) for k, f in QUANTILES.items()}
    for row in rows:
        row["dimensions"] = {d: _format_dimension(d, row.pop(d)) for d in query.dimensions}
    return rows
