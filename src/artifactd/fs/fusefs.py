"""The FUSE operations: a read-only view of one commit, contents hydrated on open.

Metadata (lookup, getattr, readdir) comes from the tree and the sizes known at mount time
and never touches blob bytes. ``open`` and ``readlink`` wait for their blob (urgent);
what is fetched ahead of reads (directories, the tree, the hot set) is ``prefetch.py``'s
to decide. Listing alone fetches nothing. The root holds a ``.git`` file pointing at the
clone, so git commands work inside the mount.
Writes (``create``, ``write``, ``rename``, ...) go to the copy-on-write overlay through
``write.layer.WriteLayer``; the read handlers ask it only for the nodes it owns, and every
handler that changes a directory drops the cached listings (``listings``).
"""

from __future__ import annotations

import errno
import os
import stat
from itertools import count

import pyfuse3

from artifactd.fs.fuseloop import ReadGate
from artifactd.fs.hydrate import Hydrator
from artifactd.fs.prefetch import Prefetcher
from artifactd.fs.sizes import Sizes, SizesUnavailable
from artifactd.fs.tree import GITFILE_INODE, ROOT_INODE, UNSIZED, Node, Tree
from artifactd.fs.write.layer import WRITE_FLAGS, WriteLayer

CACHE_SECONDS = 300.0  # the view of one commit never changes while mounted
SIZE_WINDOW = 2000  # entries of a listing whose sizes one readdir asks for together
STORE_BYTES = 128 << 10  # files up to this size are handed to the page cache on open
REQUEST_KINDS = ("lookup", "getattr", "opendir", "readdir", "open", "read", "release", "flush", "readlink")


