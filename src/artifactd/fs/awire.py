"""A kept-alive HTTP/1.1 connection on the mount's event loop, for the reads that wait.

``wire.Remote`` is blocking, so the hydrator runs it on a worker thread; for a cold read
that costs two thread hops (to the worker and back to the loop), each a wake-up of another
thread that, on a loaded machine, waits for a CPU and then for the GIL. A read's own small
fetch goes over this connection instead, on the loop itself: the request is written and
the answer read by the task that serves the read (trio sockets set ``TCP_NODELAY``). Only
what HTTP/1.1 answers need: ``Content-Length``, ``chunked``, or a body to the close.
"""

from __future__ import annotations

import ssl

import trio

from artifactd.fs.wire import Remote, WireError

MAX_HEADER = 64 << 10


class AsyncRemote:
    def __init__(self, remote: Remote) -> None:
        self.remote = remote  # its URL, credentials (``auth``, renewed after a 401) and timeout
        self.stream: trio.abc.Stream | None = None
        self.buffer = bytearray()

    async def _open(self) -> trio.abc.Stream:
        port = self.remote.port or (443 if self.remote.https else 80)
        tcp: trio.abc.Stream = await trio.open_tcp_stream(self.remote.host, port)
        if not self.remote.https:
            return tcp
        tls = trio.SSLStream(tcp, ssl.create_default_context(), server_hostname=self.remote.host)
        await tls.do_handshake()
        return tls

    async def request(self, method: str, suffix: str, body: bytes,
                      headers: dict[str, str]) -> tuple[int, bytes]:
        """``(status, body)``, as ``Remote.request``; ``WireError`` when the remote is gone."""
        lines = [f"{method} {self.remote.path}{suffix} HTTP/1.1", f"Host: {self.remote.host}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{key}: {value}" for key, value in self.remote.headers(headers).items()]
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        for attempt in range(2):
            reused = self.stream is not None
            try:
                with trio.fail_after(self.remote.timeout):
                    if self.stream is None:
                        self.buffer.clear()
                        self.stream = await self._open()
                    await self.stream.send_all(message)
                    return await self._response()
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError, ConnectionError) as exc:
                await self.aclose()
                if reused and attempt == 0:
                    continue  # the server closed an idle kept-alive connection: open a new one
                raise WireError(f"the remote broke off: {exc}") from exc
            except (OSError, trio.TooSlowError, ValueError) as exc:
                await self.aclose()
                raise WireError(f"the remote did not answer: {exc}") from exc
        raise WireError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _more(self) -> None:
        assert self.stream is not None
        data = await self.stream.receive_some(1 << 18)
        if not data:
            raise EOFError("connection closed")
        self.buffer += data

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEADER:
                raise ValueError("header line too long")
            await self._more()
        line = bytes(self.buffer[:end])
        del self.buffer[:end + 2]
        return line

    async def _exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._more()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def _response(self) -> tuple[int, bytes]:
        status_line = await self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        fields: dict[bytes, bytes] = {}
        while line := await self._line():
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        closing = fields.get(b"connection", b"").lower() == b"close" or parts[0] == b"HTTP/1.0"
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            chunks = []
            while size := int((await self._line()).split(b";")[0], 16):
                chunks.append(await self._exactly(size))
                await self._exactly(2)
            while await self._line():  # trailers, then the empty line
                pass
            data = b"".join(chunks)
        elif b"content-length" in fields:
            data = await self._exactly(int(fields[b"content-length"]))
        else:  # the body runs to the close
            try:
                while True:
                    await self._more()
            except EOFError:
                pass
            data, closing = bytes(self.buffer), True
            self.buffer.clear()
        if closing:
            await self.aclose()
        return status, data

    async def aclose(self) -> None:
        stream, self.stream = self.stream, None
        self.buffer.clear()
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
