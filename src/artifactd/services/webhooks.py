"""Webhook delivery: signed POSTs from the outbox, at least once, in order per subscription.

Each server process runs one ``WebhookThread``. It looks for active webhook subscriptions
with events past their cursor (or manual redeliveries queued), claims one for itself
(``EventStore.claim``: one worker per subscription at a time, across processes and nodes),
and sends its events in outbox order, moving the cursor after each 2xx. A failure is
recorded in the delivery log and the subscription waits ``webhook_retry_base * 2^n``
seconds (at most 6 hours) before the same event is tried again; after
``webhook_give_up_after`` seconds of failures, or at once on ``410 Gone``, it is paused.
A crash between a 2xx and the cursor update sends that event again: receivers dedupe by
``webhook-id`` (the event id).

Every attempt re-checks the URL with the import's SSRF rules (DNS may have changed), sends
to the checked address only, never follows a redirect, and reads at most
``SNIPPET_BYTES`` of the answer.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from artifactd.errors import ValidationError
from artifactd.observability import (
    EVENT_DELIVERIES,
    EVENT_DELIVERY_SECONDS,
    EVENT_QUEUE_DEPTH,
)
from artifactd.services import event_stream, subscriptions
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.import_source import AllowList, Source, check_url
from artifactd.storage.eventstore import EventRow, EventStore, SubscriptionRow

log = logging.getLogger("artifactd.events")

BATCH = 200  # events one claim sends before the next subscription gets a turn
FLUSH_EVERY = 20  # delivered events recorded (log rows and cursor) per transaction
# A claim lapses this long after its last renewal: a worker killed mid-batch holds up its
# subscriptions no longer than that. A live worker renews every RENEW_SECONDS.
CLAIM_SECONDS = 10.0
RENEW_SECONDS = 3.0
IDLE_POLL = 0.02  # seconds between looks for work when there is none
SNIPPET_BYTES = 2048
MAX_BACKOFF = 6 * 3600.0
SWEEP_EVERY = 300.0
USER_AGENT = "artifactd-webhooks/1"


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature header value: ``v1,<base64 HMAC-SHA256>``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{event_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def backoff(base: float, failures: int) -> float:
    return float(min(base * 2 ** max(failures - 1, 0), MAX_BACKOFF))


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None
    latency_ms: float
    snippet: str | None
    gone: bool = False


def _pinned(source: Source, url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    address = f"[{source.address}]" if ":" in source.address else source.address
    target = parts._replace(netloc=f"{address}:{source.port}").geturl()
    host = source.host if parts.port is None else f"{source.host}:{parts.port}"
    if ":" in source.host:
        host = f"[{source.host}]" + (f":{parts.port}" if parts.port else "")
    return target, {"Host": host}


def post(backend: Backend, client: httpx.Client, sub: SubscriptionRow, event_id: str,
         body: bytes) -> Attempt:
    started = time.monotonic()

    def done(ok: bool, status: int | None, error: str | None, snippet: str | None = None,
             gone: bool = False) -> Attempt:
        return Attempt(ok, status, error, (time.monotonic() - started) * 1000, snippet, gone)

    try:
        source = check_url(sub.url, AllowList.parse(backend.settings.webhook_allow_hosts))
    except ValidationError as exc:
        return done(False, None, f"refused: {exc.message}"[:500])
    target, headers = _pinned(source, sub.url or "")
    timestamp = int(time.time())
    headers.update({
        "content-type": "application/json", "user-agent": USER_AGENT,
        "webhook-id": event_id, "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(sub.secret or "", event_id, timestamp, body),
    })
    try:
        with client.stream("POST", target, content=body, headers=headers,
                           extensions={"sni_hostname": source.host}) as response:
            snippet = b""
            for chunk in response.iter_bytes():
                snippet += chunk
                if len(snippet) >= SNIPPET_BYTES:
                    break  # the rest (maybe a gigabyte) is never read: the stream is closed
            text = snippet[:SNIPPET_BYTES].decode(errors="replace")
            status = response.status_code
    except httpx.TimeoutException:
        return done(False, None, "timeout: no answer within "
                    f"{backend.settings.webhook_timeout:g} s")
    except httpx.HTTPError as exc:
        return done(False, None, f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= status < 300:
        return done(True, status, None, text)
    reason = "redirects are not followed" if 300 <= status < 400 else f"HTTP {status}"
    return done(False, status, reason, text, gone=status == 410)


class WebhookThread:
    def __init__(self, backend: Backend):
        self.backend = backend
        self.store: EventStore = subscriptions.store(backend)
        self.worker = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="artifactd-webhooks", daemon=True)
        self._last_sweep = 0.0
        self._renewed = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.backend.settings.webhook_timeout + 5)

    def _run(self) -> None:
        timeout = httpx.Timeout(self.backend.settings.webhook_timeout)
        # TCP_NODELAY: headers and body are two writes; with Nagle's algorithm the body
        # would wait for the receiver's delayed ACK (40 ms on Linux) on every delivery.
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                          transport=transport) as client:
            while not self._stop.is_set():
                try:
                    worked = self.run_once(client)
                    self._maybe_sweep()
                except Exception:  # the loop must survive a database hiccup
                    log.exception("webhook delivery loop failed; retrying")
                    worked = False
                if not worked:
                    self._stop.wait(IDLE_POLL)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY:
            return
        self._last_sweep = now
        retention = int(self.backend.settings.event_retention * 1_000_000)
        self.store.sweep_outbox(now_us() - retention)
        EVENT_QUEUE_DEPTH.set(self.store.outbox_depth())

    def run_once(self, client: httpx.Client) -> bool:
        """Serve one subscription with work; whether there was any."""
        now = now_us()
        for sub in self.store.due_webhooks(now, 50):
            pending = self.store.pending_redeliveries(sub.id, BATCH)
            rows = self.store.events_after(sub, sub.cursor_seq, BATCH)
            if not pending and not rows:
                continue
            if not self.store.claim(sub.id, self.worker, now, now + self._claim_us()):
                continue
            claimed = self.store.get_subscription(sub.account_id, sub.id)
            if claimed is None:
                continue
            self._renewed = time.monotonic()
            self._serve(client, claimed)
            return True
        return False

    def _serve(self, client: httpx.Client, sub: SubscriptionRow) -> None:
        failed: Attempt | None = None
        try:
            for pending in self.store.pending_redeliveries(sub.id, BATCH):
                event = self.store.event_by_id(sub, pending.event_id)
                if event is None:  # swept by retention
                    self.store.record_attempt(self._log(sub, pending.event_id, pending.seq, Attempt(
                        False, None, "event no longer retained", 0.0, None)), replaces=pending.id)
                    continue
                attempt = self._send(client, sub, event)
                self.store.record_attempt(self._log(sub, event.id, event.seq, attempt),
                                          replaces=pending.id)
                if not attempt.ok:
                    failed = attempt
                    return
            done: list[dict[str, object]] = []
            try:
                for event in self.store.events_after(sub, sub.cursor_seq, BATCH):
                    if self._stop.is_set():
                        return
                    attempt = self._send(client, sub, event)
                    if not attempt.ok:
                        self._flush(sub, done)
                        self.store.record_attempt(self._log(sub, event.id, event.seq, attempt))
                        failed = attempt
                        return
                    done.append(self._log(sub, event.id, event.seq, attempt))
                    # A delivery ends the failure streak (``delivered`` resets it in the row).
                    sub = dataclasses.replace(sub, failures=0, first_failure_us=0)
                    if len(done) >= FLUSH_EVERY:
                        self._flush(sub, done)
            finally:
                self._flush(sub, done)
        finally:
            self._release(sub, failed)

    def _flush(self, sub: SubscriptionRow, done: list[dict[str, object]]) -> None:
        """Record delivered events and move the cursor past them (a crash before this sends
        them again: at least once, never lost)."""
        if done:
            self.store.delivered(sub.id, self.worker, int(str(done[-1]["seq"])), done)
            done.clear()

    def _claim_us(self) -> int:
        """Long enough for one attempt to time out: a live claim never lapses mid-send."""
        seconds = max(CLAIM_SECONDS, self.backend.settings.webhook_timeout + 5)
        return int(seconds * 1_000_000)

    def _send(self, client: httpx.Client, sub: SubscriptionRow, event: EventRow) -> Attempt:
        now = time.monotonic()
        if now - self._renewed >= RENEW_SECONDS:
            self._renewed = now
            self.store.renew(sub.id, self.worker, now_us() + self._claim_us())
        body = json.dumps(event_stream.document(event, sub.id), separators=(",", ":")).encode()
        attempt = post(self.backend, client, sub, event.id, body)
        if attempt.ok:
            EVENT_DELIVERIES.labels("delivered").inc()
            EVENT_DELIVERY_SECONDS.observe(max(now_us() - event.created_us, 0) / 1e6)
        else:
            EVENT_DELIVERIES.labels("failed").inc()
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

    def _release(self, sub: SubscriptionRow, failed: Attempt | None) -> None:
        if failed is None:
            self.store.release(sub.id, self.worker)
            return
        settings = self.backend.settings
        now = now_us()
        failures = sub.failures + 1
        first = sub.first_failure_us or now
        values: dict[str, object] = {
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
            EVENT_DELIVERIES.labels("retried").inc()
        self.store.release(sub.id, self.worker, **values)
