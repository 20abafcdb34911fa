"""Event subscriptions: who receives which events, and the pull queue's reads and acks.

A subscription sees the events written after it was created (its cursor starts at the
outbox's newest ``seq``). A webhook subscription's cursor is moved by the delivery workers
(``services/events/webhooks.py``); a queue subscription's by its consumer's acknowledgements.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from artifactd.errors import Code, NotFound, ValidationError
from artifactd.models import CreateSubscriptionRequest, UpdateSubscriptionRequest
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream
from artifactd.services.names import check_name
from artifactd.services.repos.import_source import AllowList, check_url
from artifactd.storage.eventstore import DeliveryRow, EventRow, EventStore, SubscriptionRow

MAX_NAME = 200
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
MAX_WAIT = 20.0  # seconds a long poll may wait (it holds a worker thread)
POLL_INTERVAL = 0.05
MAX_REDELIVER = 1000
_CURSOR = re.compile(r"^q([0-9]{1,18})$")
ACTIVE, PAUSED = "active", "paused"


def store(backend: Backend) -> EventStore:
    found = backend.extras.get("event_store")
    if not isinstance(found, EventStore):
        found = EventStore(backend.meta.engine)
        backend.extras["event_store"] = found
    return found


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def encode_cursor(seq: int) -> str:
    return f"q{seq}"


def decode_cursor(raw: str, pointer: str = "/cursor") -> int:
    match = _CURSOR.match(raw.strip())
    if match is None:
        raise ValidationError("cursor is not a cursor of this event stream",
                              code=Code.INVALID_EVENT_CURSOR, pointer=pointer)
    return int(match.group(1))


def check_webhook_url(backend: Backend, url: object) -> str:
    """The import's SSRF rules (scheme, credentials, every resolved address), own allowlist."""
    if not isinstance(url, str) or not url:
        raise ValidationError("destination.url is required for a webhook",
                              pointer="/destination/url")
    allow = AllowList.parse(backend.settings.webhook_allow_hosts)
    try:
        check_url(url, allow)
    except ValidationError as exc:
        message = exc.message.replace("Import from", "Webhook to").replace(
            "can be imported", "can receive webhooks").replace(
            "import allowlist", "webhook allowlist")
        raise ValidationError(message, code=Code.WEBHOOK_REFUSED,
                              pointer="/destination/url") from None
    return url


def _check_types(types: list[str] | None, source_type: str) -> list[str]:
    allowed = (event_stream.ACCOUNT_EVENTS if source_type == "artifacts"
               else event_stream.REPO_EVENTS)
    if types is None or not types:
        return list(allowed)
    for index, value in enumerate(types):
        if value not in event_stream.ALL_EVENTS:
            raise ValidationError(f"Unknown event type {value[:100]!r}",
                                  code=Code.UNKNOWN_EVENT_TYPE, pointer=f"/event_types/{index}")
        if value not in allowed:
            raise ValidationError(
                f"{value} is not an event of a {source_type!r} source",
                code=Code.UNKNOWN_EVENT_TYPE, pointer=f"/event_types/{index}")
    return list(dict.fromkeys(types))


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise ValidationError(f"name must be 1 to {MAX_NAME} characters", pointer="/name")
    return name


@dataclass(frozen=True)
class Created:
    subscription: SubscriptionRow
    secret: str | None


