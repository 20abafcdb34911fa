"""One webhook POST over a kept-alive connection per destination, with the least CPU we can.

The delivery thread shares the GIL with the request path, so its per-event cost is taken
from creates: ``http.client`` on a persistent connection costs a fraction of a general
client (no pool, no event hooks, no header models). Every connection goes to the address
the SSRF check pinned (``Source.address``), TLS verified against the URL's host name; a
redirect is never followed (``http.client`` does not follow them) and at most
``SNIPPET_BYTES`` of an answer are read: a connection whose answer was not read to its end
is closed, never reused.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from artifactd.services.repos.import_source import Source

SNIPPET_BYTES = 2048
USER_AGENT = "artifactd-webhooks/1"


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status_code: int | None
    error: str | None
    latency_ms: float
    snippet: str | None
    gone: bool = False


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address, the certificate verified for the URL's host."""

    def __init__(self, address: str, port: int, host: str, timeout: float,
                 context: ssl.SSLContext):
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = host
        self._ssl_context = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ssl_context.wrap_socket(sock, server_hostname=self._server_name)


class _PinnedHTTP(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        # Headers and body are two writes: without TCP_NODELAY the body would wait for the
        # receiver's delayed ACK (40 ms on Linux) on every delivery.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Sender:
    """Kept-alive connections, one per (scheme, address, port, host); one thread uses it."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._connections: dict[tuple[str, str, int, str], http.client.HTTPConnection] = {}
        self._tls = ssl.create_default_context()

    def _connection(self, source: Source) -> http.client.HTTPConnection:
        key = (source.scheme, source.address, source.port, source.host)
        conn = self._connections.get(key)
        if conn is None:
            if source.scheme == "https":
                conn = _PinnedHTTPS(source.address, source.port, source.host, self.timeout,
                                    self._tls)
            else:
                conn = _PinnedHTTP(source.address, source.port, timeout=self.timeout)
            self._connections[key] = conn
        return conn

    def _drop(self, source: Source) -> None:
        conn = self._connections.pop((source.scheme, source.address, source.port, source.host),
                                     None)
        if conn is not None:
            conn.close()

    def post(self, source: Source, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        started = time.monotonic()

        def done(ok: bool, status: int | None, error: str | None, snippet: str | None = None,
                 gone: bool = False) -> Attempt:
            return Attempt(ok, status, error, (time.monotonic() - started) * 1000, snippet, gone)

        parts = urlsplit(url)
        target = parts.path or "/"
        host = f"[{source.host}]" if ":" in source.host else source.host
        if parts.port is not None:
            host += f":{parts.port}"
        sent = {"Host": host, "Content-Type": "application/json", "User-Agent": USER_AGENT,
                "Content-Length": str(len(body)), **headers}
        for attempt in (1, 2):
            conn = self._connection(source)
            reused = conn.sock is not None
            try:
                conn.request("POST", target, body=body, headers=sent)
                response = conn.getresponse()
                snippet = response.read(SNIPPET_BYTES)
                status = response.status
                if not response.isclosed():
                    # More than a snippet (maybe a gigabyte): never read, the connection goes.
                    self._drop(source)
                elif response.will_close:
                    self._drop(source)
            except TimeoutError:
                self._drop(source)
                return done(False, None, f"timeout: no answer within {self.timeout:g} s")
            except (OSError, http.client.HTTPException) as exc:
                self._drop(source)
                if reused and attempt == 1 and isinstance(
                        exc, (http.client.RemoteDisconnected, BrokenPipeError,
                              ConnectionResetError)):
                    continue  # the receiver closed an idle kept-alive connection: reconnect
                return done(False, None, f"{type(exc).__name__}: {exc}"[:500])
            text = snippet.decode(errors="replace")
            if 200 <= status < 300:
                return done(True, status, None, text)
            reason = "redirects are not followed" if 300 <= status < 400 else f"HTTP {status}"
            return done(False, status, reason, text, gone=status == 410)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
