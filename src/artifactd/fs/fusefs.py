"""The FUSE operations: a read-only view of one commit, contents hydrated on open.

Metadata (lookup, getattr, readdir) comes from the tree and the sizes known at mount time
and never touches blob bytes. ``open`` and ``readlink`` wait for their blob (urgent);
opening a file queues its directory's other files as background prefetch within a byte
budget, and the first read starts the background hydration of the whole tree in priority
order (``priority.py``), within the cache's bound. Listing alone fetches nothing. The
root holds a ``.git`` file pointing at the clone, so git commands work inside the mount.
Writes (``create``, ``write``, ``rename``, ...) go to the copy-on-write overlay through
``write.layer.WriteLayer``; the read handlers ask it only for the nodes it owns.
"""

from __future__ import annotations

import errno
import os
import stat
from itertools import count

import pyfuse3

from artifactd.fs.hydrate import Hydrator
from artifactd.fs.tree import GITFILE_INODE, ROOT_INODE, Node, Tree
from artifactd.fs.write.layer import WRITE_FLAGS, WriteLayer

CACHE_SECONDS = 300.0  # the view of one commit never changes while mounted
PREFETCH_BUDGET = 8 << 20  # bytes of a directory's files queued when it is opened


class ArtifactFS(pyfuse3.Operations):
    def __init__(self, tree: Tree, hydrator: Hydrator, gitfile: bytes, mtime_ns: int,
                 warm_order: list[str] | None = None) -> None:
        super().__init__()
        # Blobs to hydrate in the background once the first file is read (priority order);
        # until then the mount fetches nothing, so metadata on a cold mount stays free.
        self.warm_order = warm_order or []
        self.tree = tree
        self.hydrator = hydrator
        self.gitfile = gitfile
        self.mtime_ns = mtime_ns
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.handles: dict[int, int] = {}  # fh -> fd of the cache file (-1: the .git file)
        self.next_fh = count(1)
        self.writes: WriteLayer | None = None  # set by the mount: the overlay's write path

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

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        if inode == GITFILE_INODE:
            return self._attrs(GITFILE_INODE, stat.S_IFREG | 0o444, len(self.gitfile))
        return self._node_attrs(self._node(inode))

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        if name == b".":
            return self._node_attrs(parent)
        if name == b"..":
            return self._node_attrs(self._node(parent.parent))
        if parent_inode == ROOT_INODE and name == b".git":
            return await self.getattr(GITFILE_INODE)
        child = self.tree.child(parent_inode, name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._node_attrs(child)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileHandleT:
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return pyfuse3.FileHandleT(inode)

    async def readdir(self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        node = self._node(fh)
        names: list[tuple[bytes, int]] = sorted(node.children.items())
        if fh == ROOT_INODE:
            names.insert(0, (b".git", GITFILE_INODE))
        for position in range(start_id, len(names)):
            name, inode = names[position]
            attrs = await self.getattr(pyfuse3.InodeT(inode))
            if not pyfuse3.readdir_reply(token, name, attrs, position + 1):
                break

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & WRITE_FLAGS and (self.writes is None or inode == GITFILE_INODE):
            raise pyfuse3.FUSEError(errno.EROFS)
        fh = next(self.next_fh)
        if inode == GITFILE_INODE:
            self.handles[fh] = -1
        else:
            node = self._node(inode)
            if not stat.S_ISREG(node.mode):
                raise pyfuse3.FUSEError(errno.EISDIR if node.is_dir else errno.EINVAL)
            if self.writes is not None:  # the overlay's own file, copied up when written
                fd = await self.writes.open_fd(node, flags, fh)
                if fd is not None:
                    self.handles[fh] = fd
                    return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=False)
            self._prefetch_siblings(node)
            if self.warm_order:
                self.hydrator.prefetch(self.warm_order)
                self.warm_order = []
            self.handles[fh] = await self._open_blob(node)
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=True)

    def _prefetch_siblings(self, node: Node) -> None:
        # Listing never fetches (metadata is free); reading a file warms its directory.
        budget = PREFETCH_BUDGET
        wanted = []
        for inode in self.tree.nodes[node.parent].children.values():
            sibling = self.tree.nodes[inode]
            if sibling is not node and stat.S_ISREG(sibling.mode) and sibling.size <= budget:
                budget -= sibling.size
                wanted.append(sibling.oid)
        self.hydrator.prefetch(wanted)

    async def _open_blob(self, node: Node) -> int:
        if not await self.hydrator.ensure(node.oid):
            raise pyfuse3.FUSEError(errno.EIO)
        try:
            return os.open(self.hydrator.cache.path(node.oid), os.O_RDONLY)
        except FileNotFoundError:  # evicted between the fetch and the open: fetch it again
            if not await self.hydrator.ensure(node.oid):
                raise pyfuse3.FUSEError(errno.EIO) from None
            return os.open(self.hydrator.cache.path(node.oid), os.O_RDONLY)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        fd = self.handles[fh]
        if fd < 0:
            return self.gitfile[off:off + size]
        return os.pread(fd, size, off)

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        fd = self.handles.pop(fh, -1)
        if fd >= 0:
            os.close(fd)
        if self.writes is not None:
            self.writes.release(fh)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        if self.writes is not None and (target := self.writes.readlink(node)) is not None:
            return target
        fd = await self._open_blob(node)
        try:
            return os.pread(fd, node.size or 4096, 0)
        finally:
            os.close(fd)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        total = sum(node.size for node in self.tree.blobs())
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

    def _writable(self) -> WriteLayer:
        if self.writes is None:
            raise pyfuse3.FUSEError(errno.EROFS)
        return self.writes

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh = next(self.next_fh)
        fd, node = await self._writable().create(parent_inode, name, mode, fh)
        self.handles[fh] = fd
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh)), self._node_attrs(node)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return self._writable().write(fh, self.handles[fh], off, buf)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: pyfuse3.FileHandleT | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if inode == GITFILE_INODE:
            raise pyfuse3.FUSEError(errno.EPERM)
        await self._writable().setattr(inode, attr, fields)
        return await self.getattr(inode)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        return None  # every write is in the overlay file already; fsync makes it durable

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        self._writable().fsync(self.handles.get(fh, -1))

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        self._writable().fsync(-1)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._node_attrs(await self._writable().mkdir(parent_inode, name))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._node_attrs(await self._writable().symlink(parent_inode, name, target))

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().unlink(parent_inode, name, want_dir=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().unlink(parent_inode, name, want_dir=True)

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        await self._writable().rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # git has no hard links

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EPERM)  # git stores files, links and directories only
