"""Blob sizes learned while the mount already answers: a ``stat`` waits for its own size.

A blobless clone has no blob sizes, and asking the remote for all of them (``object-info``,
``objectinfo.py``) takes a tenth of a second per 10k blobs. The mount does not wait for
that: it answers as soon as the tree is read, and every blob starts ``UNSIZED``. The sizes
then arrive in the background (``load``), and the git index, which records them, is
written once they all have. Until then a ``stat`` (``lookup``, ``getattr``, a ``readdir``
window) of a blob whose size is unknown asks the remote for just those blobs and waits,
and the ``.git`` file opens only once the index is written. So no size is ever shown
wrong, ``git status`` never compares against a half-written index, and metadata still
downloads no content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from artifactd.fs import objectinfo
from artifactd.fs.activity import ReadActivity
from artifactd.fs.awire import AsyncRemote
from artifactd.fs.tree import UNSIZED, Node, Tree
from artifactd.fs.wire import WireError

log = logging.getLogger("artifact_fs")

RETRIES = 5  # of the background load, a second apart; a stat asks by itself meanwhile
RETRY_SECONDS = 1.0


class SizesUnavailable(RuntimeError):
    """The remote did not give the size of a blob that a ``stat`` waits for."""


class Sizes:
    def __init__(self, known: dict[str, int], tree: Callable[[], Tree],
                 load_all: Callable[[], dict[str, int]] | None = None,
                 on_demand: AsyncRemote | None = None,
                 write_index: Callable[[], None] | None = None,
                 activity: ReadActivity | None = None) -> None:
        self.known = known  # shared with the hydrator: oid -> size
        self.tree = tree  # the tree shown now (a refresh replaces it)
        self.load_all = load_all  # blocking: every missing size (None: all known already)
        self.on_demand = on_demand  # a connection of its own for the sizes a stat waits for
        self.write_index = write_index
        self.activity = activity or ReadActivity()  # a stat's own request counts as a read
        self.all_known = trio.Event()
        self.index_ready = trio.Event()
        self.error = ""  # why the background load gave up, once it has
        self.asking = trio.Lock()  # one on-demand request at a time on its connection
        # The blobs without a size when the load started (set by the mount): once the stats'
        # own requests have given them all (an ``ls -lR`` does), the index is written then,
        # not after the paced bulk load, which a ``git status`` opening ``.git`` waits for.
        self.outstanding: set[str] | None = None
        if load_all is None:
            self.all_known.set()
            self.index_ready.set()

    async def load(self) -> None:
        """The background work: every size, then the nodes' sizes, then the index."""
        if self.load_all is None:
            return
        load_all = self.load_all
        for attempt in range(RETRIES):
            try:
                self.known.update(await trio.to_thread.run_sync(load_all))
                break
            except (objectinfo.ObjectInfoError, OSError) as exc:
                if self.all_known.is_set():  # stopped: the stats asked for every size first
                    return
                self.error = str(exc)
                log.warning("loading blob sizes failed (attempt %d of %d): %s", attempt + 1, RETRIES, exc)
                await trio.sleep(RETRY_SECONDS)
        else:
            self.index_ready.set()  # nothing to wait for any more: `.git` says EIO
            return
        if not self.all_known.is_set():
            await self._complete()

    async def _complete(self) -> None:
        """Every size is known: the nodes get theirs, then the index is written."""
        self.error = ""
        self.tree().apply_sizes(self.known)
        self.all_known.set()
        if self.write_index is not None:
            await trio.to_thread.run_sync(self.write_index)
        self.index_ready.set()

    @property
    def failed(self) -> bool:
        return self.index_ready.is_set() and not self.all_known.is_set()

    async def wait(self, nodes: Iterable[Node]) -> None:
        """Until every node of ``nodes`` has its size; ``SizesUnavailable`` if the remote
        cannot say."""
        unsized = [node for node in nodes if node.size == UNSIZED]
        if not unsized:
            return
        wanted = sorted({node.oid for node in unsized if node.oid not in self.known})
        if wanted and not self.all_known.is_set():
            await self._ask(wanted)
        for node in unsized:
            size = self.known.get(node.oid)
            if size is None:
                raise SizesUnavailable(f"no size for blob {node.oid}: {self.error or 'not given'}")
            if node.size == UNSIZED:  # a write may have given it one meanwhile
                node.size = size

    async def _ask(self, oids: list[str]) -> None:
        if self.on_demand is None:
            await self.all_known.wait()
            return
        remote = self.on_demand
        async with self.asking:
            oids = [oid for oid in oids if oid not in self.known]  # asked meanwhile
            if not oids or self.all_known.is_set():
                return
            self.activity.begin()
            try:  # on the event loop (awire): a stat waits for one round trip, no thread hops
                for start in range(0, len(oids), objectinfo.BATCH):
                    chunk = oids[start:start + objectinfo.BATCH]
                    status, answer = await remote.request("POST", "/git-upload-pack",
                                                          objectinfo.request_body(chunk),
                                                          objectinfo.POST_HEADERS)
                    self.known.update(objectinfo.parse_answer(status, answer))
            except (objectinfo.ObjectInfoError, WireError) as exc:
                self.error = str(exc)
                log.warning("sizes of %d blobs a stat waits for: %s", len(oids), exc)
            finally:
                self.activity.end()
            if self.outstanding is not None and not self.all_known.is_set():
                self.outstanding.difference_update(oid for oid in oids if oid in self.known)
                if not self.outstanding:
                    await self._complete()

