"""Keeping a mount and its branch in step: commits of the overlay, and following the remote.

``commit`` turns the overlay into a commit (``commit.py``), pushes it with a
compare-and-swap on the head the mount shows, and on success shows the new head with an
empty overlay. ``refresh`` asks the remote where the branch is (``git ls-remote``): a
clean mount follows a fast-forward (blobless fetch, sizes by ``object-info``, a new tree
with the same inode for every path that stays, the kernel's caches of what changed
invalidated); a dirty mount, or a remote that was rewritten, only reports it. A failed
refresh is kept in ``status`` and retried at the next poll. Both hold the write lock, so no
change lands between a snapshot of the overlay and what replaces it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from artifactd.fs import credentials, objectinfo
from artifactd.fs.fusefs import ArtifactFS
from artifactd.fs.gitcmd import GitFailed, run_git
from artifactd.fs.index import write_index
from artifactd.fs.state import RepoConfig, RootState
from artifactd.fs.tree import ROOT_INODE, Node, Tree, list_tree
from artifactd.fs.wire import Remote
from artifactd.fs.write import commit as commits
from artifactd.fs.write.layer import WriteLayer, apply
from artifactd.fs.write.options import PENDING, MountOptions
from artifactd.fs.write.overlay import Change, Overlay

log = logging.getLogger("artifact_fs")

RETRY_SECONDS = 5.0  # a failed refresh is tried again this soon (or at the poll interval, if shorter)
RELEASE_GRACE = 5.0  # seconds a commit waits for files closed just before it to be released


@dataclass
class BranchStatus:
    head: str  # the commit the mount shows (its base)
    remote_head: str = ""  # where the branch was on the remote at the last check
    checked_at: float = 0.0
    refresh_error: str = ""  # the last refresh's failure, until one succeeds
    refresh_failures: int = 0  # failed refreshes in a row
    diverged: bool = False  # the remote branch was rewritten: not followed


def paths(tree: Tree) -> dict[bytes, Node]:
    """Every node reachable from the root, by path (nodes of removed paths are not)."""
    found: dict[bytes, Node] = {}
    stack = [tree.nodes[ROOT_INODE]]
    while stack:
        node = stack.pop()
        found[node.path] = node
        stack.extend(tree.nodes[inode] for inode in node.children.values())
    return found


def renumber(tree: Tree, previous: dict[bytes, Node], next_inode: int) -> int:
    """Give each node of ``tree`` the inode its path had (same kind), others fresh ones; the
    kernel keeps inode numbers, so a path must keep its number across a new head."""
    mapping: dict[int, int] = {}
    for node in tree.nodes.values():
        old = previous.get(node.path)
        if old is not None and old.is_dir == node.is_dir:
            mapping[node.inode] = old.inode
        else:
            mapping[node.inode] = next_inode
            next_inode += 1
    nodes = {}
    for node in tree.nodes.values():
        node.inode = mapping[node.inode]
        node.parent = mapping[node.parent] if node.path else ROOT_INODE
        node.children = {name: mapping[inode] for name, inode in node.children.items()}
        nodes[node.inode] = node
    tree.nodes = nodes
    return next_inode


class BranchSync:
    def __init__(self, fs: ArtifactFS, layer: WriteLayer, config: RepoConfig, git_dir: Path, head: str,
                 options: MountOptions, auth: Callable[[], tuple[str, str] | None]) -> None:
        self.fs = fs
        self.layer = layer
        self.config = config
        self.git_dir = git_dir
        self.options = options
        self.auth = auth
        self.status = BranchStatus(head=head)
        self.wake = trio.Event()  # a ``refresh`` request: poll now
        self.unmounted = False  # after the kernel let go: commit, but show nothing

    def describe(self) -> dict[str, Any]:
        out = asdict(self.status)
        out["changes"] = len(self.layer.overlay.changes)
        out["behind"] = bool(self.status.remote_head and self.status.remote_head != self.status.head
                             and not self.status.diverged)
        out["branch"] = self.config.branch
        return out

    # -- commit ---------------------------------------------------------------------------

    async def commit(self, message: str) -> dict[str, Any]:
        async with self.layer.lock:
            # The kernel sends a file's release after close() has returned: give it a moment.
            with trio.move_on_after(RELEASE_GRACE):
                while self.layer.writers and not self.unmounted:
                    await self.layer.released.wait()
            if self.unmounted:
                self.layer.writers.clear()  # the kernel let go: no write can come any more
            if self.layer.writers:
                raise commits.CommitFailed(f"{len(self.layer.writers)} files are open for writing: "
                                           "close them, then commit")
            changes = dict(self.layer.overlay.changes)
            if not changes:
                return {"committed": False, "message": "nothing to commit: the overlay is empty"}
            base = self.status.head
            built = await trio.to_thread.run_sync(
                commits.build, self.git_dir, self.layer.overlay, changes, base, message)
            if built is None:
                self.layer.overlay.forget(changes)
                await self._show(base, {})
                return {"committed": False, "message": "nothing to commit: the overlay matches the head"}
            # From the push to the cleared overlay nothing may cancel us (a SIGTERM arriving
            # mid-push): the branch would have moved with the overlay still holding it.
            with trio.CancelScope(shield=True):
                return await self._land(built, base, changes)

    async def _land(self, built: commits.Built, base: str, changes: dict[bytes, Change]) -> dict[str, Any]:
        pending = self.layer.overlay.folder / PENDING
        pending.write_text(json.dumps({"commit": built.commit, "base": base}))
        pushed = await trio.to_thread.run_sync(
            commits.push, self.git_dir, self.config.branch, built.commit, base, self.config.remote,
            self.config.name)
        if pushed.side_branch:
            pending.unlink()
            self.status.remote_head = pushed.remote_head
            return {"committed": True, "commit": built.commit, "side_branch": pushed.side_branch,
                    "message": f"{self.config.branch} moved on the remote (now {pushed.remote_head[:12]}, "
                               f"the mount shows {base[:12]}): committed {built.commit[:12]} to side "
                               f"branch {pushed.side_branch} (pushed); the overlay is kept"}
        await trio.to_thread.run_sync(commits.advance, self.git_dir, self.config.branch, built.commit, base)
        self.fs.hydrator.local.update(built.blobs)  # written to the clone by hash-object
        self.layer.overlay.forget(changes)
        pending.unlink()
        await self._show(built.commit, built.blobs)
        self.status.remote_head = built.commit
        return {"committed": True, "commit": built.commit, "side_branch": "",
                "message": f"committed {built.commit[:12]} to {self.config.branch} ({len(changes)} changes)"}

    # -- refresh --------------------------------------------------------------------------

    async def refresh(self) -> None:
        """One check of the remote branch; raises on failure (the caller records it)."""
        branch = self.config.branch
        out = await trio.to_thread.run_sync(lambda: run_git(
            ["--git-dir", str(self.git_dir), "ls-remote", "--heads", "origin", f"refs/heads/{branch}"],
            timeout=60))
        remote_head = out.decode().split("\t", 1)[0].strip()
        if not remote_head:
            raise RuntimeError(f"branch {self.config.branch!r} is gone from {self.config.remote}")
        self.status.remote_head = remote_head
        self.status.checked_at = time.time()
        if remote_head == self.status.head or self.layer.dirty:
            self.status.diverged = False
            return
        async with self.layer.lock:
            if self.layer.dirty or self.layer.writers:
                return  # written to while we asked: report behind, follow once committed
            base = self.status.head
            await trio.to_thread.run_sync(lambda: run_git(
                ["--git-dir", str(self.git_dir), "fetch", "--quiet", "--no-tags", "--filter=blob:none",
                 "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"], timeout=300))
            try:
                await trio.to_thread.run_sync(lambda: run_git(
                    ["--git-dir", str(self.git_dir), "merge-base", "--is-ancestor", base, remote_head]))
            except GitFailed:
                self.status.diverged = True  # rewritten: following would drop commits the mount showed
                return
            self.status.diverged = False
            await trio.to_thread.run_sync(commits.advance, self.git_dir, branch, remote_head, base)
            await self._show(remote_head, {})
            log.info("followed %s to %s", self.config.branch, remote_head)

    async def _sizes(self, oids: list[str]) -> dict[str, int]:
        remote = Remote(self.config.remote, self.auth(), objectinfo.TIMEOUT)
        try:
            if await trio.to_thread.run_sync(objectinfo.supported, remote):
                return dict(await trio.to_thread.run_sync(objectinfo.sizes, remote, oids))
        finally:
            remote.close()
        self.fs.hydrator.prefetch(oids)  # a remote without object-info: sizes by fetching
        found = {}
        for oid in oids:
            if not await self.fs.hydrator.ensure(oid):
                raise RuntimeError(f"cannot fetch blob {oid} for its size")
            found[oid] = self.fs.hydrator.cache.size_of(oid)
        return found

    async def _show(self, head: str, new_blobs: dict[str, int]) -> None:
        """Show ``head`` with an empty overlay: a new tree, same inodes, kernel caches dropped."""
        self.status.head = head
        if self.unmounted:
            return
        await self.fs.sizes.index_ready.wait()  # the mount's own sizes and index come first
        entries = await trio.to_thread.run_sync(list_tree, self.git_dir, head)
        old = self.fs.tree
        sizes = {node.oid: node.size for node in old.blobs()
                 if node.oid and node.inode not in self.layer.data}
        sizes.update(new_blobs)
        missing = sorted({e.oid for e in entries if e.kind == "blob" and e.oid not in sizes})
        if missing:
            sizes.update(await self._sizes(missing))
        tree = Tree(entries, sizes)
        previous = paths(old)
        changed = [node.inode for node in previous.values()
                   if node.inode in self.layer.data or node.inode in self.layer.mtimes]
        self.layer.next_inode = renumber(tree, previous, self.layer.next_inode)
        now = paths(tree)
        for path, node in previous.items():
            fresh = now.get(path)
            if fresh is None or fresh.inode != node.inode:
                if path:
                    parent_path = path.rpartition(b"/")[0]
                    parent = previous[parent_path]
                    with contextlib.suppress(OSError):
                        pyfuse3.invalidate_entry_async(pyfuse3.InodeT(parent.inode),
                                                       pyfuse3.FileNameT(node.name), ignore_enoent=True)
            elif (fresh.oid, fresh.mode, set(fresh.children)) != (node.oid, node.mode, set(node.children)):
                changed.append(node.inode)
        self.fs.tree = tree
        self.fs.prefetcher.tree = tree
        self.fs.listings.clear()  # directory listings of the old head
        self.layer.set_base(entries)
        self.layer.data.clear()
        self.layer.mtimes.clear()
        self.status.head = head
        await trio.to_thread.run_sync(write_index, self.git_dir / "index", entries, sizes,
                                      self.fs.mtime_ns // 1_000_000_000)
        await trio.to_thread.run_sync(_invalidate, sorted(set(changed)))

    # -- background -----------------------------------------------------------------------

    async def poll(self) -> None:
        interval = self.options.poll_interval
        while True:
            with trio.move_on_after(self._next_wait(interval)):
                await self.wake.wait()
            self.wake = trio.Event()
            try:
                await self.refresh()
                self.status.refresh_error, self.status.refresh_failures = "", 0
            except (GitFailed, OSError, RuntimeError, objectinfo.ObjectInfoError, Exception) as exc:
                self.status.refresh_failures += 1
                self.status.refresh_error = str(exc) or type(exc).__name__
                log.warning("refresh of %s failed (%d in a row, retrying): %s", self.config.branch,
                            self.status.refresh_failures, self.status.refresh_error)

    def _next_wait(self, interval: float) -> float:
        if interval <= 0:
            return float("inf")  # only on request
        return min(interval, RETRY_SECONDS) if self.status.refresh_failures else interval

    async def autocommit(self) -> None:
        while True:
            await trio.sleep(self.options.autocommit_interval)
            if self.layer.dirty and not self.layer.writers:
                await self.commit_logged("artifact-fs autocommit")

    async def commit_logged(self, message: str) -> None:
        try:
            result = await self.commit(message)
            log.info("%s", result["message"])
        except (commits.CommitFailed, GitFailed, OSError) as exc:
            log.warning("autocommit failed (the overlay is kept): %s", exc)


def _invalidate(inodes: list[int]) -> None:
    for inode in inodes:
        try:
            pyfuse3.invalidate_inode(pyfuse3.InodeT(inode))
        except OSError as exc:  # ENOENT: an inode the kernel never looked up (nothing cached)
            if exc.errno != errno.ENOENT:
                log.info("invalidating inode %d: %s", inode, exc)


def attach(fs: ArtifactFS, state: RootState, config: RepoConfig, options: MountOptions,
           head: str = "") -> BranchSync:
    """Give a prepared mount its overlay (replayed from disk: the view before a crash) and the
    branch's commit (``head``, the one the mount shows, or the branch's now) and refresh."""
    git_dir = state.git_dir(config.name)
    head = head or run_git(["--git-dir", str(git_dir), "rev-parse", "--verify", "--end-of-options",
                            f"refs/heads/{config.branch}^{{commit}}"]).decode().strip()
    overlay = Overlay(state.overlay_dir(config.name))
    layer = WriteLayer(fs, overlay, fs.tree.entries)
    apply(fs.tree, overlay, layer)
    fs.listings.clear()
    fs.writes = layer
    socket = state.credential_socket
    return BranchSync(fs, layer, config, git_dir, head, options,
                      lambda: credentials.fill(socket, config.remote))


def finish_pending(state: RootState, config: RepoConfig) -> None:
    """A mount killed between its push and clearing the overlay: if the push landed (git
    moved the tracking ref), move the branch and clear the overlay as the commit would have.
    From the snapshot to the crash the overlay was locked, so it holds just what was pushed."""
    folder = state.overlay_dir(config.name)
    pending = folder / PENDING
    if not pending.exists():
        return
    try:
        record = json.loads(pending.read_text())
        commit, base = str(record["commit"]), str(record["base"])
    except (ValueError, KeyError, TypeError):
        pending.unlink()
        return
    git_dir = state.git_dir(config.name)
    tracking = run_git(["--git-dir", str(git_dir), "rev-parse", "--verify", "--quiet",
                        f"refs/remotes/origin/{config.branch}"]).decode().strip()
    if tracking == commit:
        commits.advance(git_dir, config.branch, commit, base)
        overlay = Overlay(folder)
        overlay.forget(dict(overlay.changes))
        overlay.close()
        log.info("the commit %s pushed before the mount stopped is now its head", commit)
    pending.unlink()


def recover_stale_mount(mount_point: Path) -> None:
    """A mount whose process was killed leaves "transport endpoint is not connected": let go
    of it (lazily), so the restarted mount can take its place."""
    try:
        os.stat(mount_point)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            subprocess.run(["fusermount3", "-u", "-z", str(mount_point)], capture_output=True, timeout=60,
                           check=False)