def create(backend: Backend, account_id: str, body: CreateSubscriptionRequest) -> Created:
    name = _check_name(body.name)
    source = body.source
    if source.type not in ("artifacts", "artifacts.repo"):
        raise ValidationError("source.type must be 'artifacts' or 'artifacts.repo'",
                              pointer="/source/type")
    namespace = repo_name = None
    if source.namespace is not None:
        namespace = check_name(source.namespace, "source/namespace", "namespace name")
    if source.type == "artifacts.repo":
        if namespace is None:
            raise ValidationError("A repo-level source needs a namespace",
                                  pointer="/source/namespace")
        if source.repo_name is None:
            raise ValidationError("A repo-level source needs a repo_name",
                                  pointer="/source/repo_name")
        repo_name = check_name(source.repo_name, "source/repo_name", "repo name")
    elif source.repo_name is not None:
        raise ValidationError("An account-level source takes no repo_name; use "
                              "'artifacts.repo'", pointer="/source/repo_name")
    types = _check_types(body.event_types, source.type)
    destination = body.destination
    url = secret = None
    if destination.type == "webhook":
        url = check_webhook_url(backend, destination.url)
        secret = new_secret()
    elif destination.type == "queue":
        if destination.url is not None:
            raise ValidationError("A queue destination takes no url", pointer="/destination/url")
    else:
        raise ValidationError("destination.type must be 'webhook' or 'queue'",
                              pointer="/destination/type")
    events = store(backend)
    now = now_us()
    row = SubscriptionRow(
        id=uuid.uuid4().hex, account_id=account_id, name=name, source_type=source.type,
        namespace=namespace, repo_name=repo_name, event_types=_json(types),
        destination=destination.type, url=url, secret=secret, state=ACTIVE,
        paused_reason=None, cursor_seq=events.newest_seq(), failures=0, first_failure_us=0,
        next_attempt_us=0, claimed_by=None, claimed_until_us=0, created_us=now, updated_us=now,
    )
    events.insert_subscription(row)
    wake_delivery(backend)
    return Created(row, secret)


def _json(values: list[str]) -> str:
    return json.dumps(values)


def get(backend: Backend, account_id: str, subscription_id: str) -> SubscriptionRow:
    row = store(backend).get_subscription(account_id, subscription_id)
    if row is None:
        raise NotFound(f"Subscription {subscription_id[:64]!r} not found",
                       code=Code.SUBSCRIPTION_NOT_FOUND)
    return row


def list_all(backend: Backend, account_id: str) -> list[SubscriptionRow]:
    return store(backend).list_subscriptions(account_id)


def update(backend: Backend, account_id: str, subscription_id: str,
           body: UpdateSubscriptionRequest) -> Created:
    row = get(backend, account_id, subscription_id)
    values: dict[str, Any] = {"updated_us": now_us()}
    if body.name is not None:
        values["name"] = _check_name(body.name)
    if body.event_types is not None:
        values["event_types"] = _json(_check_types(body.event_types, row.source_type))
    if body.url is not None:
        if row.destination != "webhook":
            raise ValidationError("Only a webhook subscription has a url", pointer="/url")
        try:
            values["url"] = check_webhook_url(backend, body.url)
        except ValidationError as exc:
            raise ValidationError(exc.message, code=exc.code, pointer="/url") from None
    secret = None
    if body.rotate_secret:
        if row.destination != "webhook":
            raise ValidationError("Only a webhook subscription has a secret",
                                  pointer="/rotate_secret")
        secret = values["secret"] = new_secret()
    if body.state is not None:
        if body.state not in (ACTIVE, PAUSED):
            raise ValidationError("state must be 'active' or 'paused'", pointer="/state")
        values.update(_state_values(body.state, "paused by the API"))
    store(backend).update_subscription(row.id, **values)
    wake_delivery(backend)
    return Created(get(backend, account_id, subscription_id), secret)


def wake_delivery(backend: Backend) -> None:
    """Tell this process's webhook thread that there may be work (a resume, a redelivery)."""
    wake = backend.extras.get("webhook_wake")
    if callable(wake):
        wake()


def _state_values(state: str, reason: str) -> dict[str, Any]:
    if state == ACTIVE:  # resuming starts a fresh retry streak, now
        return {"state": ACTIVE, "paused_reason": None, "failures": 0, "first_failure_us": 0,
                "next_attempt_us": 0}
    return {"state": PAUSED, "paused_reason": reason}


