"""A push's pack streamed to the bucket while it arrives.

After a receive-pack request's command section, the request body is the pack exactly as
the client made it. ``IncomingPack`` is given the same bytes on their way to git's stdin and
uploads them as a multipart upload, parts of ``part_bytes`` with a few in flight, while
index-pack is still reading them. The pack's own name (its trailing checksum) is known only
at its end and an upload's key is fixed at its start, so a streamed pack is stored under a
fresh random name of the same shape; the push renames the quarantine's files to it, so that
the cache, the catalog and the bucket agree on one name (git reads a pack through its index
and never checks the file name against the checksum).

``claim`` (in ``pre-receive``) says whether index-pack's pack is byte-identical to what
arrived: the same length and the same trailing checksum. A thin pack that index-pack
completed with bases from the repo has another checksum: then the upload is discarded and
the completed pack goes up as it did before streaming. A pack smaller than one part is
never streamed (no upload is even started), so a small push costs what it did.

Every way out but a completed upload ends in ``discard``, which aborts the upload once its
parts are no longer in flight; an upload a killed process left behind is aborted by the
pack sweep (``S3RepoStore.sweep_packs``). Neither is ever a visible object.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from pathlib import Path

from artifactd.observability import S3_PUSH_UPLOADS_ABORTED
from artifactd.storage.objectstore import ObjectStore, ObjectStoreError
from artifactd.storage.s3store.catalog import pack_keys

log = logging.getLogger("artifactd.s3")

PACK_SIGNATURE = b"PACK"
TRAILER = 20  # bytes of a SHA-1 pack's trailing checksum (its name, in hex)

# What an upload can be: still receiving, past the point of no return, or given up.
_OPEN, _COMPLETING, _COMPLETED, _DISCARDED = "open", "completing", "completed", "discarded"


class IncomingPack:
    """One push's pack on its way to the bucket (see the module docstring).

    ``feed`` and ``finish`` run on the event loop; ``claim``, ``complete`` and ``discard``
    may run on any thread."""

    def __init__(self, objects: ObjectStore, parts: ThreadPoolExecutor,
                 tasks: ThreadPoolExecutor, *, part_bytes: int, in_flight: int):
        self.name = secrets.token_hex(TRAILER)
        self.key = pack_keys(self.name)[0]
        self._objects = objects
        # Two pools: an abort waits for parts, so it must not wait in the parts' own queue.
        self._executor = parts
        self._tasks = tasks
        self._part_bytes = part_bytes
        self._in_flight = in_flight
        self._buffer = bytearray()
        self._received = 0
        self._tail = b""
        self._upload: Future[str] | None = None  # the upload id, once the first part is full
        self._parts: list[Future[str]] = []
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._state = _OPEN
        self._failed = False  # not the client's pack, or a part did not go up: not claimable

    @property
    def streaming(self) -> bool:
        """Whether an upload was started (the pack passed one part)."""
        return self._upload is not None

    async def feed(self, data: bytes) -> None:
        """The next bytes of the pack; waits while ``in_flight`` parts are uploading."""
        if self._failed or self._state != _OPEN or not data:
            return
        if self._received < len(PACK_SIGNATURE):
            head = bytes(self._buffer[:len(PACK_SIGNATURE)]) + data[:len(PACK_SIGNATURE)]
            if not PACK_SIGNATURE.startswith(head[:len(PACK_SIGNATURE)]):
                self._give_up()  # push options or a push certificate first: not streamed
                return
        self._received += len(data)
        self._tail = (self._tail + data[-TRAILER:])[-TRAILER:]
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            part = bytes(self._buffer[:self._part_bytes])
            del self._buffer[:self._part_bytes]
            self._submit(part)
            await self._backpressure()
            if self._failed:
                return

    def finish(self) -> None:
        """The request body ended: the rest goes up as the last part."""
        if self._state == _OPEN and not self._failed and self._upload is not None \
                and self._buffer:
            self._submit(bytes(self._buffer))
        self._buffer = bytearray()
        self._ended.set()

    def claim(self, pack: Path, name: str, timeout: float) -> bool:
        """Whether the bytes that arrived are exactly ``pack`` (index-pack's ``.pack``,
        named ``name``) and went up as an upload; waits up to ``timeout`` for the body's end
        (index-pack has read the trailer, but the loop may not have seen the body end yet)."""
        if not self._ended.wait(timeout):
            return False
        if self._failed or self._upload is None or len(name) != len(self.name):
            return False
        if any(part.done() and part.exception() is not None for part in self._parts):
            return False
        try:
            size = pack.stat().st_size
        except OSError:
            return False
        return self._received == size and self._tail == bytes.fromhex(name)

    def complete(self) -> None:
        """Wait for the parts and make them the object ``key``; raises ``ObjectStoreError``
        (then ``discard``). Once this starts, ``discard`` leaves the upload alone: the push
        that claimed it may be about to list it."""
        with self._lock:
            if self._state != _OPEN or self._upload is None:
                raise ObjectStoreError("the pack's upload was discarded")
            self._state = _COMPLETING
        try:
            upload_id = self._upload.result()
            etags = [part.result() for part in self._parts]
            self._objects.complete_multipart(self.key, upload_id, etags)
        except BaseException:
            with self._lock:
                self._state = _OPEN
            raise
        with self._lock:
            self._state = _COMPLETED

    def discard(self) -> None:
        """Give the upload up (nothing visible is left); a no-op once ``complete`` began."""
        with self._lock:
            if self._state != _OPEN:
                return
            self._state = _DISCARDED
        self._buffer = bytearray()
        self._ended.set()
        upload = self._upload
        if upload is not None:
            parts = list(self._parts)
            self._tasks.submit(self._abort, upload, parts)

    def _abort(self, upload: Future[str], parts: list[Future[str]]) -> None:
        # A part still uploading could outlive an abort made before it ends (S3 says to
        # abort again then): wait for every part first.
        wait_all([upload, *parts])
        if upload.exception() is not None:
            return  # never started
        try:
            self._objects.abort_multipart(self.key, upload.result())
            S3_PUSH_UPLOADS_ABORTED.inc()
        except ObjectStoreError as exc:
            log.warning("aborting the upload of a discarded push pack failed (the pack "
                        "sweep retries it): %s", exc)

    def _give_up(self) -> None:
        self._failed = True
        self._buffer = bytearray()

    def _submit(self, part: bytes) -> None:
        if self._upload is None:
            self._upload = self._executor.submit(self._objects.start_multipart, self.key)
        number = len(self._parts) + 1
        self._parts.append(self._executor.submit(self._put, number, part))

    def _put(self, number: int, part: bytes) -> str:
        assert self._upload is not None
        return self._objects.put_part(self.key, self._upload.result(), number, part)

    async def _backpressure(self) -> None:
        """Hold the request body back while ``in_flight`` parts are uploading: memory per push
        stays bounded, and a slow bucket slows the push rather than filling the node."""
        while True:
            pending = [part for part in self._parts if not part.done()]
            if any(part.done() and part.exception() is not None for part in self._parts):
                self._give_up()
                return
            if len(pending) < self._in_flight:
                return
            await asyncio.wait([asyncio.wrap_future(pending[0])])
