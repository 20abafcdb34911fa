"""The write path of a mount: FUSE's mutating calls on the tree, recorded in the overlay.

The tree (``tree.py``) is what every handler shows; this layer changes it in memory (new
nodes, renamed and removed ones) and records each changed path's new state in the
``Overlay`` on disk, so a restarted mount rebuilds the same view (``apply``). A written
file's bytes live in an overlay data file: ``open`` for writing copies the base blob there
first (copy-on-write, streamed from the blob cache), and ``read``/``write`` go to that
file's descriptor. ``lock`` is held by a commit or a refresh, so that no change lands
between the snapshot of the overlay and the clearing of what was committed.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import pyfuse3
import trio

from artifactd.fs.tree import ROOT_INODE, Entry, Node, Tree
from artifactd.fs.write.overlay import DIR, FILE, GONE, LINK, Change, Overlay

if TYPE_CHECKING:
    from artifactd.fs.fusefs import ArtifactFS

FILE_MODE = stat.S_IFREG | 0o644
EXEC_MODE = stat.S_IFREG | 0o755
DIR_MODE = stat.S_IFDIR | 0o755
LINK_MODE = stat.S_IFLNK | 0o777
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


P = ParamSpec("P")
R = TypeVar("R")


def fuse_errors(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """An ``OSError`` of the overlay (a full disk, a file gone) as the caller's errno: any other
    exception out of a handler would stop pyfuse3's main loop, and the mount with it."""
    @functools.wraps(handler)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await handler(*args, **kwargs)
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from exc
    return wrapper


def git_mode(node: Node) -> str:
    if stat.S_ISLNK(node.mode):
        return "120000"
    return "100755" if node.mode & 0o100 else "100644"


def find(tree: Tree, path: bytes) -> Node | None:
    node = tree.nodes[ROOT_INODE]
    for part in path.split(b"/") if path else []:
        inode = node.children.get(part)
        if inode is None:
            return None
        node = tree.nodes[inode]
    return node


def walk(tree: Tree, node: Node) -> list[Node]:
    """``node`` and everything under it, parents first."""
    found = [node]
    for inode in node.children.values():
        found.extend(walk(tree, tree.nodes[inode]))
    return found


def escapes(parent_path: bytes, target: bytes) -> bool:
    """Whether a symlink at ``parent_path/x`` pointing at ``target`` leads out of the mount."""
    if target.startswith(b"/") or not target:
        return True
    depth = len(parent_path.split(b"/")) if parent_path else 0
    for part in target.split(b"/"):
        if part == b"..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in (b"", b"."):
            depth += 1
    return False