def set_state(backend: Backend, account_id: str, subscription_id: str, state: str) -> SubscriptionRow:
    row = get(backend, account_id, subscription_id)
    store(backend).update_subscription(row.id, updated_us=now_us(),
                                       **_state_values(state, "paused by the API"))
    wake_delivery(backend)
    return get(backend, account_id, subscription_id)


def delete(backend: Backend, account_id: str, subscription_id: str) -> SubscriptionRow:
    row = get(backend, account_id, subscription_id)
    store(backend).delete_subscription(row.id)
    return row


# -- the pull queue ---------------------------------------------------------------------


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    cursor: str


def read_events(backend: Backend, account_id: str, subscription_id: str, *,
                cursor: str | None, limit: int, wait: float) -> EventPage:
    """Events after ``cursor`` (default: the last acknowledged), waiting up to ``wait`` s."""
    sub = get(backend, account_id, subscription_id)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be 1 to {MAX_LIMIT}", pointer="/limit")
    if not 0 <= wait <= MAX_WAIT:
        raise ValidationError(f"wait must be 0 to {MAX_WAIT:g} seconds", pointer="/wait")
    after = decode_cursor(cursor) if cursor else sub.cursor_seq
    events = store(backend)
    deadline = time.monotonic() + wait
    while True:
        rows = events.events_after(sub, after, limit)
        if rows or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    last = rows[-1].seq if rows else after
    return EventPage([event_stream.document(r, sub.id) for r in rows], encode_cursor(last))


def ack(backend: Backend, account_id: str, subscription_id: str, cursor: str) -> SubscriptionRow:
    sub = get(backend, account_id, subscription_id)
    seq = decode_cursor(cursor)
    events = store(backend)
    if seq > events.newest_seq():
        raise ValidationError("cursor is ahead of the event stream",
                              code=Code.INVALID_EVENT_CURSOR, pointer="/cursor")
    if seq > sub.cursor_seq:
        events.update_subscription(sub.id, cursor_seq=seq, updated_us=now_us())
    return get(backend, account_id, subscription_id)


# -- the delivery log and redelivery ----------------------------------------------------


def deliveries(backend: Backend, account_id: str, subscription_id: str, limit: int,
               before: int | None) -> list[DeliveryRow]:
    sub = get(backend, account_id, subscription_id)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be 1 to {MAX_LIMIT}", pointer="/limit")
    return store(backend).list_deliveries(sub.id, limit, before)


def _time(raw: str, pointer: str) -> int:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError("expected an ISO 8601 time", pointer=pointer) from None
    if moment.tzinfo is None:
        raise ValidationError("the time needs a zone (e.g. Z)", pointer=pointer)
    return int(moment.timestamp() * 1_000_000)


def redeliver(backend: Backend, account_id: str, subscription_id: str, *,
              event_id: str | None, start: str | None, end: str | None) -> int:
    """Queue one event, or the events of a time range, to be sent again; how many."""
    sub = get(backend, account_id, subscription_id)
    if sub.destination != "webhook":
        raise ValidationError("Only a webhook subscription redelivers; a queue consumer reads "
                              "again from an earlier cursor", pointer="/event_id")
    events = store(backend)
    rows: list[EventRow]
    if event_id is not None:
        found = events.event_by_id(sub, event_id)
        if found is None:
            raise NotFound(f"Event {event_id[:64]!r} not found for this subscription",
                           code=Code.NOT_FOUND)
        rows = [found]
    elif start is not None and end is not None:
        rows = events.events_between(sub, _time(start, "/start"), _time(end, "/end"),
                                     MAX_REDELIVER)
    else:
        raise ValidationError("Give event_id, or start and end", pointer="/event_id")
    now = now_us()
    events.queue_redeliveries([{
        "subscription_id": sub.id, "event_id": r.id, "seq": r.seq, "outcome": "pending",
        "status_code": None, "error": None, "latency_ms": None, "response_snippet": None,
        "attempted_us": now,
    } for r in rows])
    wake_delivery(backend)
    return len(rows)
