"""The event tables: subscriptions, the outbox they read, and the log of webhook attempts.

The outbox is written by ``MetadataStore`` inside each change's transaction; this store
reads it per subscription (``cursor_seq`` is the last outbox ``seq`` a subscription has
delivered or had acknowledged) and claims webhook subscriptions for one worker at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from artifactd.storage import outboxseq
from artifactd.storage.schema import event_deliveries, event_outbox, event_subscriptions


@dataclasses.dataclass(frozen=True)
class SubscriptionRow:
    id: str
    account_id: str
    name: str
    source_type: str
    namespace: str | None
    repo_name: str | None
    event_types: str  # JSON list
    destination: str
    url: str | None
    secret: str | None
    state: str
    paused_reason: str | None
    cursor_seq: int
    failures: int
    first_failure_us: int
    next_attempt_us: int
    claimed_by: str | None
    claimed_until_us: int
    created_us: int
    updated_us: int

    @property
    def types(self) -> list[str]:
        value = json.loads(self.event_types)
        return [str(v) for v in value] if isinstance(value, list) else []


@dataclasses.dataclass(frozen=True)
class EventRow:
    seq: int
    id: str
    account_id: str
    type: str
    namespace: str
    repo_name: str
    payload: str
    created_us: int


@dataclasses.dataclass(frozen=True)
class DeliveryRow:
    id: int
    subscription_id: str
    event_id: str
    seq: int
    outcome: str
    status_code: int | None
    error: str | None
    latency_ms: float | None
    response_snippet: str | None
    attempted_us: int


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _make(cls: Any, row: Any) -> Any:
    return cls(**{name: getattr(row, name) for name in _field_names(cls)})


# The delivery loop's reads, built once with bind parameters: it runs them on every pass,
# and building an expression (and its cache key) costs more than SQLite takes to answer.
_DUE_WEBHOOKS = select(event_subscriptions).where(
    event_subscriptions.c.destination == "webhook",
    event_subscriptions.c.state == "active",
    event_subscriptions.c.next_attempt_us <= bindparam("now"),
    or_(event_subscriptions.c.claimed_until_us < bindparam("now"),
        event_subscriptions.c.claimed_by == bindparam("worker")),
).order_by(event_subscriptions.c.next_attempt_us).limit(bindparam("limit"))
_PENDING_REDELIVERIES = select(event_deliveries).where(
    event_deliveries.c.subscription_id == bindparam("subscription"),
    event_deliveries.c.outcome == "pending",
).order_by(event_deliveries.c.id).limit(bindparam("limit"))


@functools.cache
def _events_after(by_namespace: bool, by_repo: bool, postgres: bool) -> Any:
    o = event_outbox
    conditions = [o.c.seq > bindparam("after"), o.c.account_id == bindparam("account"),
                  o.c.type.in_(bindparam("types", expanding=True))]
    if postgres:
        # Only seqs that no open transaction can still write below (storage/outboxseq.py).
        conditions.append(o.c.seq < outboxseq.READ_HORIZON)
    if by_namespace:
        conditions.append(o.c.namespace == bindparam("namespace"))
    if by_repo:
        conditions.append(o.c.repo_name == bindparam("repo"))
    return select(o).where(*conditions).order_by(o.c.seq).limit(bindparam("limit"))


class EventStore:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # -- subscriptions -------------------------------------------------------------------
    def newest_seq(self) -> int:
        """Where a new cursor starts: every event at or below it is final. On PostgreSQL
        that is just below the read horizon, so an event still being written is read by a
        subscription created meanwhile (with, possibly, a few that committed just before)."""
        with self._tx() as conn:
            if self.postgres:
                return int(conn.execute(select(outboxseq.READ_HORIZON - 1)).scalar_one())
            return int(conn.execute(select(func.coalesce(func.max(event_outbox.c.seq), 0)))
                       .scalar_one())

    def insert_subscription(self, row: SubscriptionRow) -> None:
        with self._tx() as conn:
            conn.execute(insert(event_subscriptions), dataclasses.asdict(row))

    def get_subscription(self, account_id: str, subscription_id: str) -> SubscriptionRow | None:
        with self._tx() as conn:
            row = conn.execute(select(event_subscriptions).where(
                event_subscriptions.c.id == subscription_id,
                event_subscriptions.c.account_id == account_id)).first()
        return _make(SubscriptionRow, row) if row else None

    def list_subscriptions(self, account_id: str) -> list[SubscriptionRow]:
        with self._tx() as conn:
            return [_make(SubscriptionRow, r) for r in conn.execute(
                select(event_subscriptions).where(event_subscriptions.c.account_id == account_id)
                .order_by(event_subscriptions.c.created_us, event_subscriptions.c.id))]

    def update_subscription(self, subscription_id: str, **values: Any) -> None:
        with self._tx() as conn:
            conn.execute(update(event_subscriptions)
                         .where(event_subscriptions.c.id == subscription_id).values(**values))

    def delete_subscription(self, subscription_id: str) -> bool:
        with self._tx() as conn:
            conn.execute(delete(event_deliveries)
                         .where(event_deliveries.c.subscription_id == subscription_id))
            return bool(conn.execute(delete(event_subscriptions)
                                     .where(event_subscriptions.c.id == subscription_id)).rowcount)

    # -- reading the outbox --------------------------------------------------------------
    @staticmethod
    def _matching(sub: SubscriptionRow) -> Any:
        o = event_outbox
        condition = and_(o.c.account_id == sub.account_id)
        if sub.namespace is not None:
            condition = and_(condition, o.c.namespace == sub.namespace)
        if sub.repo_name is not None:
            condition = and_(condition, o.c.repo_name == sub.repo_name)
        return and_(condition, o.c.type.in_(sub.types))

    def events_after(self, sub: SubscriptionRow, after_seq: int, limit: int) -> list[EventRow]:
        statement = _events_after(sub.namespace is not None, sub.repo_name is not None,
                                  self.postgres)
        with self._tx() as conn:
            return [_make(EventRow, r) for r in conn.execute(statement, {
                "after": after_seq, "account": sub.account_id, "types": sub.types,
                "namespace": sub.namespace, "repo": sub.repo_name, "limit": limit})]

    def count_after(self, sub: SubscriptionRow, after_seq: int) -> int:
        with self._tx() as conn:
            return int(conn.execute(select(func.count()).select_from(event_outbox).where(
                event_outbox.c.seq > after_seq, self._matching(sub))).scalar_one())

    def event_by_id(self, sub: SubscriptionRow, event_id: str) -> EventRow | None:
        with self._tx() as conn:
            row = conn.execute(select(event_outbox).where(
                event_outbox.c.id == event_id, self._matching(sub))).first()
        return _make(EventRow, row) if row else None

    def events_between(self, sub: SubscriptionRow, start_us: int, end_us: int,
                       limit: int) -> list[EventRow]:
        with self._tx() as conn:
            return [_make(EventRow, r) for r in conn.execute(
                select(event_outbox).where(
                    event_outbox.c.created_us >= start_us, event_outbox.c.created_us <= end_us,
                    self._matching(sub))
                .order_by(event_outbox.c.seq).limit(limit))]

    def sweep_outbox(self, older_than_us: int) -> int:
        with self._tx() as conn:
            return int(conn.execute(delete(event_outbox)
                                    .where(event_outbox.c.created_us < older_than_us)).rowcount)

    def outbox_depth(self) -> int:
        """Events not yet delivered or acknowledged by every active subscription (an upper bound)."""
        with self._tx() as conn:
            low = conn.execute(select(func.min(event_subscriptions.c.cursor_seq))
                               .where(event_subscriptions.c.state == "active")).scalar_one()
            if low is None:
                return 0
            return int(conn.execute(select(func.count()).select_from(event_outbox)
                                    .where(event_outbox.c.seq > low)).scalar_one())

    # -- webhook workers -----------------------------------------------------------------
    def due_webhooks(self, now_us: int, limit: int, worker: str = "") -> list[SubscriptionRow]:
        """Active webhook subscriptions past their back-off that nobody else holds a live
        claim on (``worker``'s own claims included)."""
        with self._tx() as conn:
            return [_make(SubscriptionRow, r) for r in conn.execute(
                _DUE_WEBHOOKS, {"now": now_us, "worker": worker, "limit": limit})]

    def claim(self, subscription_id: str, worker: str, now_us: int, until_us: int) -> bool:
        """Take the subscription for ``worker`` unless another worker holds a live claim.

        On PostgreSQL the row is read ``FOR UPDATE SKIP LOCKED`` first, so concurrent
        workers pass over each other's rows instead of queueing on them; on SQLite the
        conditional update alone decides (writers are serialised).
        """
        with self._tx() as conn:
            if self.postgres and conn.execute(
                select(event_subscriptions.c.id)
                .where(event_subscriptions.c.id == subscription_id)
                .with_for_update(skip_locked=True)
            ).first() is None:
                return False
            return bool(conn.execute(update(event_subscriptions).where(
                event_subscriptions.c.id == subscription_id,
                event_subscriptions.c.state == "active",
                or_(event_subscriptions.c.claimed_until_us < now_us,
                    event_subscriptions.c.claimed_by == worker),
            ).values(claimed_by=worker, claimed_until_us=until_us)).rowcount)

    def renew(self, subscription_id: str, worker: str, until_us: int) -> None:
        with self._tx() as conn:
            conn.execute(update(event_subscriptions).where(
                event_subscriptions.c.id == subscription_id,
                event_subscriptions.c.claimed_by == worker,
            ).values(claimed_until_us=until_us))

    def release(self, subscription_id: str, worker: str, *, cursor_seq: int | None = None,
                attempts: Sequence[dict[str, Any]] = (), **values: Any) -> None:
        """End the claim, in one transaction with the log rows of the attempts not yet
        recorded and the cursor moved to ``cursor_seq`` (the last event delivered)."""
        with self._tx() as conn:
            if attempts:
                conn.execute(insert(event_deliveries), list(attempts))
            if cursor_seq is not None:
                conn.execute(update(event_subscriptions).where(
                    event_subscriptions.c.id == subscription_id,
                    event_subscriptions.c.claimed_by == worker,
                    event_subscriptions.c.cursor_seq < cursor_seq,
                ).values(cursor_seq=cursor_seq))
            conn.execute(update(event_subscriptions).where(
                event_subscriptions.c.id == subscription_id,
                event_subscriptions.c.claimed_by == worker,
            ).values(claimed_by=None, claimed_until_us=0, **values))

    def delivered(self, subscription_id: str, worker: str, seq: int,
                  attempts: Sequence[dict[str, Any]], until_us: int) -> bool:
        """Delivered events, in one transaction: their log rows, the cursor after them and
        the claim renewed to ``until_us``. False when ``worker`` no longer holds the claim
        (it lapsed and another worker took it): the cursor is then left to that worker."""
        with self._tx() as conn:
            conn.execute(insert(event_deliveries), list(attempts))
            held = conn.execute(update(event_subscriptions).where(
                event_subscriptions.c.id == subscription_id,
                event_subscriptions.c.claimed_by == worker,
            ).values(claimed_until_us=until_us, failures=0, first_failure_us=0)).rowcount
            if held:
                conn.execute(update(event_subscriptions).where(
                    event_subscriptions.c.id == subscription_id,
                    event_subscriptions.c.cursor_seq < seq,
                ).values(cursor_seq=seq))
            return bool(held)

    # -- the delivery log ----------------------------------------------------------------
    def record_attempt(self, row: dict[str, Any], *, replaces: int | None = None) -> None:
        with self._tx() as conn:
            if replaces is not None:
                conn.execute(delete(event_deliveries).where(event_deliveries.c.id == replaces))
            conn.execute(insert(event_deliveries), row)

    def pending_redeliveries(self, subscription_id: str, limit: int) -> list[DeliveryRow]:
        with self._tx() as conn:
            return [_make(DeliveryRow, r) for r in conn.execute(
                _PENDING_REDELIVERIES, {"subscription": subscription_id, "limit": limit})]

    def has_pending(self, subscription_id: str) -> bool:
        return bool(self.pending_redeliveries(subscription_id, 1))

    def queue_redeliveries(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            with self._tx() as conn:
                conn.execute(insert(event_deliveries), list(rows))

    def list_deliveries(self, subscription_id: str, limit: int,
                        before_id: int | None) -> list[DeliveryRow]:
        query = select(event_deliveries).where(
            event_deliveries.c.subscription_id == subscription_id)
        if before_id is not None:
            query = query.where(event_deliveries.c.id < before_id)
        with self._tx() as conn:
            return [_make(DeliveryRow, r) for r in conn.execute(
                query.order_by(event_deliveries.c.id.desc()).limit(limit))]
