"""``S3RepoStore``: the repo store of the ``s3`` backend, as the rest of the server uses it.

It is a ``RepoStore`` whose directories are caches: every entry point that hands a repo's
directory to git (``ensure``, ``prepare``) first brings it to the catalog's generation (one
indexed read when it is current). What the local store reads from disk it reads from SQL
here: refs (``read_refs``, ``ref_list``), sizes (``size``: the bytes of the listed packs).
A fork copies rows; a delete drops them; packs nobody lists are removed from the bucket by
``sweep_trash`` once untouched for ``pack_grace_seconds``.

Pushes: ``commit_push`` runs in receive-pack's ``pre-receive`` (see services/git/push_guard.py),
after the objects are in the quarantine and before any ref moves: the quarantine's packs go
to the bucket (create-if-absent, under their content hash), then one SQL transaction swaps
every ref from its old value and lists the packs. A node dying between the two leaves an
unlisted pack for the sweep, never a ref to a missing object. A pack larger than one upload
part is already on its way while it arrives (``incoming``): ``pre-receive`` then only
completes that upload and puts the ``.idx`` beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass
from pathlib import Path

from artifactd.errors import Code, InternalError, ServiceUnavailable
from artifactd.observability import (
    S3_BYTES_DOWNLOADED,
    S3_OBJECT_STORE_ERRORS,
    S3_PACKS_MISSING,
    S3_PUSH_PACKS,
)
from artifactd.storage.forklink import LinkedObjects
from artifactd.storage.gitwrite import RefUpdateRefused
from artifactd.storage.objectstore import (
    ObjectExists,
    ObjectStore,
    ObjectStoreError,
    ObjectStoreUnavailable,
)
from artifactd.storage.repostore import PackTee, RepoStore, push_lock_busy
from artifactd.storage.s3store import cache
from artifactd.storage.s3store.catalog import ZERO_IDS, Catalog, Pack, StaleRef, pack_keys
from artifactd.storage.s3store.incoming import IncomingPack

log = logging.getLogger("artifactd.s3")

# A maintenance lease is short and renewed while its repack runs: a node that dies holding
# one (kill -9, a lost machine) blocks that repo's maintenance for a minute, not an hour.
# Renewing at a quarter of it tolerates clock skew between nodes of well over the few
# seconds NTP allows; and a lease lost anyway (a node stalled past it) is harmless, since
# the pack-list swap is itself a compare-and-swap.
LEASE_SECONDS = 60.0
RETRY_AFTER = 5  # seconds a client is asked to wait when the bucket is unreachable
_PACK_NAME = "pack-"
UPLOAD_PART_BYTES = 8 << 20  # the default of ``s3_upload_part_bytes``
# Parts of one streamed pack uploading at once. 8 MiB parts with 4 in flight measured the
# fastest 50 MB upload to SeaweedFS on loopback (2 in flight, or 16 MiB parts, were slower).
PARTS_IN_FLIGHT = 4
# How long ``pre-receive`` waits for the request body's end after index-pack has read the
# pack's last byte (the event loop sees the end a moment later; a client that sends more
# than its pack gets the upload after receive-pack instead).
CLAIM_TIMEOUT = 10.0
# Incomplete uploads (a node killed mid-push) are aborted by the sweep once this old, or
# older than the pack grace period if that is longer.
UPLOAD_HORIZON_SECONDS = 24 * 3600.0
UPLOAD_SWEEP_INTERVAL = 3600.0  # seconds between those listings (one LIST request each)


def unavailable(exc: ObjectStoreUnavailable) -> ServiceUnavailable:
    S3_OBJECT_STORE_ERRORS.inc()
    error = ServiceUnavailable(f"The object store is unavailable ({exc}); try again",
                               retry_after=RETRY_AFTER)
    error.code = Code.OBJECT_STORE_UNAVAILABLE
    return error


def _now_us() -> int:
    return time.time_ns() // 1000


class S3RepoStore(RepoStore):
    remote = True

    def __init__(self, data_dir: Path, catalog: Catalog, objects: ObjectStore, *,
                 owner: str = "0" * 16, cache_max_bytes: int = 10 * 10**9,
                 pack_grace_seconds: float = 3600.0, lease_seconds: float = LEASE_SECONDS,
                 upload_part_bytes: int = UPLOAD_PART_BYTES):
        super().__init__(data_dir, owner=owner)
        self.catalog = catalog
        self.objects = objects
        self.cache_max_bytes = cache_max_bytes
        self.pack_grace_seconds = pack_grace_seconds
        self.lease_seconds = lease_seconds
        self._evicting = threading.Lock()
        self._store_down_until = 0.0  # monotonic time until which pushes probe the bucket
        self._next_upload_sweep = 0.0  # monotonic time of the next look for stale uploads
        self._maintained: dict[str, _Maintained] = {}  # repo id -> its cache before the repack
        # repo id -> (generation, updates) of the push holding its refs lock (``unlock_refs``)
        self._committed: dict[str, tuple[int, tuple[tuple[str, str, str], ...]]] = {}
        self.upload_part_bytes = upload_part_bytes
        self._uploads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-upload")
        self._parts = ThreadPoolExecutor(max_workers=8, thread_name_prefix="s3-part")

    def _unavailable(self, exc: ObjectStoreUnavailable) -> ServiceUnavailable:
        self._store_down_until = time.monotonic() + RETRY_AFTER
        return unavailable(exc)

    def check_writable(self) -> None:
        """Before a push: after a failure of the bucket, a probe until it answers again, so
        that pushes get a 503 with ``Retry-After`` up front rather than a refused push."""
        if time.monotonic() < self._store_down_until:
            try:
                self.objects.check()
            except ObjectStoreUnavailable as exc:
                raise self._unavailable(exc) from None
            self._store_down_until = 0.0

    # -- the cache ---------------------------------------------------------------------------

    def ensure(self, repo_id: str, default_branch: str) -> Path:
        path = super().ensure(repo_id, default_branch)
        self._sync(repo_id, path, default_branch)
        return path

    def prepare(self, repo_id: str, default_branch: str) -> Path:
        return self.ensure(repo_id, default_branch)

    def _sync(self, repo_id: str, path: Path, default_branch: str) -> None:
        head = f"ref: refs/heads/{default_branch}\n"
        try:
            if (path / "HEAD").read_text() != head:  # changed through another node
                self.set_head(repo_id, default_branch)
        except FileNotFoundError:
            pass
        generation = self.catalog.generation(repo_id)
        if generation == cache.local_generation(path):
            cache.mark_used(path)
            return
        fetched = 0
        try:
            with cache.refs_lock(path):
                snapshot = self.catalog.snapshot(repo_id)
                if snapshot.generation != cache.local_generation(path):
                    fetched = cache.bring_current(path, snapshot, self.objects,
                                                  replaced=self._replaced(repo_id, path))
        except FileNotFoundError:
            # The cache was wiped under us: start again from an empty directory, once.
            path = super().ensure(repo_id, default_branch)
            with cache.refs_lock(path):
                fetched = cache.bring_current(path, self.catalog.snapshot(repo_id), self.objects)
        except ObjectStoreUnavailable as exc:
            raise self._unavailable(exc) from None
        except cache.PackMissing as exc:
            S3_PACKS_MISSING.inc()
            log.error("repo %s lists pack %s, which is missing from the bucket", repo_id, exc.name)
            raise InternalError(f"Pack {exc.name} of this repo is missing from the object store",
                                code=Code.PACK_MISSING) from None
        if fetched:
            S3_BYTES_DOWNLOADED.inc(fetched)
            self.evict(keep=repo_id)

    def evict(self, keep: str | None = None) -> int:
        """Drop whole repo caches, least recently used first, until the cache fits in
        ``cache_max_bytes``; a repo with a push or a sync running is skipped. Returns how
        many were dropped."""
        if not self._evicting.acquire(blocking=False):
            return 0
        try:
            entries = [(cache.last_used(path), cache.cache_bytes(path), repo_id, path)
                       for repo_id, path in self.repo_dirs()]
            total = sum(size for _, size, _, _ in entries)
            dropped = 0
            for _, size, repo_id, path in sorted(entries):
                if total <= self.cache_max_bytes:
                    break
                if repo_id == keep or repo_id in self._maintained \
                        or push_lock_busy(path) \
                        or cache.lock_busy(path, cache.REFS_LOCK):
                    continue
                self.drop_cache(repo_id)
                total -= size
                dropped += 1
            return dropped
        finally:
            self._evicting.release()

    def drop_cache(self, repo_id: str) -> None:
        """Remove this node's cache of the repo (nothing else: it is only a cache)."""
        path = self.path(repo_id)
        aside = self.trash_root / f"{repo_id}.{secrets.token_hex(4)}"
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    # -- what the local store reads from disk ------------------------------------------------

    def exists(self, repo_id: str) -> bool:
        return self.catalog.generation(repo_id) > 0 or super().exists(repo_id)

    def size(self, repo_id: str) -> int:
        return self.catalog.repo_bytes(repo_id)

    def read_refs(self, repo_id: str, names: Sequence[str]) -> dict[str, str | None]:
        return self.catalog.read_refs(repo_id, names)

    def ref_list(self, repo_id: str) -> list[tuple[str, str]]:
        return self.catalog.refs(repo_id)

    # -- pushes ------------------------------------------------------------------------------

    def lock_refs(self, repo_id: str) -> int:
        """Held from a push's SQL commit until its receive-pack exits (see ``cache``)."""
        return cache.open_refs_lock(self.path(repo_id))

    def unlock_refs(self, repo_id: str, fd: int) -> None:
        """receive-pack exited: if it moved the cache's refs to what this push committed and
        nothing else was committed in between, the cache is at the push's generation, and
        the next request (the client's next push or fetch) has nothing to sync."""
        try:
            committed = self._committed.pop(repo_id, None)
            if committed is not None:
                generation, updates = committed
                path = self.path(repo_id)
                on_disk = dict(_local_refs(path))
                if all(on_disk.get(ref) == (None if new in ZERO_IDS else new)
                       for _old, new, ref in updates):
                    cache.set_generation(path, generation)
        except OSError as exc:  # the cache wiped meanwhile: the next request syncs
            log.info("cache of repo %s not marked current after a push: %s", repo_id, exc)
        finally:
            os.close(fd)

    def refs_guard(self, repo_id: str) -> contextlib.AbstractContextManager[object]:
        """The cache's refs lock: a sync rewrites ``packed-refs`` by a rename of its own, which
        git's ``pack-refs`` (maintenance) would undo by renaming the copy it read before over
        it; the cache's refs would then be older than its generation says, for good (a fetch
        through this node advertising a stale head while SQL has the new one)."""
        return cache.refs_lock(self.path(repo_id))

    def incoming_pack(self, repo_id: str) -> IncomingPack:
        """Where a push's pack streams to the bucket while it arrives (``commit_push``)."""
        return IncomingPack(self.objects, self._parts, self._uploads,
                            part_bytes=self.upload_part_bytes, in_flight=PARTS_IN_FLIGHT)

    def commit_push(self, repo_id: str, quarantine: str | None,
                    updates: Sequence[tuple[str, str, str]],
                    incoming: PackTee | None = None) -> str | None:
        """Store the push's packs and swap its refs; None, or why it is refused (with the
        refs lock held: see ``lock_refs``). Raises ``ServiceUnavailable`` when the bucket
        cannot be reached. ``incoming``: the pack as it arrived, perhaps in the bucket
        already (see ``incoming``)."""
        path = self.path(repo_id)
        try:
            # The cache's refs made SQL's first: receive-pack checks each old value against
            # them after this commit, and they must agree with the compare-and-swap. A cache
            # at SQL's generation (the usual case: the last push came through this node)
            # costs one indexed read.
            current = cache.local_generation(path)
            if self.catalog.generation(repo_id) != current:
                snapshot = self.catalog.snapshot(repo_id)
                cache.bring_current(path, snapshot, self.objects,
                                    replaced=self._replaced(repo_id, path))
                current = snapshot.generation
            packs = _quarantine_packs(Path(quarantine)) if quarantine else []
            streamed = self._streamed(quarantine, packs, incoming)
            if streamed is not None:
                packs = [streamed]
                S3_PUSH_PACKS.labels("streamed").inc()
            else:
                if packs:
                    S3_PUSH_PACKS.labels("fallback" if isinstance(incoming, IncomingPack)
                                         and incoming.streaming else "whole").inc()
                # The touch beside the uploads, not before them: no row lists these packs
                # until the commit below, so no reader sees a half, and a sweep racing the
                # touch is the same race with the touch first (a sweep only deletes packs it
                # has a row for).
                touched = self._uploads.submit(self.catalog.touch_packs, packs, _now_us())
                try:
                    self._upload_all(Path(quarantine or "."), packs)
                finally:
                    touched.result()
        except ObjectStoreUnavailable as exc:
            raise self._unavailable(exc) from None
        except cache.PackMissing as exc:
            raise InternalError(f"Pack {exc.name} of this repo is missing from the object store",
                                code=Code.PACK_MISSING) from None
        try:
            generation = self.catalog.commit_push(repo_id, updates, [p.name for p in packs],
                                                  _now_us())
        except StaleRef as exc:
            return (f"artifactd: {exc.ref} changed since this push started (stale info, "
                    "another push won): fetch and try again")
        except LookupError:
            return "artifactd: the push's pack was removed meanwhile; push again"
        if generation == current + 1:  # no other commit between the cache's and this one
            self._committed[repo_id] = (generation, tuple(updates))
        return None

    def _streamed(self, quarantine: str | None, packs: list[Pack],
                  incoming: PackTee | None) -> Pack | None:
        """The push's one pack, stored through its streamed upload: the upload completed, the
        ``.idx`` put beside it and the pack's row touched, side by side, then the quarantine's
        files renamed to the upload's name. None: not streamed, or not the pack that arrived
        (a thin pack index-pack completed), or the upload failed; it is discarded, and the
        caller uploads the quarantine's packs as they are."""
        if not isinstance(incoming, IncomingPack):
            return None
        if quarantine is None or len(packs) != 1 or not incoming.streaming:
            incoming.discard()
            return None
        pack, folder = packs[0], Path(quarantine) / "pack"
        if not incoming.claim(folder / f"{_PACK_NAME}{pack.name}.pack", pack.name, CLAIM_TIMEOUT):
            incoming.discard()
            return None
        streamed = Pack(incoming.name, pack.size_bytes)
        jobs = [self._uploads.submit(self.catalog.touch_packs, [streamed], _now_us()),
                self._uploads.submit(incoming.complete),
                self._uploads.submit(self._put_once, pack_keys(streamed.name)[1],
                                     folder / f"{_PACK_NAME}{pack.name}.idx")]
        wait_all(jobs)
        failed = [exc for exc in (job.exception() for job in jobs) if exc is not None]
        if failed:
            if jobs[0].exception() is not None:
                # No row: nothing would ever sweep what the upload stored.
                self._uploads.submit(self._delete_quietly, pack_keys(streamed.name))
                incoming.discard()
                raise failed[0]  # the database: the push is refused as before
            incoming.discard()
            log.info("the streamed upload of a push's pack failed (%s); uploading it whole",
                     failed[0])
            return None  # a row and an .idx under the streamed name are swept as unlisted
        # receive-pack moves whatever the quarantine holds into the repo (it removes its
        # pack-<checksum>.keep by that name afterwards, so that file keeps its name).
        for suffix in (".pack", ".idx", ".rev"):
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder / f"{_PACK_NAME}{pack.name}{suffix}",
                          folder / f"{_PACK_NAME}{streamed.name}{suffix}")
        return streamed

    def _delete_quietly(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                self.objects.delete(key)
            except ObjectStoreError as exc:
                log.warning("could not delete %s (left unlisted in the bucket): %s", key, exc)

    def commit_write(self, repo_id: str, objects: Path | None,
                     updates: Sequence[tuple[str, str, str]]) -> int:
        """A REST write: the pack under ``objects/pack`` (None: no new object) to the bucket,
        then its ``(old, new, ref)`` updates compared-and-swapped in SQL with the pack listed,
        in one transaction, as a push's; only then does the cache get the pack and the refs.
        Raises ``RefUpdateRefused`` (nothing changed) when a ref is not at its old value, and
        ``ServiceUnavailable`` (nothing changed) when the bucket cannot be reached. Returns the
        bytes the repo's listed packs grew by."""
        packs = _quarantine_packs(objects) if objects is not None else []
        try:
            self._upload_at_once(objects or Path("."), packs)
        except ObjectStoreUnavailable as exc:
            raise self._unavailable(exc) from None
        try:
            generation = self.catalog.commit_push(repo_id, updates, [p.name for p in packs],
                                                  _now_us())
        except StaleRef as exc:
            raise RefUpdateRefused(f"{exc.ref} changed since the write started") from None
        except LookupError:
            raise RefUpdateRefused("the write's pack was removed meanwhile") from None
        self._adopt(repo_id, objects, packs, updates, generation)
        return sum(p.size_bytes for p in packs)

    def _upload_at_once(self, folder: Path, packs: list[Pack]) -> None:
        """A write's packs recorded (touched) and their ``.pack`` and ``.idx`` uploaded, all
        side by side: no SQL row lists them yet, so no reader can see a half, and a sweep that
        races the touch is the same race with the touch first. One round trip, not four."""
        if not packs:
            return
        jobs = [self._uploads.submit(self.catalog.touch_packs, packs, _now_us())]
        for pack in packs:
            data_key, index_key = pack_keys(pack.name)
            jobs += [self._uploads.submit(self._put_once, key, folder / "pack" /
                                          f"{_PACK_NAME}{pack.name}{suffix}")
                     for key, suffix in ((data_key, ".pack"), (index_key, ".idx"))]
        for job in jobs:
            job.result()

    def remove_work_area(self, path: Path) -> None:
        """A write's work area, removed off the request's path (start-up sweeps the work
        areas a stopped process left)."""
        self._uploads.submit(shutil.rmtree, path, ignore_errors=True)

    def _upload_all(self, objects: Path, packs: Sequence[Pack]) -> None:
        """Every file of ``packs`` at once (a pack's data and its index are two PUTs: one
        round trip instead of two for a small push)."""
        files = [(key, objects / "pack" / f"{_PACK_NAME}{pack.name}{suffix}")
                 for pack in packs
                 for key, suffix in zip(pack_keys(pack.name), (".pack", ".idx"), strict=True)]
        if len(files) == 1:
            self._put_once(*files[0])
            return
        for future in [self._uploads.submit(self._put_once, key, path) for key, path in files]:
            future.result()

    def _put_once(self, key: str, path: Path) -> None:
        # ObjectExists: the same content (the name is its hash), stored before.
        with contextlib.suppress(ObjectExists):
            self.objects.put_file(key, path, if_absent=True)

    def _adopt(self, repo_id: str, objects: Path | None, packs: list[Pack],
               updates: Sequence[tuple[str, str, str]], generation: int) -> None:
        """The committed write's pack moved into this node's cache (``.idx`` last, so git never
        sees half of it) and the cache's refs made SQL's: when the cache was at the generation
        the write committed on, by applying its updates (no SQL read); else by a sync. Best
        effort: the write is stored already, and a cache left behind only means the next read
        syncs."""
        path = self.path(repo_id)
        if not (path / "HEAD").is_file():
            return  # wiped meanwhile: the next read downloads
        try:
            for pack in packs:
                for suffix in (".pack", ".idx"):
                    target = cache.pack_file(path, pack.name, suffix)
                    if not target.exists():
                        target.parent.mkdir(exist_ok=True)
                        os.replace((objects or Path(".")) / "pack" / f"{_PACK_NAME}{pack.name}"
                                   f"{suffix}", target)
            with cache.refs_lock(path):
                if cache.local_generation(path) == generation - 1:
                    refs = dict(_local_refs(path))
                    for _old, new, ref in updates:
                        if new in ZERO_IDS:
                            refs.pop(ref, None)
                        else:
                            refs[ref] = new
                    cache.write_refs(path, tuple(sorted(refs.items())))
                    cache.set_generation(path, generation)
                else:
                    cache.bring_current(path, self.catalog.snapshot(repo_id), self.objects)
        except (OSError, ObjectStoreUnavailable, cache.PackMissing) as exc:
            log.warning("the cache of repo %s was left to the next read: %s", repo_id, exc)

    def _upload(self, objects: Path, pack: Pack) -> None:
        self._upload_all(objects, [pack])

    # -- maintenance -------------------------------------------------------------------------

    @contextlib.contextmanager
    def maintenance_lease(self, repo_id: str, default_branch: str) -> Iterator[bool]:
        """A lease in SQL (one node at a time, renewed while held), and the cache brought
        current first; the packs it holds then are what ``publish_maintenance`` compares
        against."""
        if not self.catalog.take_lease(repo_id, self.owner, _now_us(), self.lease_seconds):
            yield False
            return
        stop = threading.Event()
        renewer = threading.Thread(target=self._renew_lease, args=(repo_id, stop), daemon=True,
                                   name="artifactd-s3-lease")
        try:
            renewer.start()
            path = self.ensure(repo_id, default_branch)
            self._maintained[repo_id] = _Maintained(
                frozenset(p.name for p in _quarantine_packs(path / "objects")),
                _pack_dir_identity(path))
            yield True
        finally:
            stop.set()
            renewer.join()
            self._maintained.pop(repo_id, None)
            self.catalog.release_lease(repo_id, self.owner)

    def _renew_lease(self, repo_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.lease_seconds / 4):
            try:
                if not self.catalog.take_lease(repo_id, self.owner, _now_us(),
                                               self.lease_seconds):
                    log.warning("maintenance of repo %s lost its lease (this node stalled past "
                                "it); its pack-list swap will find out", repo_id)
                    return
            except Exception as exc:  # the database away for a moment: again at the next tick
                log.warning("renewing the maintenance lease of repo %s failed: %s", repo_id,
                            type(exc).__name__)

    def _replaced(self, repo_id: str, path: Path) -> frozenset[str]:
        """The packs a maintenance running here may have replaced in this very cache: one it
        found at its start that is gone from the disk now was deleted by git's repack, after
        the pack holding its objects was written. A sync must not download it again, or
        ``publish_maintenance`` would take it for a pack the repack kept and the repo's pack
        list would not shrink (what made the two-node maintenance test flaky)."""
        state = self._maintained.get(repo_id)
        if state is None or _pack_dir_identity(path) != state.pack_dir:
            return frozenset()  # none running, or the cache was wiped and rebuilt meanwhile
        return state.packs

    def publish_maintenance(self, repo_id: str) -> None:
        """Upload the packs the repack made and swap them for the ones it replaced, in one
        transaction; pushes listed meanwhile stay listed. The replaced packs stay in the
        bucket for the grace period (readers on other nodes may still be on them)."""
        state = self._maintained.get(repo_id)
        if state is None:
            return
        path = self.path(repo_id)
        objects = path / "objects"
        now_packs = {p.name: p for p in _quarantine_packs(objects)}
        if _pack_dir_identity(path) != state.pack_dir or not now_packs:
            # The cache was wiped during the repack: what is on disk now says nothing about
            # what the repack replaced, and a swap made from it could unlist every pack.
            log.warning("the cache of repo %s was replaced during its maintenance; its pack "
                        "list is left as it was", repo_id)
            return
        added = [pack for name, pack in now_packs.items() if name not in state.packs]
        removed = [name for name in state.packs if name not in now_packs]
        if not added and not removed:
            return
        try:
            self.catalog.touch_packs(added, _now_us())
            for pack in added:
                self._upload(objects, pack)
        except ObjectStoreUnavailable as exc:
            raise self._unavailable(exc) from None
        if not self.catalog.swap_packs(repo_id, removed, [p.name for p in added], _now_us()):
            log.info("maintenance of repo %s lost a race on its pack list; left as it was",
                     repo_id)

    # -- forks, imports, deletes -------------------------------------------------------------

    def fork(self, parent_id: str, child_id: str, refs: Sequence[tuple[str, str]],
             default_branch: str) -> LinkedObjects:
        self.path(parent_id)
        self.path(child_id)
        size = self.catalog.fork(parent_id, child_id, refs, _now_us())
        return LinkedObjects(objects=0, bytes=size, files=0)

    def install(self, staging: Path, repo_id: str) -> Path:
        """An import: the filled repo's packs uploaded and its refs published, then the
        directory kept as this node's cache."""
        packs = _quarantine_packs(staging / "objects")
        now = _now_us()
        try:
            self.catalog.touch_packs(packs, now)
            for pack in packs:
                self._upload(staging / "objects", pack)
        except ObjectStoreUnavailable as exc:
            raise self._unavailable(exc) from None
        refs = _local_refs(staging)
        generation = self.catalog.publish(repo_id, refs, [p.name for p in packs], now)
        cache.write_refs(staging, tuple(refs))
        cache.set_generation(staging, generation)
        return super().install(staging, repo_id)

    def trash(self, repo_id: str) -> None:
        self.catalog.forget_repo(repo_id, _now_us())
        super().trash(repo_id)

    def sweep_trash(self, grace_seconds: float = 0.0) -> int:
        removed = super().sweep_trash(grace_seconds)
        try:
            self.sweep_packs()
        except ObjectStoreUnavailable as exc:
            log.warning("pack sweep skipped: %s", exc)
        return removed

    def sweep_packs(self, grace_seconds: float | None = None) -> int:
        """Delete packs no repo lists, untouched for the grace period; returns how many."""
        grace = self.pack_grace_seconds if grace_seconds is None else grace_seconds
        cutoff = _now_us() - int(grace * 1_000_000)
        removed = 0
        if time.monotonic() >= self._next_upload_sweep:
            self._next_upload_sweep = time.monotonic() + UPLOAD_SWEEP_INTERVAL
            self._abort_stale_uploads(cutoff)
        for name in self.catalog.sweepable(cutoff):
            if self.catalog.drop_pack(name, cutoff):
                for key in pack_keys(name)[::-1]:  # the index first: no half pack is visible
                    self.objects.delete(key)
                removed += 1
        return removed


    def _abort_stale_uploads(self, cutoff: int) -> None:
        """Streamed push uploads a killed process never completed nor aborted. Not after the
        grace period alone: a push over a slow link may stream for longer."""
        upload_cutoff = min(cutoff, _now_us() - int(UPLOAD_HORIZON_SECONDS * 1_000_000))
        for key, upload_id, started in self.objects.multipart_uploads("packs/"):
            if int(started * 1_000_000) < upload_cutoff:
                self.objects.abort_multipart(key, upload_id)


@dataclass(frozen=True)
class _Maintained:
    """A cache as a maintenance found it: its packs, and which directory held them."""

    packs: frozenset[str]
    pack_dir: tuple[int, int] | None


def _pack_dir_identity(git_dir: Path) -> tuple[int, int] | None:
    """(device, inode) of the cache's pack directory: a wiped and rebuilt cache has another."""
    try:
        info = os.stat(git_dir / "objects" / "pack")
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _quarantine_packs(objects: Path) -> list[Pack]:
    """The complete packs (an index next to the data) under ``objects/pack``."""
    found: list[Pack] = []
    folder = objects / "pack"
    if not folder.is_dir():
        return found
    for entry in sorted(folder.glob(f"{_PACK_NAME}*.idx")):
        name = entry.name[len(_PACK_NAME):-len(".idx")]
        data = entry.with_suffix(".pack")
        if data.is_file() and all(c in "0123456789abcdef" for c in name):
            found.append(Pack(name, data.stat().st_size + entry.stat().st_size))
    return found


def _local_refs(git_dir: Path) -> list[tuple[str, str]]:
    """A repo directory's refs (loose files win over ``packed-refs``), symbolic ones left out."""
    refs: dict[str, str] = {}
    try:
        for line in (git_dir / "packed-refs").read_text(errors="replace").splitlines():
            if line.startswith(("#", "^")):
                continue
            sha, _, name = line.partition(" ")
            if name:
                refs[name] = sha
    except FileNotFoundError:
        pass
    root = git_dir / "refs"
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = Path(dirpath) / name
            value = full.read_text(errors="replace").strip()
            if value and not value.startswith("ref:") and not name.endswith(".lock"):
                refs[str(full.relative_to(git_dir))] = value
    return sorted(refs.items())
