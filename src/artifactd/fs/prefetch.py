"""What a mount fetches before it is read: directory prefetch, the tree's warm-up, the hot set.

Metadata stays free: a mount that is only listed (``ls -lR``, ``find``, ``git status``)
fetches no blob. Content reading starts a session: from the first read on,

- opening a directory queues its files (directories listed before the first read are
  queued then), at most ``DIRECTORY_BUDGET`` bytes of each, and reading a file queues its
  own directory the same way once the file is closed (the read itself goes alone);
- the whole tree is queued behind them, within the cache's budget;
- every queue is in ``priority.rank`` order: package manifests and lock files, source,
  the rest, binaries last (``binary``/``-text`` in the root ``.gitattributes``, which is
  fetched with the first read and never before).

A mount that starts with a learned hot set (``hotset``) has its working set fetched at
mount time; while its reads stay inside that set nothing else is queued (the set *is* the
prediction), and the first read outside it starts the ordinary prefetch above. The read
trace (every file opened for reading, in order) is kept for the next hot set.
"""

from __future__ import annotations

import contextlib
import stat
from collections.abc import Callable

from artifactd.fs import priority
from artifactd.fs.hydrate import Hydrator, Plan
from artifactd.fs.tree import Node, Tree

DIRECTORY_BUDGET = 8 << 20  # bytes of a directory's files queued when it is opened or read
MAX_LISTED = 10_000  # directories remembered before the first read
MAX_TRACE = 100_000
NEAR, FAR = 0, 1  # a directory in use before the rest of the tree, within one rank
PLAN_CHUNK = 1000  # blobs queued per step on the event loop


class Prefetcher:
    def __init__(self, tree: Tree, hydrator: Hydrator,
                 warm: Callable[[list[str]], list[tuple[int, str]]] | None = None,
                 hot: set[str] | None = None, attributes_oid: str = "") -> None:
        self.tree = tree
        self.hydrator = hydrator
        self.warm = warm  # (rank, blob) of the tree in warm-up order, given the binary patterns
        self.hot = hot or set()
        self.attributes_oid = attributes_oid
        self.binary: list[str] = []
        self.reading = False
        self.hot_only = bool(self.hot)
        self.listed: dict[int, None] = {}
        self.queued_dirs: set[int] = set()
        self.trace: dict[bytes, None] = {}
        self.inherited: list[bytes] = []  # the hot set this mount started with

    def opened_dir(self, node: Node) -> None:
        if self.reading and not self.hot_only:
            self._queue_dir(node)
        elif len(self.listed) < MAX_LISTED:
            self.listed[node.inode] = None

    def before_read(self, node: Node) -> None:
        """A file is opened for reading (its own fetch is the caller's, and urgent)."""
        if len(self.trace) < MAX_TRACE:
            self.trace[node.path] = None
        if self.hot_only and node.oid in self.hot:
            return
        self.hot_only = False
        if not self.reading:
            self.reading = True
            if self.attributes_oid:  # rides in the same batch as this read
                self.hydrator.request([self.attributes_oid])

    def after_read(self, node: Node | None = None) -> None:
        """After a read is done (``fusefs`` calls this when its file is closed, so that none
        of this competes with the read itself): queue ``node``'s directory, and the first
        time, the listed directories and the tree; the plan is made on a worker thread when
        a fetch lane is free."""
        if not self.reading or self.hot_only:
            return
        parent = self.tree.nodes.get(node.parent) if node is not None else None
        if parent is not None and parent.is_dir:
            self._queue_dir(parent)
        if self.warm is None:
            return
        warm, self.warm = self.warm, None
        listed = list(self.listed)
        self.listed.clear()

        def plan() -> Plan:
            self.binary = self._binary_patterns()
            work: Plan = []
            for inode in listed:
                work += self._dir_plan(self.tree.nodes[inode])
            by_rank: dict[int, list[str]] = {}
            for rank, oid in warm(self.binary):
                by_rank.setdefault(rank, []).append(oid)
            for rank, oids in sorted(by_rank.items()):
                work += [((rank, FAR), oids[at:at + PLAN_CHUNK]) for at in range(0, len(oids), PLAN_CHUNK)]
            return work

        self.hydrator.defer(plan)

    def _binary_patterns(self) -> list[str]:
        if not self.attributes_oid or not self.hydrator.cache.has(self.attributes_oid):
            return []
        data = self.hydrator.cache.memory(self.attributes_oid)
        if data is None:
            with contextlib.suppress(OSError):
                data = self.hydrator.cache.path(self.attributes_oid).read_bytes()
        return priority.binary_patterns(data or b"")

    def _queue_dir(self, directory: Node) -> None:
        for key, oids in self._dir_plan(directory):
            self.hydrator.prefetch(oids, key)

    def _dir_plan(self, directory: Node) -> Plan:
        if directory.inode in self.queued_dirs:
            return []
        self.queued_dirs.add(directory.inode)
        files = [self.tree.nodes[i] for i in directory.children.values()]
        # In name order within a rank: the order ``ls`` shows and a reader goes through.
        ranked = sorted((priority.rank(f.path, self.binary), f.path, f.size, f.oid)
                        for f in files if stat.S_ISREG(f.mode))
        budget = DIRECTORY_BUDGET
        by_rank: dict[int, list[str]] = {}
        for rank, _, size, oid in ranked:
            if size > budget:
                continue
            budget -= size
            by_rank.setdefault(rank, []).append(oid)
        return [((rank, NEAR), oids) for rank, oids in by_rank.items()]
