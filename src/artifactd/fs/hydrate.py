"""Batched, lazy blob fetching: many missing blobs in one request, never one each.

A read that misses queues its blob as urgent and waits for it; other files are queued as
background work (``fusefs``, ``mountproc``). ``LANES`` fetches run at once, at most
``BACKGROUND_LANES`` of them background ones, so an explicit read always finds a lane
free: a lane takes every urgent blob queued so far (up to ``MAX_BATCH``), or else the next
background blobs up to ``BACKGROUND_BATCH`` blobs (fewer for the first batches) or
``BACKGROUND_BYTES`` bytes; while a read's fetch runs, at most one background batch does. The reads
that arrive while a fetch runs ride the next one together. A fetch is one protocol-v2
request over the lane's kept-alive connection (opened at mount time), its pack decoded in
memory (``fetchpack``). Blobs of ``STREAM_BYTES`` or more, and any batch the remote will
not answer that way, go through the lazy fetch git itself would run
(``--filter=blob:none --stdin``): git streams the pack to disk and the cache copies the
blob out in chunks, so a 2 GB file is never held in memory. A failed or timed-out fetch
fails its waiting reads (EIO); the next read tries again.
"""

from __future__ import annotations

import heapq
import json
import logging
import subprocess
import zlib
from collections.abc import Callable
from functools import partial
from itertools import count
from pathlib import Path

import trio

from artifactd.fs import fetchpack
from artifactd.fs.activity import ReadActivity
from artifactd.fs.awire import AsyncRemote
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.children import die_with_parent
from artifactd.fs.gitcmd import GIT, config_env, git_env
from artifactd.fs.wire import Remote, WireError

log = logging.getLogger("artifact_fs")

Plan = list[tuple[tuple[int, ...], list[str]]]  # background work: (priority, blobs) in order

MAX_BATCH = 2000
# Background work goes in bounded batches, so a background answer never grows without end.
BACKGROUND_BATCH = 2000
BACKGROUND_BYTES = 8 << 20
# The first background batch is small and each next one 4x larger, up to BACKGROUND_BATCH:
# a reader going through files in order finds its next ones early, a long run stays cheap.
FIRST_BACKGROUND_BATCH = 64
LANES = 3
BACKGROUND_LANES = 2  # about two batches in flight; the third lane is kept for reads
STREAM_BYTES = 32 << 20  # a blob this large is fetched by git, streamed to disk
# A read's fetch of at most this many bytes runs on the event loop (awire): no thread hops
# between the read and its blob. Larger ones, and background work, decode on a worker thread.
INLINE_BYTES = 1 << 20
FETCH_TIMEOUT = 30.0


