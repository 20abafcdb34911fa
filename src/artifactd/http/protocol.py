"""The HTTP/1.1 connection guard: uvicorn's httptools protocol with the bounds it lacks.

``uvicorn[standard]`` serves HTTP/1.1 with httptools, which buffers a header line of any size
and waits forever for a request head or body that never completes (h11 has a head-size cap
but no head timeout either). This subclass keeps httptools' speed and adds, per connection:

- caps on the request target (414), the whole request head and the number of header fields
  (431), checked as the bytes arrive, so memory per connection stays bounded;
- a timeout for the request head (from connecting, or from a later request's first byte) and
  one for a body that stops arriving (408, then close);
- a cap on open connections per worker, with a reserve where only health and metrics are
  served, so that an operator can still see a worker that is being flooded;
- v4 envelopes for the answers uvicorn would give as plain text (malformed requests).

A refused connection is closed gracefully: the answer is written with ``Connection: close``,
writing is shut down, and what the client still sends is read and dropped for a moment (up
to a bound), so that the client reads the answer instead of a connection reset.

The limits come from the server settings that ``artifactd serve`` exports to its workers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import resource
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from artifactd.config import Settings
from artifactd.errors import Code
from artifactd.http.asgi import SETTINGS_ENV
from artifactd.http.envelope import failure
from artifactd.observability import HTTP_GUARD_REFUSALS
from artifactd.services.descriptors import fixed_descriptors
from artifactd.storage import objectreader

# Served on the connections beyond ``http_max_connections`` (the reserve); others get 503.
RESERVED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# After a refusal, the client's remaining bytes are read and dropped for at most this long and
# this much: enough for curl or git to read the answer, too little to be worth a flood.
LINGER_SECONDS = 5.0
LINGER_BYTES = 16 << 20
BUSY_RETRY_AFTER = 5  # seconds, in the 503 of a connection over the cap
COALESCE_BYTES = 64 << 10  # a response's writes held back for one event-loop turn, at most

# This worker's connections with no request in progress, oldest first: the ones a new
# connection may displace when the worker is at ``http_max_connections``.
_WAITING: dict[GuardedHttpToolsProtocol, None] = {}


@dataclass(frozen=True)
class Limits:
    max_request_line: int
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections: int
    connection_reserve: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_request_line=settings.http_max_request_line,
            max_header_bytes=settings.http_max_header_bytes,
            max_headers=settings.http_max_headers,
            header_timeout=settings.http_header_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=settings.http_max_connections,
            connection_reserve=settings.http_connection_reserve,
        )


def ensure_descriptor_budget(settings: Settings) -> str | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` (workers inherit it) so that a worker at
    its connection cap can still accept health checks and run git, and its content reader
    can keep ``content_reader_max_repos`` repositories open (``reader_repo_budget`` fits
    the reader to what the limit allows); a warning when the hard limit is too low for the
    connections and git alone (a worker out of descriptors cannot accept anyone)."""
    fixed = fixed_descriptors(settings)
    needed = fixed + objectreader.DESCRIPTORS_PER_HANDLE * settings.content_reader_max_repos
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return None
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    least = fixed + objectreader.DESCRIPTORS_PER_HANDLE * objectreader.MIN_HANDLES
    if target < least:
        return (f"warning: open-file limit {target} is below the {least} descriptors that "
                f"http_max_connections, http_connection_reserve, git_max_processes and the "
                f"smallest content reader need; raise `ulimit -n` or lower "
                f"http_max_connections")
    return None


@functools.cache
def process_limits() -> Limits:
    raw = os.environ.get(SETTINGS_ENV)
    return Limits.from_settings(Settings(**json.loads(raw)) if raw else Settings())