class WriteLayer:
    def __init__(self, fs: ArtifactFS, overlay: Overlay, base: list[Entry]) -> None:
        self.fs = fs
        self.overlay = overlay
        self.base: dict[bytes, tuple[str, str]] = {}  # path -> (git mode, oid) of the base's blobs
        self.base_dirs: set[bytes] = set()
        self.set_base(base)
        self.data: dict[int, str] = {}  # inode -> overlay data file
        self.mtimes: dict[int, int] = {}  # inode -> mtime (ns) of a changed node
        self.writers: dict[int, int] = {}  # fh -> inode of files open for writing
        self.lock = trio.Lock()
        self.released = trio.Event()  # set (and renewed) whenever a file open for writing is released
        self.next_inode = max(fs.tree.nodes) + 1

    def set_base(self, entries: list[Entry]) -> None:
        self.base = {e.path: (e.git_mode, e.oid) for e in entries if e.kind == "blob"}
        self.base_dirs = {e.path for e in entries if e.kind == "tree"}

    # -- the view -------------------------------------------------------------------------

    @property
    def tree(self) -> Tree:
        return self.fs.tree

    @property
    def dirty(self) -> bool:
        return bool(self.overlay.changes)

    def _node(self, inode: int) -> Node:
        node = self.tree.nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _dir(self, inode: int) -> Node:
        node = self._node(inode)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    def _add(self, parent: Node, name: bytes, mode: int, oid: str = "", size: int = 0) -> Node:
        path = name if not parent.path else parent.path + b"/" + name
        node = Node(self.next_inode, name, path, mode, oid, size, parent.inode)
        self.next_inode += 1
        self.tree.nodes[node.inode] = node
        parent.children[name] = node.inode
        self.mtimes[node.inode] = self.mtimes[parent.inode] = time.time_ns()
        return node

    def _detach(self, node: Node) -> None:
        parent = self.tree.nodes[node.parent]
        parent.children.pop(node.name, None)
        self.mtimes[parent.inode] = time.time_ns()
        for gone in walk(self.tree, node):
            self._record_gone(gone.path)

    def _record(self, node: Node) -> None:
        if node.is_dir:
            self.overlay.put(node.path, None if node.path in self.base_dirs else Change(DIR))
            return
        kind = LINK if stat.S_ISLNK(node.mode) else FILE
        data = self.data.get(node.inode, "")
        if not data and self.base.get(node.path) == (git_mode(node), node.oid):
            self.overlay.put(node.path, None)  # back to the base's content at the base's path
            return
        self.overlay.put(node.path, Change(kind, git_mode(node), data, "" if data else node.oid,
                                           0 if data else node.size))

    def _record_gone(self, path: bytes) -> None:
        if path in self.base or path in self.base_dirs:
            self.overlay.put(path, Change(GONE))
        else:
            self.overlay.put(path, None)

    def name_check(self, parent: Node, name: bytes) -> None:
        if parent.inode == ROOT_INODE and name == b".git":
            raise pyfuse3.FUSEError(errno.EPERM)  # the clone's pointer, not part of the tree
        if len(name) > 255:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)

    def mtime_ns(self, inode: int, default: int) -> int:
        data = self.data.get(inode)
        if data is not None:
            try:
                return os.stat(self.overlay.data_path(data)).st_mtime_ns
            except FileNotFoundError:
                pass
        return self.mtimes.get(inode, default)

    # -- files ----------------------------------------------------------------------------

    @fuse_errors
    async def open_fd(self, node: Node, flags: int, fh: int) -> int | None:
        """A descriptor of ``node``'s overlay file (copied up first when opened for writing),
        or ``None`` to read the base blob."""
        writing = bool(flags & WRITE_FLAGS)
        if writing:
            async with self.lock:
                if node.inode not in self.data:
                    await self._copy_up(node, truncate=bool(flags & os.O_TRUNC))
                self.writers[fh] = node.inode
        data = self.data.get(node.inode)
        if data is None:
            return None
        fd = os.open(self.overlay.data_path(data), os.O_RDWR if writing else os.O_RDONLY)
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
            node.size = 0
        return fd

    async def _copy_up(self, node: Node, truncate: bool) -> None:
        name, path = self.overlay.new_data()
        if truncate or node.size == 0:
            path.touch(mode=0o600)
        else:
            if not await self.fs.hydrator.ensure(node.oid):
                raise pyfuse3.FUSEError(errno.EIO)
            await trio.to_thread.run_sync(self.fs.hydrator.cache.copy_to, node.oid, path)
        self.data[node.inode] = name
        self._record(node)

    def write(self, fh: int, fd: int, offset: int, buf: bytes) -> int:
        try:
            written = os.pwrite(fd, buf, offset)
        except OSError as exc:  # a full disk: the writer's error, not the mount's end
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from exc
        node = self.tree.nodes.get(self.writers.get(fh, 0))
        if node is not None:
            node.size = max(node.size, offset + written)
        return written

    def fsync(self, fd: int) -> None:
        try:
            if fd >= 0:
                os.fsync(fd)
            self.overlay.sync()
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from exc

    def release(self, fh: int) -> None:
        if self.writers.pop(fh, None) is not None:
            self.released.set()
            self.released = trio.Event()

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, fh: int) -> tuple[int, Node]:
        async with self.lock:
            parent = self._dir(parent_inode)
            self.name_check(parent, name)
            if name in parent.children:
                raise pyfuse3.FUSEError(errno.EEXIST)
            data, path = self.overlay.new_data()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            node = self._add(parent, name, EXEC_MODE if mode & 0o100 else FILE_MODE)
            self.data[node.inode] = data
            self.writers[fh] = node.inode
            self._record(node)
            return fd, node

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields) -> None:
        node = self._node(inode)
        async with self.lock:
            if fields.update_size and not node.is_dir:
                if inode not in self.data:
                    await self._copy_up(node, truncate=attr.st_size == 0)
                os.truncate(self.overlay.data_path(self.data[inode]), attr.st_size)
                node.size = attr.st_size
            if fields.update_mode and stat.S_ISREG(node.mode):
                node.mode = EXEC_MODE if attr.st_mode & 0o100 else FILE_MODE
                self._record(node)
            if fields.update_mtime:
                if inode in self.data:
                    mtime = attr.st_mtime_ns
                    os.utime(self.overlay.data_path(self.data[inode]), ns=(mtime, mtime))
                else:
                    self.mtimes[inode] = attr.st_mtime_ns

    # -- names ----------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes) -> Node:
        async with self.lock:
            parent = self._dir(parent_inode)
            self.name_check(parent, name)
            if name in parent.children:
                raise pyfuse3.FUSEError(errno.EEXIST)
            node = self._add(parent, name, DIR_MODE)
            self._record(node)
            return node

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes) -> Node:
        async with self.lock:
            parent = self._dir(parent_inode)
            self.name_check(parent, name)
            if name in parent.children:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if escapes(parent.path, target):
                raise pyfuse3.FUSEError(errno.EPERM)  # a link out of the mount is not committed
            data, path = self.overlay.new_data()
            path.write_bytes(target)
            node = self._add(parent, name, LINK_MODE, size=len(target))
            self.data[node.inode] = data
            self._record(node)
            return node

    def readlink(self, node: Node) -> bytes | None:
        data = self.data.get(node.inode)
        try:
            return None if data is None else self.overlay.data_path(data).read_bytes()
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from exc

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, want_dir: bool) -> None:
        async with self.lock:
            parent = self._dir(parent_inode)
            inode = parent.children.get(name)
            if inode is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            node = self.tree.nodes[inode]
            if want_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if not want_dir and node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.is_dir and node.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self._detach(node)

    @fuse_errors
    async def rename(self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes,
                     flags: int) -> None:
        if flags & ~pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_EXCHANGE is not supported
        async with self.lock:
            source_dir, target_dir = self._dir(old_parent), self._dir(new_parent)
            self.name_check(target_dir, new_name)
            inode = source_dir.children.get(old_name)
            if inode is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            node = self.tree.nodes[inode]
            existing = self.tree.child(new_parent, new_name)
            if existing is node:
                return
            if existing is not None:
                if flags & pyfuse3.RENAME_NOREPLACE:
                    raise pyfuse3.FUSEError(errno.EEXIST)
                if existing.is_dir and not node.is_dir:
                    raise pyfuse3.FUSEError(errno.EISDIR)
                if node.is_dir and not existing.is_dir:
                    raise pyfuse3.FUSEError(errno.ENOTDIR)
                if existing.is_dir and existing.children:
                    raise pyfuse3.FUSEError(errno.ENOTEMPTY)
                self._detach(existing)
            self._detach(node)
            node.name = new_name
            node.parent = new_parent
            target_dir.children[new_name] = node.inode
            self._move(node, target_dir.path)
            for moved in walk(self.tree, node):
                self._record(moved)

    def _move(self, node: Node, parent_path: bytes) -> None:
        node.path = node.name if not parent_path else parent_path + b"/" + node.name
        for inode in node.children.values():
            self._move(self.tree.nodes[inode], node.path)


def apply(tree: Tree, overlay: Overlay, layer: WriteLayer) -> None:
    """Show the overlay's changes on a tree built from the base commit (parents first)."""
    for path in sorted(overlay.changes, key=lambda p: (p.count(b"/"), p)):
        change = overlay.changes[path]
        parent_path, _, name = path.rpartition(b"/")
        parent = find(tree, parent_path)
        if parent is None or not parent.is_dir:
            continue  # under a path that is gone: nothing to show
        existing = tree.child(parent.inode, name)
        if change.kind == DIR and existing is not None and existing.is_dir:
            continue
        if existing is not None:
            del parent.children[name]
        if change.kind == GONE:
            continue
        if change.kind == DIR:
            layer._add(parent, name, DIR_MODE)
            continue
        mode = LINK_MODE if change.kind == LINK else (EXEC_MODE if change.git_mode == "100755" else FILE_MODE)
        size = change.size
        if change.data:
            try:
                size = os.stat(overlay.data_path(change.data)).st_size
            except FileNotFoundError:
                continue  # never written to disk before a crash: the create was not acknowledged
        node = layer._add(parent, name, mode, change.oid, size)
        if change.data:
            layer.data[node.inode] = change.data
