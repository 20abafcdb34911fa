"""Event subscription routes under ``/client/v4/accounts/{account_id}/artifacts/subscriptions``.

Create, list, get, update, delete and pause webhook or queue subscriptions; read a queue
(long poll, or Server-Sent Events), acknowledge it; read a webhook's delivery log and
redeliver. docs/events.md describes the shapes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from artifactd.errors import ValidationError
from artifactd.http.api import Call, endpoint
from artifactd.http.apidoc import Operation, Query, describe
from artifactd.http.envelope import success
from artifactd.http.results import (
    CursorResultInfo,
    DeleteSubscriptionResult,
    DeliveryInfo,
    EventInfo,
    RedeliverResult,
    SubscriptionDestinationInfo,
    SubscriptionInfo,
    SubscriptionSourceInfo,
)
from artifactd.models import (
    AckRequest,
    CreateSubscriptionRequest,
    RedeliverRequest,
    UpdateSubscriptionRequest,
)
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from artifactd.services.clock import iso
from artifactd.services.events import event_stream, subscriptions
from artifactd.storage.eventstore import DeliveryRow, SubscriptionRow

PREFIX = "/client/v4/accounts/{account_id}/artifacts/subscriptions"
ONE = PREFIX + "/{subscription_id}"
TAG = "Events"
SSE_POLL = 0.1
SSE_KEEPALIVE = 15.0


def info(row: SubscriptionRow, secret: str | None = None) -> SubscriptionInfo:
    return SubscriptionInfo(
        id=row.id, name=row.name,
        source=SubscriptionSourceInfo(type=row.source_type,
                                      namespace=row.namespace, repo_name=row.repo_name),
        event_types=row.types,
        destination=SubscriptionDestinationInfo(type=row.destination,
                                                url=row.url),
        state=row.state,
        paused_reason=row.paused_reason, failures=row.failures,
        cursor=subscriptions.encode_cursor(row.cursor_seq),
        created_at=iso(row.created_us) or "", updated_at=iso(row.updated_us) or "",
        secret=secret,
    )


def delivery_info(row: DeliveryRow) -> DeliveryInfo:
    return DeliveryInfo(
        id=row.id, event_id=row.event_id, outcome=row.outcome,
        status_code=row.status_code, error=row.error, latency_ms=row.latency_ms,
        response_snippet=row.response_snippet, attempted_at=iso(row.attempted_us) or "",
    )


def _id(call: Call) -> str:
    return call.path["subscription_id"]


def create(call: Call) -> Response:
    created = subscriptions.create(call.backend, call.account_id,
                                   call.body(CreateSubscriptionRequest))
    return success(info(created.subscription, created.secret), status=201)


def list_all(call: Call) -> Response:
    rows = subscriptions.list_all(call.backend, call.account_id)
    return success([info(r) for r in rows],
                   result_info=CursorResultInfo(cursor="", per_page=len(rows), count=len(rows)))


def get(call: Call) -> Response:
    return success(info(subscriptions.get(call.backend, call.account_id, _id(call))))


def update(call: Call) -> Response:
    updated = subscriptions.update(call.backend, call.account_id, _id(call),
                                   call.body(UpdateSubscriptionRequest))
    return success(info(updated.subscription, updated.secret))


def pause(call: Call) -> Response:
    return success(info(subscriptions.set_state(call.backend, call.account_id, _id(call),
                                                subscriptions.PAUSED)))


def resume(call: Call) -> Response:
    return success(info(subscriptions.set_state(call.backend, call.account_id, _id(call),
                                                subscriptions.ACTIVE)))


def delete(call: Call) -> Response:
    row = subscriptions.delete(call.backend, call.account_id, _id(call))
    return success(DeleteSubscriptionResult(id=row.id))


def _wait(call: Call) -> float:
    raw = call.query.get("wait")
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError("wait must be a number of seconds", pointer="/wait") from None
    if value != value:  # NaN
        raise ValidationError("wait must be a number of seconds", pointer="/wait")
    return value


def read_events(call: Call) -> Response:
    limit = call.int_query("limit", subscriptions.DEFAULT_LIMIT)
    page = subscriptions.read_events(
        call.backend, call.account_id, _id(call), cursor=call.query.get("cursor") or None,
        limit=limit, wait=_wait(call))
    return success([EventInfo.model_validate(e) for e in page.events],
                   result_info=CursorResultInfo(cursor=page.cursor, per_page=limit,
                                                count=len(page.events)))


def ack(call: Call) -> Response:
    body = call.body(AckRequest)
    return success(info(subscriptions.ack(call.backend, call.account_id, _id(call), body.cursor)))


def deliveries(call: Call) -> Response:
    limit = call.int_query("limit", subscriptions.DEFAULT_LIMIT)
    before = call.int_query("before", 0) or None
    rows = subscriptions.deliveries(call.backend, call.account_id, _id(call), limit, before)
    cursor = str(rows[-1].id) if len(rows) == limit else ""
    return success([delivery_info(r) for r in rows],
                   result_info=CursorResultInfo(cursor=cursor, per_page=limit, count=len(rows)))


def redeliver(call: Call) -> Response:
    body = call.body(RedeliverRequest)
    queued = subscriptions.redeliver(call.backend, call.account_id, _id(call),
                                     event_id=body.event_id, start=body.start, end=body.end)
    return success(RedeliverResult(queued=queued), status=202)


async def stream(request: Request) -> Response:
    """The queue as Server-Sent Events (``id:`` is the cursor, ``data:`` one event)."""
    backend: Backend = request.app.state.backend
    authorization = request.headers.get("authorization")
    account = request.path_params.get("account_id")  # absent on the /v1/api twin
    subscription_id = request.path_params["subscription_id"]
    cursor = request.query_params.get("cursor") or request.headers.get("last-event-id") or None

    def opening() -> tuple[str, int]:
        principal = accounts.authenticate(backend, authorization, account)
        sub = subscriptions.get(backend, principal.account_id, subscription_id)
        after = subscriptions.decode_cursor(cursor) if cursor else sub.cursor_seq
        return principal.account_id, after

    account_id, after = await asyncio.to_thread(opening)

    async def events() -> AsyncIterator[bytes]:
        position = after
        idle = 0.0
        yield b": artifactd event stream\n\n"
        while True:
            sub = await asyncio.to_thread(subscriptions.get, backend, account_id, subscription_id)
            rows = await asyncio.to_thread(subscriptions.store(backend).events_after, sub,
                                           position, subscriptions.MAX_LIMIT)
            for row in rows:
                position = row.seq
                data = json.dumps(event_stream.document(row, sub.id), separators=(",", ":"))
                yield (f"id: {subscriptions.encode_cursor(row.seq)}\nevent: {row.type}\n"
                       f"data: {data}\n\n").encode()
            if rows:
                idle = 0.0
                continue
            await asyncio.sleep(SSE_POLL)
            idle += SSE_POLL
            if idle >= SSE_KEEPALIVE:
                idle = 0.0
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache"})


def _stream_doc() -> Operation:
    return Operation(
        "Stream a queue subscription's events (Server-Sent Events)", TAG,
        operation_id="stream_subscription_events",
        media={"text/event-stream": {"schema": {"type": "string"}}}, enveloped=False,
        query=(Query("cursor", "Start after this cursor (default: the last acknowledged); "
                     "`Last-Event-ID` works too"),))


CURSOR = Query("cursor", "Events after this cursor (default: the last acknowledged)")
routes = [
    Route(PREFIX, endpoint(create, edit=True, body=True, blocking=True, doc=Operation(
        "Create an event subscription", TAG,
        operation_id="create_subscription", request=CreateSubscriptionRequest,
        response=SubscriptionInfo, status=201,
        description="A webhook's signing `secret` is in this answer only.")), methods=["POST"]),
    Route(PREFIX, endpoint(list_all, doc=Operation(
        "List event subscriptions", TAG,
        operation_id="list_subscriptions", response=SubscriptionInfo, many=True,
        result_info=CursorResultInfo)), methods=["GET"]),
    Route(ONE, endpoint(get, doc=Operation(
        "Get an event subscription", TAG,
        operation_id="get_subscription", response=SubscriptionInfo)), methods=["GET"]),
    Route(ONE, endpoint(update, edit=True, body=True, blocking=True, doc=Operation(
        "Update an event subscription", TAG,
        operation_id="update_subscription", request=UpdateSubscriptionRequest,
        response=SubscriptionInfo,
        description="`rotate_secret: true` answers with the new secret, once.")),
          methods=["PATCH"]),
    Route(ONE, endpoint(delete, edit=True, doc=Operation(
        "Delete an event subscription", TAG,
        operation_id="delete_subscription", response=DeleteSubscriptionResult)),
          methods=["DELETE"]),
    Route(ONE + "/pause", endpoint(pause, edit=True, doc=Operation(
        "Pause an event subscription", TAG,
        operation_id="pause_subscription", response=SubscriptionInfo)), methods=["POST"]),
    Route(ONE + "/resume", endpoint(resume, edit=True, doc=Operation(
        "Resume an event subscription", TAG,
        operation_id="resume_subscription", response=SubscriptionInfo)), methods=["POST"]),
    Route(ONE + "/events", endpoint(read_events, blocking=True, doc=Operation(
        "Read a subscription's events (long poll)", TAG,
        operation_id="read_subscription_events", response=EventInfo, many=True,
        result_info=CursorResultInfo, query=(
            CURSOR,
            Query("limit", f"Most events, 1 to {subscriptions.MAX_LIMIT} (default "
                  f"{subscriptions.DEFAULT_LIMIT})",
                  {"type": "integer", "minimum": 1, "maximum": subscriptions.MAX_LIMIT}),
            Query("wait", f"Seconds to wait for an event when there is none, 0 to "
                  f"{subscriptions.MAX_WAIT:g}", {"type": "number", "minimum": 0,
                                                 "maximum": subscriptions.MAX_WAIT}),
        ))), methods=["GET"]),
    Route(ONE + "/ack", endpoint(ack, edit=True, body=True, doc=Operation(
        "Acknowledge a queue's events up to a cursor", TAG,
        operation_id="ack_subscription_events", request=AckRequest,
        response=SubscriptionInfo)), methods=["POST"]),
    Route(ONE + "/stream", describe(stream, _stream_doc()), methods=["GET"]),
    Route(ONE + "/deliveries", endpoint(deliveries, doc=Operation(
        "List a webhook's delivery attempts", TAG,
        operation_id="list_subscription_deliveries", response=DeliveryInfo, many=True,
        result_info=CursorResultInfo, query=(
            Query("limit", f"Most attempts, 1 to {subscriptions.MAX_LIMIT}",
                  {"type": "integer", "minimum": 1, "maximum": subscriptions.MAX_LIMIT}),
            Query("before", "Attempts older than this id (the previous page's cursor)",
                  {"type": "integer", "minimum": 1, "maximum": 10**12 - 1}),
        ))), methods=["GET"]),
    Route(ONE + "/redeliver", endpoint(redeliver, edit=True, body=True, doc=Operation(
        "Redeliver one event or a time range", TAG,
        operation_id="redeliver_subscription_events", request=RedeliverRequest,
        response=RedeliverResult, status=202)), methods=["POST"]),
]