class Refusal(Exception):
    """An answer the connection gives by itself, before (or instead of) the application."""

    def __init__(self, reason: str, status: int, code: Code, message: str,
                 headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.reason = reason  # the label of artifactd_http_guard_refusals_total
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def _busy() -> Refusal:
    return Refusal("busy", 503, Code.SERVICE_UNAVAILABLE, "Too many connections; retry shortly",
                   ((b"retry-after", str(BUSY_RETRY_AFTER).encode()),))


def _reserve_gate(app: Any) -> Any:
    """The application as a connection in the reserve sees it: health and metrics only."""

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in RESERVED_PATHS:
            await app(scope, receive, send)
            return
        busy = _busy()
        HTTP_GUARD_REFUSALS.labels(busy.reason).inc()
        response = failure(busy.status, int(busy.code), busy.message, headers={
            "Retry-After": str(BUSY_RETRY_AFTER), "Connection": "close"})
        await response(scope, receive, send)

    return gate


class _ClosesGracefully:
    """The transport as one request's cycle sees it. uvicorn closes the connection as soon as
    a ``Connection: close`` answer is sent, even when it answered early (413, 401) and the
    client is still sending the body; this closes by lingering instead.

    It also coalesces: uvicorn writes the status line and headers, each body chunk and the
    chunked encoding's end as separate writes, and each is a ``send`` system call on the
    event loop and a wake-up of the client. Writes made within one turn of the event loop
    go out as one (flushed by a callback of the next turn, or at ``COALESCE_BYTES``), so a
    small answer is one segment."""

    def __init__(self, protocol: GuardedHttpToolsProtocol):
        self._protocol = protocol
        self._transport = protocol.transport
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._protocol.loop.call_soon(self.flush)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= COALESCE_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self.flush()
        if self._protocol.body_complete:
            self._transport.close()
        else:
            self._protocol.linger()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One client connection (uvicorn makes one instance per connection)."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = process_limits()
        self._in_head = True  # between requests, or inside a request line / headers
        self._head_bytes = 0  # bytes received since the previous request was complete
        self._header_count = 0
        self._head_size = 0  # parsed bytes of the current head (target and fields)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen_at = 0.0  # loop time of the last body bytes
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._lingered = 0

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            # Full: make room by closing the connection that has waited longest without a
            # request in progress (idle, or still sending its head). Only when every
            # connection is busy with a request does this one go to the reserve, or away.
            oldest = next(iter(_WAITING), None)
            if oldest is not None:
                oldest._evict()
            elif len(self.connections) > self.limits.max_connections + self.limits.connection_reserve:
                HTTP_GUARD_REFUSALS.labels("busy").inc()
                self.transport.write(self._render(_busy()))
                self.transport.close()  # no lingering: under a flood the descriptor matters more
                return
            else:
                self.app = _reserve_gate(self.app)
        _WAITING[self] = None
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        _WAITING.pop(self, None)
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            _WAITING[self] = None  # idle keep-alive: evictable until its next request head

    def _evict(self) -> None:
        _WAITING.pop(self, None)
        if self._head_bytes == 0 or self._lingering:
            HTTP_GUARD_REFUSALS.labels("displaced").inc()
            self.transport.close()
        else:
            self._refuse(Refusal("displaced", 408, Code.REQUEST_TIMEOUT,
                                 "Request head not complete while the server is at its "
                                 "connection limit"))

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        else:
            self._body_seen_at = self.loop.time()  # the timer looks at this when it fires
            if self.cycle is not None and self.cycle.response_complete:
                # Answered early (413, 401): the rest is read and dropped, up to a bound.
                self._lingered += len(data)
                if self._lingered > LINGER_BYTES:
                    self.transport.close()
                    return
        # As uvicorn's own data_received, but parser errors become envelopes.
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, Refusal):
                # uvicorn's own words and logger, as before the guard answered these itself.
                self.logger.warning("Invalid HTTP request received.")
                refusal = Refusal("malformed", 400, Code.MALFORMED_HTTP, f"Malformed HTTP request: {exc}")
            self._refuse(refusal)
            return
        # A head still incomplete: httptools buffers a partial field whole, so count raw bytes.
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse(self._head_too_large())

    def _head_too_large(self) -> Refusal:
        return Refusal("head_too_large", 431, Code.HEADERS_TOO_LARGE,
                       f"Request head is larger than {self.limits.max_header_bytes} bytes")

    @property
    def body_complete(self) -> bool:
        return self._in_head

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._head_size = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                    self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)
        if len(self.url) > self.limits.max_request_line:
            raise Refusal("target_too_long", 414, Code.URI_TOO_LONG,
                          f"Request target is longer than {self.limits.max_request_line} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise Refusal("head_too_large", 431, Code.HEADERS_TOO_LARGE,
                          f"More than {self.limits.max_headers} header fields")
        # A head that arrives in one read is only seen here: count it as the fields come.
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.limits.max_header_bytes:
            raise self._head_too_large()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        _WAITING.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self.cycle.transport = _ClosesGracefully(self)  # type: ignore[assignment]
        self._arm_body_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- timeouts --------------------------------------------------------------------------

    def _arm_body_timer(self, delay: float | None = None) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        if delay is None:
            self._body_seen_at = self.loop.time()
            delay = self.limits.body_timeout
        self._body_timer = self.loop.call_later(delay, self._body_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head while the previous answer is still going: its clock starts
            # once the server is ready for it.
            self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                    self._head_timed_out)
            return
        if self._head_bytes == 0:  # connected and never sent a byte: nothing to answer
            HTTP_GUARD_REFUSALS.labels("idle_timeout").inc()
            self.transport.close()
            return
        self._refuse(Refusal("head_timeout", 408, Code.REQUEST_TIMEOUT,
                             f"Request head not complete after {self.limits.header_timeout:g} s"))

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self._in_head or self.transport.is_closing():
            return
        quiet = self.loop.time() - self._body_seen_at
        if quiet < self.limits.body_timeout:  # bytes came since the timer was set
            self._arm_body_timer(self.limits.body_timeout - quiet)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # Answered without reading the whole body (an early 4xx); the rest never came.
            self.transport.close()
            return
        # Not the client's fault: the application is not reading yet (uvicorn stopped reading
        # at its buffer's high-water mark), or the client waits for "100 Continue".
        if self.flow.read_paused or (cycle.waiting_for_100_continue):
            self._arm_body_timer()
            return
        self._refuse(Refusal("body_timeout", 408, Code.REQUEST_TIMEOUT,
                             f"No request body bytes for {self.limits.body_timeout:g} s"))

    # -- refusing --------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` (unless a response already started), then close gracefully."""
        _WAITING.pop(self, None)
        HTTP_GUARD_REFUSALS.labels(refusal.reason).inc()
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        cycle = self.cycle
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            # The application (if running) sees the client gone and its sends are dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if started or self.transport.is_closing():
            self.transport.close()
            return
        self.transport.write(self._render(refusal))
        self.linger()

    def linger(self) -> None:
        """Close after the answer, reading and dropping what the client still sends (up to
        ``LINGER_BYTES`` for ``LINGER_SECONDS``): closing a socket with unread bytes resets
        the connection, and a client still sending its body may never read the answer."""
        if self._lingering or self.transport.is_closing():
            return
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _render(self, refusal: Refusal) -> bytes:
        body = failure(refusal.status, int(refusal.code), refusal.message).body
        lines = [STATUS_LINE[refusal.status]]
        headers = [*self.server_state.default_headers,
                   (b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *refusal.headers]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        return b"".join([*lines, b"\r\n", body])
