"""Webhook delivery: signed POSTs from the outbox, at least once, in order per subscription.

Each server process starts one delivery worker process (``webhook_worker``), which runs
this loop: it looks for active webhook subscriptions with events past their cursor (or
manual redeliveries queued), claims one for itself (``EventStore.claim``: one worker per
subscription at a time, across processes and nodes), and sends its events in outbox
order, moving the cursor after each 2xx. A failure is
recorded in the delivery log and the subscription waits ``webhook_retry_base * 2^n``
seconds (at most 6 hours) before the same event is tried again; after
``webhook_give_up_after`` seconds of failures, or at once on ``410 Gone``, it is paused.
A crash between a 2xx and the cursor update sends that event again: receivers dedupe by
``webhook-id`` (the event id).

Every batch re-checks the URL with the import's SSRF rules (DNS may have changed), sends
to the checked address only (``webhook_sender``), never follows a redirect, and reads at
most ``SNIPPET_BYTES`` of the answer.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import logging
import secrets
import threading
import time
from typing import Any

from artifactd.config import Settings
from artifactd.errors import ValidationError
from artifactd.observability import (
    EVENT_DELIVERIES,
    EVENT_DELIVERY_SECONDS,
    EVENT_QUEUE_DEPTH,
)
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream, subscriptions
from artifactd.services.events.webhook_sender import Attempt, Sender
from artifactd.services.repos.import_source import AllowList, Source, check_url
from artifactd.storage.eventstore import DeliveryRow, EventRow, EventStore, SubscriptionRow

log = logging.getLogger("artifactd.events")

BATCH = 200  # events one pass sends before the next subscription gets a turn
# Delivered events are recorded (log rows and cursor, one transaction) this many at a time,
# or this many seconds after the last record, or when the subscription is given up. A crash
# in between sends the unrecorded ones again (receivers dedupe by ``webhook-id``): after a
# ``kill -9`` of the server the watchdog SIGKILLs this worker too, so nothing is recorded
# on the way out, and the claim lapses after CLAIM_SECONDS.
FLUSH_EVERY = 200
FLUSH_SECONDS = 0.05
# A claim lapses this long after its last renewal: a worker killed mid-batch holds up its
# subscriptions no longer than that. A live worker renews every RENEW_SECONDS.
CLAIM_SECONDS = 10.0
RENEW_SECONDS = 3.0
# Seconds an idle thread waits for a wake-up before it looks anyway (writes of other
# processes or nodes, back-off timers), and how long a woken thread lets a batch gather.
POLL = 0.1
COALESCE = 0.01
# After a pass that sent several events (a steady stream), a longer gathering: passes and
# their queries fall with the load, at some milliseconds of latency an event under load.
COALESCE_BUSY = 0.04
MAX_BACKOFF = 6 * 3600.0
SWEEP_EVERY = 300.0


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign_with_key(key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    return sign_with_key(secret_key(secret), event_id, timestamp, body)


def backoff(base: float, failures: int) -> float:
    return float(min(base * 2 ** max(failures - 1, 0), MAX_BACKOFF))


class Meter:
    """What delivery counts, on this process's metrics. The delivery worker process sends
    its counts to the server instead (``webhook_worker.PipeMeter``): /metrics is served there."""

    def __init__(self) -> None:
        self._delivered = EVENT_DELIVERIES.labels("delivered")
        self._failed = EVENT_DELIVERIES.labels("failed")
        self._retried = EVENT_DELIVERIES.labels("retried")

    def delivered(self, seconds: float) -> None:
        self._delivered.inc()
        EVENT_DELIVERY_SECONDS.observe(seconds)

    def failed(self) -> None:
        self._failed.inc()

    def retried(self) -> None:
        self._retried.inc()

    def depth(self, events: int) -> None:
        EVENT_QUEUE_DEPTH.set(events)

    def serving(self, due: bool) -> None:
        """After each pass: whether some webhook subscription was due (only then do outbox
        writes need to wake the loop)."""

    def flush(self) -> None:
        """The end of a pass over the subscriptions."""


@dataclasses.dataclass
class Held:
    """A subscription whose claim this loop holds, from its first event of a busy spell to
    the first pass that finds nothing more: under load a claim costs one write, not one per
    pass, and delivered events are recorded ``FLUSH_EVERY`` or ``FLUSH_SECONDS`` at a time.
    Each write of the loop takes SQLite's one write lock, which the server's creates need:
    fewer writes, fewer creates that wait for it."""

    cursor: int  # the last seq delivered; ahead of the stored cursor until ``done`` is recorded
    done: list[dict[str, object]] = dataclasses.field(default_factory=list)
    recorded: float = dataclasses.field(default_factory=time.monotonic)
    delivered: bool = False  # since the claim: the stored failure streak is over


class WebhookThread:
    """The delivery loop. It runs in the delivery worker process (``webhook_worker``) or,
    given a backend's settings and store directly, in a thread of any process."""

    def __init__(self, settings: Settings, store: EventStore, meter: Meter | None = None):
        self.settings = settings
        self.store = store
        self.meter = meter or Meter()
        self.worker = secrets.token_hex(8)
        self._stop = threading.Event()
        # Set by every outbox write of the server (and by redeliveries and resumes), so
        # that an idle loop neither polls the database often nor answers late.
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self.run, name="artifactd-webhooks", daemon=True)
        self._last_sweep = 0.0
        self._renewed = 0.0
        self._held: dict[str, Held] = {}
        self._sent = 0  # attempts of the last pass
        # Whether the last pass found a webhook subscription due: with none, outbox writes
        # do not wake the loop (it looks every POLL, and on subscription changes).
        self._serving = True

    def wake(self, *, changed: bool = True) -> None:
        """``changed``: a subscription changed (else only events were written, which
        matter only while some webhook subscription is due)."""
        if changed or self._serving:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop_soon(self) -> None:
        """End the loop after the attempt in flight."""
        self._stop.set()
        self._wake.set()

    def stop(self) -> None:
        self.stop_soon()
        if self._thread.is_alive():
            self._thread.join(timeout=self.settings.webhook_timeout + 5)

    def run(self) -> None:
        sender = Sender(self.settings.webhook_timeout)
        try:
            while not self._stop.is_set():
                try:
                    busy = self.run_once(sender)
                    self._maybe_sweep()
                except Exception:  # the loop must survive a database hiccup
                    log.exception("webhook delivery loop failed; retrying")
                    busy = False
                self.meter.flush()
                if busy:
                    continue  # a full batch: more is waiting
                # Wait for an outbox write (or POLL, for other processes' writes and
                # back-off timers), then a little longer, so that under load one pass
                # delivers many events: the per-pass queries are paid once per batch.
                self._wake.wait(POLL)
                self._wake.clear()
                self._stop.wait(COALESCE_BUSY if self._sent > 1 else COALESCE)
        finally:
            sender.close()
            self._let_go_all()

    def _let_go_all(self) -> None:
        """Record what was delivered and give every claim up (a clean stop): the next
        worker starts at once instead of waiting for the claims to lapse."""
        for sub_id in list(self._held):
            try:
                self._let_go(sub_id)
            except Exception:
                log.exception("could not release webhook subscription %s", sub_id)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = now
        retention = int(self.settings.event_retention * 1_000_000)
        self.store.sweep_outbox(now_us() - retention)
        self.meter.depth(self.store.outbox_depth())

    def run_once(self, sender: Sender) -> bool:
        """Serve every due subscription with work once; whether a batch was full."""
        now = now_us()
        full = False
        self._sent = 0
        due = self.store.due_webhooks(now, 50, self.worker)
        self._serving = bool(due)
        self.meter.serving(self._serving)
        # Held but no longer due: paused, deleted, or its claim lapsed to another worker.
        for sub_id in self._held.keys() - {sub.id for sub in due}:
            self._let_go(sub_id)
        for sub in due:
            if self._stop.is_set():
                break
            held = self._held.get(sub.id)
            cursor = max(held.cursor, sub.cursor_seq) if held else sub.cursor_seq
            pending = self.store.pending_redeliveries(sub.id, BATCH)
            rows = self.store.events_after(sub, cursor, BATCH)
            if not pending and not rows:
                if held is not None:  # the busy spell is over
                    self._let_go(sub.id)
                continue
            if held is None:
                if not self.store.claim(sub.id, self.worker, now, now + self._claim_us()):
                    continue
                claimed = self.store.get_subscription(sub.account_id, sub.id)
                if claimed is None:
                    continue
                # Read before the claim: another worker may have served them meanwhile.
                if claimed.cursor_seq != sub.cursor_seq:
                    rows = self.store.events_after(claimed, claimed.cursor_seq, BATCH)
                if pending:
                    pending = self.store.pending_redeliveries(sub.id, BATCH)
                sub = claimed
                held = self._held[sub.id] = Held(sub.cursor_seq)
                self._renewed = time.monotonic()
            if held.delivered:
                sub = dataclasses.replace(sub, failures=0, first_failure_us=0)
            full = self._serve(sender, sub, held, pending, rows) or full
        return full

    def _check(self, sub: SubscriptionRow) -> Source | Attempt:
        """The URL checked again (DNS may have changed since the subscription was made),
        once per batch."""
        try:
            return check_url(sub.url, AllowList.parse(self.settings.webhook_allow_hosts))
        except ValidationError as exc:
            return Attempt(False, None, f"refused: {exc.message}"[:500], 0.0, None)

    def _serve(self, sender: Sender, sub: SubscriptionRow, held: Held, pending: list[DeliveryRow],
               rows: list[EventRow]) -> bool:
        target = self._check(sub)
        key = secret_key(sub.secret or "")
        for queued in pending:
            event = self.store.event_by_id(sub, queued.event_id)
            if event is None:  # swept by retention
                self.store.record_attempt(self._log(sub, queued.event_id, queued.seq, Attempt(
                    False, None, "event no longer retained", 0.0, None)), replaces=queued.id)
                continue
            attempt = self._send(sender, target, key, sub, event)
            self.store.record_attempt(self._log(sub, event.id, event.seq, attempt),
                                      replaces=queued.id)
            if not attempt.ok:
                self._fail(sub, held, attempt)
                return False
        for event in rows:
            if self._stop.is_set():
                return False
            attempt = self._send(sender, target, key, sub, event)
            if not attempt.ok:
                self._fail(sub, held, attempt, self._log(sub, event.id, event.seq, attempt))
                return False
            held.done.append(self._log(sub, event.id, event.seq, attempt))
            held.cursor = event.seq
            if not held.delivered:  # a delivery ends the failure streak
                held.delivered = True
                sub = dataclasses.replace(sub, failures=0, first_failure_us=0)
            if len(held.done) >= FLUSH_EVERY and not self._record(sub.id, held):
                return False
        if held.done and time.monotonic() - held.recorded >= FLUSH_SECONDS:
            self._record(sub.id, held)
        return len(rows) >= BATCH

    def _record(self, sub_id: str, held: Held) -> bool:
        """Record delivered events and move the cursor past them (a crash before this sends
        them again: at least once, never lost); the claim is renewed with them. False when
        the claim had lapsed to another worker, which now serves the subscription."""
        now = time.monotonic()
        held.recorded = now
        if not held.done:
            return True
        still_held = self.store.delivered(sub_id, self.worker, held.cursor, held.done,
                                          now_us() + self._claim_us())
        held.done = []
        self._renewed = now
        if not still_held:
            log.warning("webhook %s: the claim lapsed to another worker", sub_id)
            self._held.pop(sub_id, None)
        return still_held

    def _let_go(self, sub_id: str) -> None:
        """Give a held subscription up, in one transaction with its last deliveries."""
        held = self._held.pop(sub_id)
        values: dict[str, Any] = {"failures": 0, "first_failure_us": 0} if held.delivered else {}
        self.store.release(sub_id, self.worker, cursor_seq=held.cursor if held.done else None,
                           attempts=held.done, **values)

    def _claim_us(self) -> int:
        """Long enough for one attempt to time out: a live claim never lapses mid-send."""
        seconds = max(CLAIM_SECONDS, self.settings.webhook_timeout + 5)
        return int(seconds * 1_000_000)

    def _send(self, sender: Sender, target: Source | Attempt, key: bytes, sub: SubscriptionRow,
              event: EventRow) -> Attempt:
        self._sent += 1
        if isinstance(target, Attempt):  # the URL was refused: every event of the batch fails
            attempt = target
        else:
            now = time.monotonic()
            if now - self._renewed >= RENEW_SECONDS:
                self._renewed = now
                self.store.renew(sub.id, self.worker, now_us() + self._claim_us())
            body = event_stream.document_bytes(event, sub.id)
            timestamp = int(time.time())
            attempt = sender.post(target, sub.url or "", {
                "webhook-id": event.id, "webhook-timestamp": str(timestamp),
                "webhook-signature": sign_with_key(key, event.id, timestamp, body)}, body)
        if attempt.ok:
            self.meter.delivered(max(now_us() - event.created_us, 0) / 1e6)
        else:
            self.meter.failed()
            log.info("webhook %s: event %s not delivered: %s", sub.id, event.id, attempt.error)
        return attempt

    @staticmethod
    def _log(sub: SubscriptionRow, event_id: str, seq: int, attempt: Attempt) -> dict[str, object]:
        return {
            "subscription_id": sub.id, "event_id": event_id, "seq": seq,
            "outcome": "delivered" if attempt.ok else "failed",
            "status_code": attempt.status_code, "error": attempt.error,
            "latency_ms": round(attempt.latency_ms, 3), "response_snippet": attempt.snippet,
            "attempted_us": now_us(),
        }

    def _fail(self, sub: SubscriptionRow, held: Held, failed: Attempt,
              failed_row: dict[str, object] | None = None) -> None:
        """Give the subscription up after a failed attempt, with back-off (or paused), in one
        transaction with the deliveries before it and the failed attempt's log row."""
        self._held.pop(sub.id, None)
        settings = self.settings
        now = now_us()
        failures = sub.failures + 1
        first = sub.first_failure_us or now
        values: dict[str, Any] = {
            "failures": failures, "first_failure_us": first,
            "next_attempt_us": now + int(backoff(settings.webhook_retry_base, failures) * 1e6),
        }
        if failed.gone:
            values.update(state=subscriptions.PAUSED,
                          paused_reason="the receiver answered 410 Gone")
        elif now - first >= settings.webhook_give_up_after * 1_000_000:
            values.update(state=subscriptions.PAUSED, paused_reason=(
                f"deliveries failed for {settings.webhook_give_up_after:g} s "
                f"({failures} attempts); last: {failed.error}")[:500])
        else:
            self.meter.retried()
        attempts = [*held.done, *([failed_row] if failed_row else [])]
        self.store.release(sub.id, self.worker, cursor_seq=held.cursor if held.done else None,
                           attempts=attempts, **values)