class Hydrator:
    def __init__(self, git_dir: Path, cache: BlobCache, local: set[str], remote: str = "",
                 auth: Callable[[], tuple[str, str] | None] = lambda: None,
                 stats_file: Path | None = None, sizes: dict[str, int] | None = None,
                 timeout: float = FETCH_TIMEOUT) -> None:
        self.git_dir = git_dir
        self.remote = remote  # empty: always through git fetch
        self.auth = auth  # asks the credential cache again after a 401 (add-repo may have a new token)
        self.stats_file = stats_file
        self.sizes = sizes if sizes is not None else {}
        self.timeout = timeout
        self.connections: list[Remote] = []  # one per lane, kept alive
        self.inline: list[AsyncRemote] = []  # idle connections of the event loop's own fetches
        self.fetched_blobs = 0
        self.cache = cache
        self.local = local  # blobs already in the clone's object store
        self.urgent: dict[str, None] = {}
        # Background work by priority: the lowest key first (``prefetch``), stale heap entries
        # (taken, or queued again with a better key) skipped when popped.
        self.background: dict[str, tuple[int, ...]] = {}
        self.heap: list[tuple[tuple[int, ...], str]] = []
        # Plans of background work (priority, blobs), made on a worker thread when a lane is
        # free and no read waits: ordering a whole tree would hold up the event loop.
        self.producers: list[Callable[[], Plan]] = []
        self.sequence = count()
        self.in_flight: set[str] = set()
        self.background_lanes = 0
        self.urgent_lanes = 0
        self.background_batches = 0  # taken so far: the first ones are small (a ramp)
        self.done: dict[str, trio.Event] = {}
        self.queued = trio.Event()
        self.fetches = 0  # fetch requests sent (each one request round to the remote)
        self.activity = ReadActivity()  # reads on the wire: the bulk size load waits for them

    def connect(self, first: Remote | None = None) -> None:
        """Open every lane's connection now (``first`` may be one already open)."""
        if not self.remote:
            return
        auth = first.auth if first is not None else self.auth()
        while len(self.connections) < LANES:
            connection = first if first is not None and not self.connections else Remote(
                self.remote, auth, self.timeout)
            self.connections.append(connection)
        for connection in self.connections:
            try:
                connection.connect()
            except OSError as exc:  # the reads will say so (EIO) and try again
                log.info("cannot connect to the remote yet: %s", exc)

    async def ensure(self, oid: str) -> bool:
        """Wait until ``oid`` is in the cache; ``False`` if its fetch failed."""
        if self.cache.has(oid):
            return True
        event = self.done.setdefault(oid, trio.Event())
        if oid not in self.in_flight:
            self.background.pop(oid, None)
            self.urgent[oid] = None
            self.queued.set()
        await event.wait()
        return self.cache.has(oid)

    def request(self, oids: list[str]) -> None:
        """Fetch ``oids`` as if read, without waiting (they ride with the next read's batch)."""
        for oid in oids:
            if oid not in self.in_flight and not self.cache.has(oid):
                self.background.pop(oid, None)
                self.urgent[oid] = None
        if self.urgent:
            self.queued.set()

    def prefetch(self, oids: list[str], priority: tuple[int, ...] = (9,)) -> None:
        """Queue ``oids`` as background work; a lower ``priority`` goes first, then the order given."""
        for oid in oids:
            if oid in self.in_flight or oid in self.urgent or self.cache.known(oid):
                continue
            key = (*priority, next(self.sequence))
            if oid in self.background and self.background[oid] <= key:
                continue
            self.background[oid] = key
            heapq.heappush(self.heap, (key, oid))
        if self.background and self.background_lanes < (1 if self.urgent_lanes else BACKGROUND_LANES):
            self.queued.set()

    def defer(self, producer: Callable[[], Plan]) -> None:
        self.producers.append(producer)
        self.queued.set()

    def _take(self) -> tuple[list[str], bool]:
        """The next batch and whether it is background work (empty: nothing to do now)."""
        batch: list[str] = []
        background = not self.urgent
        # While a read's fetch runs, at most one background batch does: the server answers
        # the read without a crowd, and a reader that keeps missing does not starve the
        # background work that would stop its misses.
        if background and (self.background_lanes >= (1 if self.urgent_lanes else BACKGROUND_LANES)):
            self.queued = trio.Event()  # woken by a read, or when a lane is free
            return [], True
        if background:
            ramp = min(BACKGROUND_BATCH, FIRST_BACKGROUND_BATCH << (2 * self.background_batches))
            size = 0
            while self.heap and len(batch) < ramp and size < BACKGROUND_BYTES:
                key, oid = heapq.heappop(self.heap)
                if self.background.get(oid) != key:
                    continue  # taken already, or queued again with another key
                del self.background[oid]
                if self.cache.known(oid):
                    continue  # cached by this process (the disk is checked on the fetch's thread)
                batch.append(oid)
                size += self.sizes.get(oid, 0)
        else:
            while self.urgent and len(batch) < MAX_BATCH:
                oid = next(iter(self.urgent))
                del self.urgent[oid]
                batch.append(oid)
        if background and batch:
            self.background_lanes += 1
            self.background_batches += 1
        elif batch:
            self.urgent_lanes += 1
        idle = not (self.background or self.producers)
        full = self.background_lanes >= (1 if self.urgent_lanes else BACKGROUND_LANES)
        if not self.urgent and (idle or full):
            self.queued = trio.Event()  # woken again by a read, new prefetch or a lane freed
        self.in_flight.update(batch)
        return batch, background

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for lane in range(LANES):
                nursery.start_soon(self._worker, lane)

    async def _worker(self, lane: int) -> None:
        while True:
            await self.queued.wait()
            if self.producers:
                plan = await trio.to_thread.run_sync(self.producers.pop(0))
                for number, (priority, oids) in enumerate(plan):
                    self.prefetch(oids, priority)
                    if number % 8 == 7:
                        await trio.sleep(0)  # let FUSE requests in between
                continue
            batch, background = self._take()
            if not batch:
                continue  # another lane took the work, or the background lanes are full
            try:
                # Another mount of the host, or artifact-fs prefetch, may have put some on
                # disk: checked here, on a thread, not on the event loop that serves FUSE.
                wanted = await trio.to_thread.run_sync(self.cache.missing, batch) if background else batch
                if not background:
                    self.activity.begin()
                try:
                    await self._hydrate(wanted, lane, urgent=not background)
                finally:
                    if not background:
                        self.activity.end()
            except Exception as exc:  # the reads get EIO; the mount stays up
                log.warning("blob fetch of %d objects failed: %s", len(batch), exc)
            finally:
                self.in_flight.difference_update(batch)
                if background:
                    self.background_lanes -= 1
                else:
                    self.urgent_lanes -= 1
                if self.background or self.urgent or self.producers:
                    self.queued.set()
                for oid in batch:
                    event = self.done.pop(oid, None)
                    if event is not None:
                        event.set()

    def _connection(self, lane: int) -> Remote:
        while len(self.connections) <= lane:
            self.connections.append(Remote(self.remote, self.auth(), self.timeout))
        return self.connections[lane]

    def _fetch_http(self, oids: list[str], lane: int) -> set[str]:
        """The blobs of ``oids`` fetched over one v2 request into the cache (empty on failure)."""
        connection = self._connection(lane)
        for attempt in range(2):
            try:
                pack = fetchpack.fetch_pack(connection, oids)
                # Decoded, verified and written by the cache's writer process: a batch of
                # thousands of blobs decoded here would hold the FUSE loop's interpreter lock.
                written = self.cache.put_pack(pack)
                if written is not None:
                    return {oid for oid in oids if oid in written}
                blobs = fetchpack.parse_pack(pack)
                break
            except fetchpack.PackError as exc:
                if attempt == 0 and str(exc) in ("HTTP 401", "HTTP 403"):
                    connection.auth = self.auth()  # the credential cache may have a new token
                    continue
                log.info("v2 fetch of %d blobs fell back to git fetch: %s", len(oids), exc)
                return set()
            except (zlib.error, KeyError, IndexError, ValueError) as exc:
                log.info("v2 fetch of %d blobs fell back to git fetch: %s", len(oids), exc)
                return set()
        else:
            return set()
        return self._store(oids, blobs)

    def _store(self, oids: list[str], blobs: list[bytes]) -> set[str]:
        wanted = set(oids)
        stored = set()
        for data in blobs:
            oid = self.cache.put(data)
            if oid in wanted:
                stored.add(oid)
        return stored

    async def _fetch_inline(self, oids: list[str]) -> set[str]:
        """``_fetch_http`` on the event loop, for a read's small fetch."""
        if self.inline:
            connection = self.inline.pop()
        else:
            auth = self.connections[0].auth if self.connections else None
            connection = AsyncRemote(Remote(self.remote, auth, self.timeout))
        try:
            for attempt in range(2):
                status, body = await connection.request(
                    "POST", "/git-upload-pack", fetchpack.request_body(oids), fetchpack.POST_HEADERS)
                if status in (401, 403) and attempt == 0:  # the credential cache may have a new token
                    connection.remote.auth = await trio.to_thread.run_sync(self.auth)
                    continue
                break
            blobs = fetchpack.answer(status, body)
        except (fetchpack.PackError, zlib.error, KeyError, IndexError, ValueError) as exc:
            log.info("v2 fetch of %d blobs fell back to git fetch: %s", len(oids), exc)
            return set()
        finally:
            self.inline.append(connection)
        return self._store(oids, blobs)

    def _write_stats(self) -> None:
        if self.stats_file is not None:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fetches": self.fetches, "blobs": self.fetched_blobs}))
            tmp.replace(self.stats_file)

    async def _hydrate(self, batch: list[str], lane: int = 0, urgent: bool = False) -> None:
        if not batch:
            return
        missing = [oid for oid in batch if oid not in self.local]
        small = [oid for oid in missing if self.sizes.get(oid, 0) < STREAM_BYTES]
        if small and self.remote:
            self.fetches += 1
            inline = urgent and sum(self.sizes.get(oid, INLINE_BYTES + 1) for oid in small) <= INLINE_BYTES
            try:
                if inline:
                    received = await self._fetch_inline(small)
                else:
                    received = await trio.to_thread.run_sync(self._fetch_http, small, lane)
            except BaseException:
                self._write_stats()
                raise
            self.fetched_blobs += len(received)
            missing = [oid for oid in missing if oid not in received]
            batch = [oid for oid in batch if oid not in received]
            self._write_stats()
        if missing:
            await self._git_fetch(missing)
        if batch:  # what is in the clone's own store (a thread hop only when there is some)
            await trio.to_thread.run_sync(self.cache.fill_from_git, self.git_dir, batch)

    async def _git_fetch(self, missing: list[str]) -> None:
        self.fetches += 1
        settings = [("fetch.negotiationAlgorithm", "noop"), ("http.lowSpeedLimit", "1"),
                    ("http.lowSpeedTime", str(max(1, int(self.timeout))))]
        # Run (and waited for) on one worker thread, not trio.run_process: the fetch dies
        # with the mount (PR_SET_PDEATHSIG), which the kernel ties to the thread that
        # started it, and trio's Popen thread goes back to its pool at once.
        result = await trio.to_thread.run_sync(partial(
            subprocess.run,
            [GIT, "--git-dir", str(self.git_dir), "fetch", "--quiet", "--no-tags",
             "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
             "--stdin", "origin"],
            input="".join(f"{oid}\n" for oid in missing).encode(), capture_output=True, check=False,
            env=git_env(config_env(settings)), preexec_fn=die_with_parent(),
            timeout=max(self.timeout, 1.0) * 20))  # a 2 GB blob takes a while on any link
        if result.returncode != 0:
            self._write_stats()
            raise RuntimeError(result.stderr.decode(errors="replace").strip().splitlines()[-1:])
        self.local.update(missing)
        self.fetched_blobs += len(missing)
        self._write_stats()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


__all__ = ["Hydrator", "WireError"]
