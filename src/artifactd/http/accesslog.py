"""One access-log line and the request metrics per request. Never a secret, never a header.

Only method, path (without query string: it can carry cursors but never credentials; we
drop it anyway), status, duration, bytes, the client's address and the request id are
logged. The ``Authorization`` header, Basic credentials in URLs and repo tokens never reach
this logger because nothing here reads them; the one header read is ``X-Request-Id``, and
only a value ``safe_request_id`` accepts is logged and echoed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from artifactd.errors import Code
from artifactd.http.envelope import failure
from artifactd.logs import RequestContext, current_request, current_request_id, safe_request_id
from artifactd.observability import REQUEST_SECONDS, REQUESTS
from artifactd.redact import redact

DATABASE_RETRY_AFTER = 2  # seconds a client is asked to wait while the database is away

log = logging.getLogger("artifactd.access")
errors_log = logging.getLogger("artifactd.http")

_CONTENT_SEGMENTS = ("log", "commit", "tree", "blob", "file", "raw")
REQUEST_ID_HEADER = b"x-request-id"


def _supplied_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            return str(value.decode("latin-1"))
    return None


def route_class(path: str) -> str:
    """A low-cardinality label for metrics: never a repo name or an id."""
    if path.startswith("/git/"):
        return "git"
    if path == "/client/v4/graphql":
        return "graphql"
    if path.startswith("/client/v4/accounts/"):
        parts = path.split("/")
        # /client/v4/accounts/<acc>/artifacts/namespaces/<ns>/repos/<name>/<segment>
        if len(parts) > 10 and parts[8] == "repos" and parts[10] in _CONTENT_SEGMENTS:
            return "content"
        return "control"
    if path == "/metrics":
        return "metrics"
    return "other"


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = safe_request_id(_supplied_request_id(scope))
        label = route_class(scope["path"])
        scope["artifactd.route"] = label
        context_token = current_request.set(RequestContext(request_id, label, scope))
        status = 0
        sent = 0
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except (OperationalError, InterfaceError, DisconnectionError):
            # The database is unreachable (down, restarting, network): a retriable 503; the
            # pool reconnects by itself once it is back.
            errors_log.error("database unavailable", exc_info=True)
            if status == 0:
                await failure(503, Code.SERVICE_UNAVAILABLE,
                              "The metadata database is unavailable; try again",
                              headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
                              )(scope, receive, counting_send)
        except Exception:
            # Answered here rather than by Starlette's ServerErrorMiddleware, which re-raises
            # after answering and so makes uvicorn drop the connection under the client.
            errors_log.error("internal error", exc_info=True)
            if status == 0:
                await failure(500, Code.INTERNAL, "Internal server error")(scope, receive, counting_send)
        finally:
            elapsed = time.perf_counter() - started
            REQUESTS.labels(label, str(status)).inc()
            REQUEST_SECONDS.labels(label).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                self._write(scope, status, elapsed, sent, received)
            current_request.reset(context_token)

    def _write(self, scope: Scope, status: int, seconds: float, sent: int, received: int) -> None:
        client = scope.get("client")
        record: dict[str, Any] = {
            "method": scope["method"],
            "path": redact(scope["path"]),
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "bytes_sent": sent,
            "bytes_received": received,
            "client": client[0] if client else None,
        }
        # request_id, route and repo come from the request context (artifactd.logs).
        log.info(
            "%s %s %s %.1fms sent=%d recv=%d rid=%s", record["method"], record["path"],
            status, record["duration_ms"], sent, received, current_request_id(), extra=record,
        )
