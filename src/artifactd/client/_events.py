"""Event subscriptions in the SDK (no I/O: ``Call``s the sync and async clients send), and
``verify_webhook``, the receiver's check of a Standard Webhooks signature."""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from . import _core as core
from ._errors import ArtifactsError

DEFAULT_TOLERANCE = 300  # seconds a webhook's timestamp may be off (replays are refused)


class WebhookVerificationError(ArtifactsError):
    """The webhook's signature, timestamp or headers do not check out: reject the request."""


def verify_webhook(headers: Mapping[str, str], body: bytes | str, secret: str, *,
                   tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> dict[str, Any]:
    """The event of a signed webhook, or ``WebhookVerificationError``.

    Checks ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of id.timestamp.body>``, any of
    several space-separated signatures, compared in constant time) and refuses a
    ``webhook-timestamp`` more than ``tolerance`` seconds from now: a stolen request
    replayed later fails even with its valid signature. Dedupe on ``webhook-id``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    event_id = lowered.get("webhook-id")
    stamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not event_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or too new (a replay?)")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ secret") from None
    raw = body.encode() if isinstance(body, str) else body
    expected = base64.b64encode(hmac.new(
        key, f"{event_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            event = json.loads(raw)
            if not isinstance(event, dict):
                raise WebhookVerificationError("the body is not an event")
            return event
    raise WebhookVerificationError("no signature matches")


def _base(account_id: str) -> str:
    return f"/client/v4/accounts/{core._segment(account_id)}/artifacts/subscriptions"


def _dict(response: httpx.Response) -> dict[str, Any]:
    value = core.result(response)
    if not isinstance(value, dict):
        raise core.unexpected(response, "a JSON object in `result`")
    return value


def _list(response: httpx.Response) -> list[dict[str, Any]]:
    value = core.result(response)
    if not isinstance(value, list):
        raise core.unexpected(response, "a JSON array in `result`")
    return value


def _page(response: httpx.Response) -> dict[str, Any]:
    body = core.envelope(response)
    info = body.get("result_info") or {}
    return {"events": body.get("result") or [], "cursor": info.get("cursor", "")}


class EventRoutes:
    def __init__(self, account_id: str):
        self.base = _base(account_id)

    def create(self, name: str, source: Mapping[str, Any], destination: Mapping[str, Any],
               event_types: list[str] | None) -> core.Call[dict[str, Any]]:
        body: dict[str, Any] = {"name": name, "source": dict(source),
                                "destination": dict(destination)}
        if event_types is not None:
            body["event_types"] = event_types
        return core.Call("POST", self.base, _dict, body=body)

    def list(self) -> core.Call[list[dict[str, Any]]]:
        return core.Call("GET", self.base, _list)

    def get(self, subscription_id: str) -> core.Call[dict[str, Any]]:
        return core.Call("GET", f"{self.base}/{core._segment(subscription_id)}", _dict)

    def delete(self, subscription_id: str) -> core.Call[dict[str, Any]]:
        return core.Call("DELETE", f"{self.base}/{core._segment(subscription_id)}", _dict)

    def events(self, subscription_id: str, cursor: str | None, limit: int | None,
               wait: float | None) -> core.Call[dict[str, Any]]:
        params: dict[str, str | int] = {k: v for k, v in (
            ("cursor", cursor), ("limit", limit), ("wait", None if wait is None else str(wait)),
        ) if v is not None}
        return core.Call("GET", f"{self.base}/{core._segment(subscription_id)}/events", _page,
                         params=params)

    def ack(self, subscription_id: str, cursor: str) -> core.Call[dict[str, Any]]:
        return core.Call("POST", f"{self.base}/{core._segment(subscription_id)}/ack", _dict,
                         body={"cursor": cursor})

    def update(self, subscription_id: str, fields: Mapping[str, Any]) -> core.Call[dict[str, Any]]:
        return core.Call("PATCH", f"{self.base}/{core._segment(subscription_id)}", _dict,
                         body=dict(fields))

    def set_state(self, subscription_id: str, action: str) -> core.Call[dict[str, Any]]:
        """``action``: ``pause`` or ``resume``."""
        return core.Call("POST", f"{self.base}/{core._segment(subscription_id)}/{action}", _dict)

    def deliveries(self, subscription_id: str, limit: int | None,
                   before: int | None) -> core.Call[builtins.list[dict[str, Any]]]:
        params: dict[str, str | int] = {k: v for k, v in (("limit", limit), ("before", before))
                                        if v is not None}
        return core.Call("GET", f"{self.base}/{core._segment(subscription_id)}/deliveries", _list,
                         params=params)

    def redeliver(self, subscription_id: str, event_id: str | None, start: str | None,
                  end: str | None) -> core.Call[dict[str, Any]]:
        body = {k: v for k, v in (("event_id", event_id), ("start", start), ("end", end))
                if v is not None}
        return core.Call("POST", f"{self.base}/{core._segment(subscription_id)}/redeliver", _dict,
                         body=body)