class ArtifactFS(pyfuse3.Operations):
    def __init__(self, tree: Tree, hydrator: Hydrator, gitfile: bytes, mtime_ns: int,
                 prefetcher: Prefetcher | None = None, sizes: Sizes | None = None) -> None:
        super().__init__()
        # Blob sizes still arriving after the mount is up (sizes.py): metadata waits for them.
        self.sizes = sizes or Sizes(hydrator.sizes, lambda: self.tree)
        self.prefetcher = prefetcher or Prefetcher(tree, hydrator)
        self.tree = tree
        self.hydrator = hydrator
        self.gitfile = gitfile
        self.mtime_ns = mtime_ns
        self.uid = os.getuid()
        self.gid = os.getgid()
        # fh -> fd of the cache file, or the bytes themselves (the .git file, a blob not yet
        # written to disk by the cache)
        self.handles: dict[int, int | bytes] = {}
        # directory -> its sorted entries; whatever changes a directory drops its entry here
        self.listings: dict[int, list[tuple[bytes, int]]] = {}
        self.next_fh = count(1)
        self.reads: dict[int, Node] = {}  # fh -> the file, of handles opened for reading
        self.stored: set[int] = set()  # inodes whose bytes the kernel's page cache got on open
        self.writes: WriteLayer | None = None  # set by the mount: the overlay's write path
        # FUSE requests answered, by kind (the control socket's status reports them): what a
        # file costs the mount, counted where it is cheap (one dict increment a request)
        self.requests: dict[str, int] = dict.fromkeys(REQUEST_KINDS, 0)
        self.read_gate: ReadGate | None = None  # set by the mount: pyfuse3's request loop

    def request_counts(self) -> dict[str, int]:
        fast = self.read_gate.fast if self.read_gate is not None else 0
        return {**self.requests, "taken_without_a_scheduler_pass": fast}

    def _attrs(self, inode: int, mode: int, size: int, nlink: int = 1) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.st_mode = mode
        attrs.st_nlink = nlink
        attrs.st_size = size
        attrs.st_uid = self.uid
        attrs.st_gid = self.gid
        attrs.st_blksize = 4096
        attrs.st_blocks = (size + 511) // 512
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = self.mtime_ns
        attrs.attr_timeout = attrs.entry_timeout = CACHE_SECONDS
        if self.writes is not None and (inode in self.writes.data or inode in self.writes.mtimes):
            attrs.st_mtime_ns = attrs.st_ctime_ns = self.writes.mtime_ns(inode, self.mtime_ns)
            attrs.attr_timeout = 0  # changed by writes: never served stale from the kernel
        return attrs

    def _node_attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.is_dir:
            return self._attrs(node.inode, node.mode, 4096, 2)
        return self._attrs(node.inode, node.mode, node.size)

    def _node(self, inode: int) -> Node:
        node = self.tree.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    async def _sized(self, nodes: list[Node]) -> None:
        """Until ``nodes`` have their sizes (they arrive after the mount is up): never a
        wrong size, and EIO if the remote cannot give one."""
        if any(node.size == UNSIZED for node in nodes):
            try:
                await self.sizes.wait(nodes)
            except SizesUnavailable:
                raise pyfuse3.FUSEError(errno.EIO) from None

    async def _sized_attrs(self, node: Node) -> pyfuse3.EntryAttributes:
        if node.size == UNSIZED:
            await self._sized([node])
        return self._node_attrs(node)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        self.requests["getattr"] += 1
        return await self._inode_attrs(inode)

    async def _inode_attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        if inode == GITFILE_INODE:
            return self._attrs(GITFILE_INODE, stat.S_IFREG | 0o444, len(self.gitfile))
        return await self._sized_attrs(self._node(inode))

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self.requests["lookup"] += 1
        parent = self._node(parent_inode)
        if name == b".":
            return self._node_attrs(parent)
        if name == b"..":
            return self._node_attrs(self._node(parent.parent))
        if parent_inode == ROOT_INODE and name == b".git":
            return await self._inode_attrs(GITFILE_INODE)
        child = self.tree.child(parent_inode, name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return await self._sized_attrs(child)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        self.requests["opendir"] += 1
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        self.prefetcher.opened_dir(node)
        return pyfuse3.FileHandleT(inode)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        self.requests["readdir"] += 1
        names = self._listing(fh)
        if not self.sizes.all_known.is_set():  # one request for the window, not one per entry
            window = (self.tree.nodes.get(inode) for _, inode in names[start_id:start_id + SIZE_WINDOW])
            await self._sized([node for node in window if node is not None])
        for position in range(start_id, len(names)):
            name, inode = names[position]
            attrs = await self._inode_attrs(inode)
            if not pyfuse3.readdir_reply(token, name, attrs, position + 1):
                break

    def _listing(self, inode: int) -> list[tuple[bytes, int]]:
        # Sorted once per directory: readdir comes back for every few hundred entries, and
        # sorting 100k names each time would make listing a big directory quadratic.
        names = self.listings.get(inode)
        if names is None:
            names = sorted(self._node(inode).children.items())
            if inode == ROOT_INODE:
                names.insert(0, (b".git", GITFILE_INODE))
            self.listings[inode] = names
        return names

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.requests["open"] += 1
        if flags & WRITE_FLAGS and (self.writes is None or inode == GITFILE_INODE):
            raise pyfuse3.FUSEError(errno.EROFS)
        fh = next(self.next_fh)
        if inode == GITFILE_INODE:
            # git finds the clone through this file: it waits for the index the sizes make
            await self.sizes.index_ready.wait()
            if self.sizes.failed:
                raise pyfuse3.FUSEError(errno.EIO)
            self.handles[fh] = self.gitfile
        else:
            node = self._node(inode)
            if not stat.S_ISREG(node.mode):
                raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
            if self.writes is not None:  # the overlay's own file, copied up when written
                fd = await self.writes.open_fd(node, flags, fh)
                if fd is not None:
                    self.handles[fh] = fd
                    return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False)
            self.prefetcher.before_read(node)
            handle = self.handles[fh] = await self._open_blob(node)
            self.reads[fh] = node  # its prefetch waits for the close: nothing competes with the read
            if 0 < node.size <= STORE_BYTES and inode not in self.stored:
                self._store(inode, handle, node.size)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)

    async def _open_blob(self, node: Node) -> int | bytes:
        for _ in range(2):  # evicted between the fetch and the open: fetch it again
            if not await self.hydrator.ensure(node.oid):
                raise pyfuse3.FUSEError(errno.EIO)
            data = self.hydrator.cache.memory(node.oid)
            if data is not None:
                return data
            try:
                return os.open(self.hydrator.cache.path(node.oid), os.O_RDONLY)
            except FileNotFoundError:
                self.hydrator.cache.forget(node.oid)
        raise pyfuse3.FUSEError(errno.EIO)

    def _store(self, inode: int, handle: int | bytes, size: int) -> None:
        # A small file's bytes go into the kernel's page cache with the open's answer: the
        # reads that follow are served by the kernel, no READ round trip to this process
        # (the open is answered with keep_cache, so the kernel keeps these pages).
        data = handle if isinstance(handle, bytes) else os.pread(handle, size, 0)
        try:
            pyfuse3.notify_store(pyfuse3.InodeT(inode), 0, data)
        except OSError:  # an old kernel: the reads come here
            return
        self.stored.add(inode)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        self.requests["read"] += 1
        handle = self.handles[fh]
        if isinstance(handle, bytes):
            return handle[off:off + size]
        return os.pread(handle, size, off)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        self.requests["release"] += 1
        read = self.reads.pop(fh, None)
        if read is not None:
            self.prefetcher.after_read(read)
        handle = self.handles.pop(fh, b"")
        if isinstance(handle, int) and handle >= 0:
            os.close(handle)
        if self.writes is not None:
            self.writes.release(fh)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        self.requests["readlink"] += 1
        node = self._node(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if self.writes is not None and (target := self.writes.readlink(node)) is not None:
            return target
        handle = await self._open_blob(node)
        if isinstance(handle, bytes):
            return handle
        try:
            return os.pread(handle, node.size if node.size > 0 else 4096, 0)
        finally:
            os.close(handle)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        await self.sizes.index_ready.wait()  # the sizes are in (or the remote gave up)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        total = sum(max(node.size, 0) for node in self.tree.blobs())
        data.f_blocks = (total + 4095) // 4096
        data.f_files = len(self.tree.nodes)
        data.f_namemax = 255
        if self.writes is not None:  # free space is the overlay's
            free = os.statvfs(self.writes.overlay.folder)
            data.f_bfree = data.f_bavail = free.f_bavail * free.f_frsize // 4096
            data.f_blocks += data.f_bfree
            data.f_ffree = data.f_favail = free.f_favail
        return data

    # -- the write path: each handler hands over to the overlay (write/layer.py) ------------------

    def _fd(self, fh: int) -> int:
        handle = self.handles.get(fh)
        if not isinstance(handle, int):  # a read-only handle served from memory
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    def _writable(self) -> WriteLayer:
        if self.writes is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        return self.writes

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh = next(self.next_fh)
        fd, node = await self._writable().create(parent_inode, name, mode, fh)
        self.handles[fh] = fd
        self.listings.clear()
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh)), self._node_attrs(node)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return self._writable().write(fh, self._fd(fh), off, buf)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: pyfuse3.FileHandleT | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode == GITFILE_INODE:
            raise pyfuse3.FUSEError(errno.EPERM)
        await self._writable().setattr(inode, attr, fields)
        return await self._inode_attrs(inode)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        self.requests["flush"] += 1
        # Every write is in the overlay file already (fsync makes it durable), so a close has
        # nothing to do here: ENOSYS tells the kernel once, and it stops sending FLUSH, one
        # round trip to this process saved on every close.
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        self._writable().fsync(self._fd(fh) if fh in self.handles else -1)

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        self._writable().fsync(-1)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self._writable().mkdir(parent_inode, name)
        self.listings.clear()
        return self._node_attrs(node)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self._writable().symlink(parent_inode, name, target)
        self.listings.clear()
        return self._node_attrs(node)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().unlink(parent_inode, name, want_dir=False)
        self.listings.clear()

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().unlink(parent_inode, name, want_dir=True)
        self.listings.clear()

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
        self.listings.clear()

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # git has no hard links

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # git stores files, links and directories only
