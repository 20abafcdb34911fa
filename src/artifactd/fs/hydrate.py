"""Batched, lazy blob fetching: many missing blobs in one ``git fetch``, never one each.

A read that misses queues its blob as urgent and waits for it; other files are queued as
background work (``fusefs``). ``WORKERS`` fetches run at once, each taking every urgent
blob queued so far up to ``MAX_BATCH``, or else up to ``BACKGROUND_BATCH`` others: the
reads that arrive while a fetch runs ride the next one together. A fetch is one protocol-v2
request over a kept-alive connection, its pack decoded in memory (``fetchpack``); if that
fails, the lazy fetch git itself would run (``--filter=blob:none --stdin``), for the batch.
A failed or timed-out fetch fails its waiting reads (EIO); the next read tries again.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from artifactd.fs import fetchpack
from artifactd.fs.blobcache import BlobCache
from artifactd.fs.gitcmd import GIT, config_env, git_env

log = logging.getLogger("artifact_fs")

MAX_BATCH = 2000
# Background work goes in smaller batches, so an explicit read never waits behind a long one.
BACKGROUND_BATCH = 500
WORKERS = 2
FETCH_TIMEOUT = 60.0


class Hydrator:
    def __init__(self, git_dir: Path, cache: BlobCache, local: set[str], remote: str = "",
                 auth: Callable[[], tuple[str, str] | None] = lambda: None,
                 stats_file: Path | None = None) -> None:
        self.git_dir = git_dir
        self.remote = remote  # empty: always through git fetch
        self.auth = auth  # asks the credential cache again after a 401 (add-repo may have a new token)
        self.stats_file = stats_file
        self.client: httpx.Client | None = None
        self.fetched_blobs = 0
        self.cache = cache
        self.local = local  # blobs already in the clone's object store
        self.urgent: dict[str, None] = {}
        self.background: dict[str, None] = {}
        self.in_flight: set[str] = set()
        self.done: dict[str, trio.Event] = {}
        self.queued = trio.Event()
        self.fetches = 0  # git fetches run (each one request round to the remote)

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

    def prefetch(self, oids: list[str]) -> None:
        for oid in oids:
            if oid not in self.in_flight and oid not in self.urgent and not self.cache.has(oid):
                self.background[oid] = None
        if self.background:
            self.queued.set()

    def _take(self) -> list[str]:
        # Explicit reads go alone: a read never waits for background blobs riding along.
        queue, limit = (self.urgent, MAX_BATCH) if self.urgent else (self.background, BACKGROUND_BATCH)
        batch: list[str] = []
        while queue and len(batch) < limit:
            oid = next(iter(queue))
            del queue[oid]
            batch.append(oid)
        if not self.urgent and not self.background:
            self.queued = trio.Event()
        self.in_flight.update(batch)
        return batch

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        while True:
            await self.queued.wait()
            batch = self._take()
            if not batch:
                continue
            try:
                await self._hydrate(batch)
            except Exception as exc:  # the reads get EIO; the mount stays up
                log.warning("blob fetch of %d objects failed: %s", len(batch), exc)
            finally:
                self.in_flight.difference_update(batch)
                for oid in batch:
                    event = self.done.pop(oid, None)
                    if event is not None:
                        event.set()

    def _fetch_http(self, oids: list[str]) -> set[str]:
        """The blobs of ``oids`` fetched over one v2 request into the cache (empty on failure)."""
        for attempt in range(2):
            if self.client is None:
                self.client = httpx.Client(auth=self.auth(), timeout=FETCH_TIMEOUT,
                                           headers={"User-Agent": "git/artifact-fs"})
            try:
                blobs = fetchpack.fetch(self.client, self.remote, oids)
                break
            except fetchpack.PackError as exc:
                if attempt == 0 and str(exc) in ("HTTP 401", "HTTP 403"):
                    self.client.close()
                    self.client = None  # the next attempt asks the credential cache again
                    continue
                log.info("v2 fetch of %d blobs fell back to git fetch: %s", len(oids), exc)
                return set()
            except (httpx.HTTPError, zlib.error, KeyError, IndexError, ValueError) as exc:
                log.info("v2 fetch of %d blobs fell back to git fetch: %s", len(oids), exc)
                return set()
        else:
            return set()
        wanted = set(oids)
        stored = set()
        for data in blobs:
            oid = self.cache.put(data)
            if oid in wanted:
                stored.add(oid)
        self.cache.evict(self.cache.limit)
        return stored

    def _write_stats(self) -> None:
        if self.stats_file is not None:
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"fetches": self.fetches, "blobs": self.fetched_blobs}))
            tmp.replace(self.stats_file)

    async def _hydrate(self, batch: list[str]) -> None:
        missing = [oid for oid in batch if oid not in self.local]
        if missing and self.remote:
            self.fetches += 1
            received = await trio.to_thread.run_sync(self._fetch_http, missing)
            self.fetched_blobs += len(received)
            missing = [oid for oid in missing if oid not in received]
            batch = [oid for oid in batch if oid not in received]
            self._write_stats()
        if missing:
            self.fetches += 1
            settings = [("fetch.negotiationAlgorithm", "noop")]
            with trio.fail_after(FETCH_TIMEOUT):
                result = await trio.run_process(
                    [GIT, "--git-dir", str(self.git_dir), "fetch", "--quiet", "--no-tags",
                     "--no-write-fetch-head", "--recurse-submodules=no", "--filter=blob:none",
                     "--stdin", "origin"],
                    stdin="".join(f"{oid}\n" for oid in missing).encode(),
                    capture_stdout=True, capture_stderr=True, check=False,
                    env=git_env(config_env(settings)))
            if result.returncode != 0:
                raise RuntimeError(result.stderr.decode(errors="replace").strip().splitlines()[-1:])
            self.local.update(missing)
            self.fetched_blobs += len(missing)
            self._write_stats()
        await trio.to_thread.run_sync(self.cache.fill_from_git, self.git_dir, batch)
