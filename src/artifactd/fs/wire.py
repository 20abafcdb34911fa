"""One kept-alive HTTP connection to a git remote, on the standard library.

The mount's requests (``object-info``, batched blob fetches, the hot set) go over
connections opened once and kept: a cold read then pays one round trip, not a TCP connect
and a client's set-up. ``http.client`` rather than httpx because the mount process starts
on every mount and httpx costs a tenth of a second to import. One ``Remote`` per thread:
a connection carries one request at a time.
"""

from __future__ import annotations

import base64
import http.client
from urllib.parse import urlsplit

USER_AGENT = "git/artifact-fs"
# Errors that mean the connection went away; a reused one is opened again once.
STALE = (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)


class WireError(OSError):
    """The remote could not be reached or broke off an answer."""


class Remote:
    def __init__(self, url: str, auth: tuple[str, str] | None, timeout: float) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError(f"not an http(s) remote: {url}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port
        self.path = parts.path.rstrip("/")
        self.timeout = timeout
        self.auth = auth
        self.connection: http.client.HTTPConnection | None = None

    def _open(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def connect(self) -> None:
        """Open the connection now (at mount time), so the first read does not pay for it."""
        if self.connection is None:
            self.connection = self._open()
            self.connection.connect()

    def headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, **extra}
        if self.auth is not None:
            pair = f"{self.auth[0]}:{self.auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def request(self, method: str, suffix: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of ``method`` on the remote's URL plus ``suffix``."""
        all_headers = self.headers(headers or {})
        for attempt in range(2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = self._open()
            try:
                self.connection.request(method, self.path + suffix, body=body, headers=all_headers)
                response = self.connection.getresponse()
                data = response.read()
            except STALE as exc:
                self.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle kept-alive connection: open a new one
                raise WireError(f"the remote broke off: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a timeout or a refused connection: the next request opens anew
                raise WireError(f"the remote did not answer: {exc}") from exc
            if response.will_close:
                self.close()
            return response.status, data
        raise WireError("unreachable")  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
