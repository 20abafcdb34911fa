"""A mount that answers from its root while the blobless clone runs behind it.

``rootfirst.read_root`` gives the root's entries and their sizes in three requests; the
mount goes up with them (``early``: an ``ArtifactFS`` over the root alone) and the clone
runs meanwhile. Until the clone lands and the full mount is prepared (``land``), what the
root alone can answer is answered from it: ``lookup``, ``getattr`` and listing of the
root, and opening and reading its files (fetched through the hydrator's batch path). All
else (below the root, ``.git``'s contents, writes, ``statfs``) waits for the landing, and
fails with EIO if the clone failed. The full tree numbers the root's entries as ``early``
did (``tree.Tree``), so the inodes the kernel has stay right; handles opened before the
landing keep being served by ``early``.
"""

from __future__ import annotations

import errno
import inspect
import logging
import time
from typing import Any

import pyfuse3
import trio

from artifactd.fs import rootfirst
from artifactd.fs.fusefs import ArtifactFS
from artifactd.fs.tree import GIT_MODES, GITFILE_INODE, ROOT_INODE, UNSIZED, Entry, Node
from artifactd.fs.wire import Remote
from artifactd.fs.write.layer import WRITE_FLAGS

log = logging.getLogger("artifact_fs")


class RootView(pyfuse3.Operations):
    def __init__(self, early: ArtifactFS, remote: Remote | None = None, *, reads_wait: bool = False) -> None:
        super().__init__()
        self.early = early
        # A remote with a hot set: opening a file waits for the landing, which queues the
        # hot set as one batch (a fork's first session: two fetch requests, not one a file).
        self.reads_wait = reads_wait
        self.remote = remote  # for the directories below the root read before the landing
        # directories of ``early`` whose entries it has (a submodule has none to read)
        submodules = {e.path for e in early.tree.entries if e.kind == "commit"}
        self.loaded = {ROOT_INODE} | {n.inode for n in early.tree.nodes.values() if n.path in submodules}
        self.loading = trio.Lock()  # one directory read at a time on ``remote``
        self.full: ArtifactFS | None = None
        self.landed = trio.Event()
        self.failed = ""  # why the clone or the full mount could not be had
        self.early_handles: set[int] = set()  # opened before the landing: early's to serve
        self.events: list[tuple[str, float]] = []  # each step and its time: in the mount's log too

    def note(self, event: str) -> None:
        self.events.append((event, time.time()))
        log.info("root-first: %s", event)

    def land(self, full: ArtifactFS) -> None:
        full.next_fh = self.early.next_fh  # one handle numbering for both
        self.full = full
        self.note("landed: the full tree answers")
        self.landed.set()

    def fail(self, reason: str) -> None:
        self.failed = reason
        self.note(f"failed: {reason}")
        self.landed.set()

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()

    async def _dir(self, inode: int) -> bool:
        """Whether ``early`` answers for directory ``inode`` (before the landing), its
        entries read from the remote first if need be (``rootfirst.read_tree``)."""
        node = self.early.tree.nodes.get(inode) if self.full is None else None
        if node is None or not node.is_dir:
            return False
        if inode in self.loaded:
            return True
        if self.remote is None:
            return False
        async with self.loading:
            if inode in self.loaded or self.full is not None:
                return self.full is None
            try:
                entries, sizes = await trio.to_thread.run_sync(rootfirst.read_tree, self.remote, node.oid)
            except rootfirst.RootReadError as exc:  # the landing will answer
                log.info("root-first: a directory could not be read before the clone: %s", exc)
                return False
            if self.full is not None:
                return False
            self._add(node, entries, sizes)
            self.note("read a directory")
            return True

    def _add(self, directory: Node, entries: list[Entry], sizes: dict[str, int]) -> None:
        tree = self.early.tree
        self.early.hydrator.sizes.update(sizes)
        inode = max(tree.nodes) + 1
        for entry in entries:
            path = directory.path + b"/" + entry.path
            size = sizes.get(entry.oid, UNSIZED) if entry.kind == "blob" else 0
            child = Node(inode, entry.path, path, GIT_MODES[entry.git_mode], entry.oid, size, directory.inode)
            tree.nodes[inode] = child
            directory.children[entry.path] = inode
            if entry.kind == "commit":
                self.loaded.add(inode)
            inode += 1
        self.early.listings.pop(directory.inode, None)
        self.loaded.add(directory.inode)

    def _answers(self, inode: int) -> bool:
        """Whether ``early`` answers for ``inode`` now (the root and its entries, before landing)."""
        return self.full is None and (inode == ROOT_INODE or inode in self.early.tree.nodes)

    async def _full(self) -> ArtifactFS:
        await self.landed.wait()
        if self.full is None:
            raise pyfuse3.FUSEError(errno.EIO)
        return self.full

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        if self._answers(inode) or (self.full is None and inode == GITFILE_INODE):
            return await self.early.getattr(inode, ctx)
        return await (await self._full()).getattr(inode, ctx)

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if await self._dir(parent_inode):
            return await self.early.lookup(parent_inode, name, ctx)
        return await (await self._full()).lookup(parent_inode, name, ctx)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        if await self._dir(inode):
            return await self.early.opendir(inode, ctx)
        return await (await self._full()).opendir(inode, ctx)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if self.full is None and fh in self.loaded:  # a directory's handle is its inode
            return await self.early.readdir(fh, start_id, token)
        return await (await self._full()).readdir(fh, start_id, token)

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if self._answers(inode) and inode != ROOT_INODE and not flags & WRITE_FLAGS and not self.reads_wait:
            info = await self.early.open(inode, flags, ctx)
            self.early_handles.add(info.fh)
            return info
        return await (await self._full()).open(inode, flags, ctx)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        if fh in self.early_handles:
            return await self.early.read(fh, off, size)
        return await (await self._full()).read(fh, off, size)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        if fh in self.early_handles:
            self.early_handles.discard(fh)
            return await self.early.release(fh)
        return await (await self._full()).release(fh)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        if self._answers(inode):
            return await self.early.readlink(inode, ctx)
        return await (await self._full()).readlink(inode, ctx)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return await (await self._full()).statfs(ctx)

    # -- everything else (writes, fsync, ...) waits for the full mount: see the end -----------

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # as ArtifactFS: nothing to do on close


def _waiting(name: str) -> Any:
    async def handler(self: RootView, *args: Any) -> Any:
        return await getattr(await self._full(), name)(*args)

    handler.__name__ = name
    return handler


# Every handler ArtifactFS has and this class does not (the write path, and any added
# later) waits for the full mount, rather than falling back to pyfuse3's default.
for _name, _value in vars(ArtifactFS).items():
    if inspect.iscoroutinefunction(_value) and hasattr(pyfuse3.Operations, _name) \
            and _name not in vars(RootView):
        setattr(RootView, _name, _waiting(_name))
