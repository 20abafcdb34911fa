"""The mounted tree: one node per path of the branch's commit, with inode numbers.

Listing uses ``git ls-tree -r -t`` without ``-l``: trees are local in a blobless clone,
and asking for sizes there would download every blob.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from artifactd.fs.gitcmd import run_git

ROOT_INODE = 1
GITFILE_INODE = 2
FIRST_INODE = 3
UNSIZED = -1  # a blob whose size the mount has not learned yet: a stat waits for it


@dataclass(slots=True)  # slots: a 100k-file tree is built at every mount
class Node:
    inode: int
    name: bytes
    path: bytes  # from the tree's root, b"" for the root
    mode: int  # st_mode
    oid: str = ""
    size: int = 0  # UNSIZED until the mount's sizes arrive (sizes.py)
    parent: int = ROOT_INODE
    children: dict[bytes, int] = field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_blob(self) -> bool:
        return stat.S_ISREG(self.mode) or stat.S_ISLNK(self.mode)


# Writable: writes go to the overlay (write/layer.py) until committed.
GIT_MODES = {"100644": stat.S_IFREG | 0o644, "100755": stat.S_IFREG | 0o755,
             "120000": stat.S_IFLNK | 0o777, "040000": stat.S_IFDIR | 0o755,
             "160000": stat.S_IFDIR | 0o755}  # a submodule shows as an empty directory


class Entry(NamedTuple):  # a tuple: made 100k times per mount, at a third of a dataclass's cost
    git_mode: str
    kind: str
    oid: str
    path: bytes


def list_tree_args(git_dir: Path, commit: str) -> list[str]:
    return ["--git-dir", str(git_dir), "ls-tree", "-r", "-t", "-z", "--full-tree", commit]


def list_tree(git_dir: Path, commit: str) -> list[Entry]:
    return parse_tree(run_git(list_tree_args(git_dir, commit)))


def parse_tree(out: bytes) -> list[Entry]:
    """The entries of ``git ls-tree -r -t -z`` output."""
    entries = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        git_mode, kind, oid = meta.decode().split(" ")
        entries.append(Entry(git_mode, kind, oid, path))
    return entries


class Tree:
    def __init__(self, entries: list[Entry], sizes: dict[str, int],
                 keep: dict[bytes, int] | None = None) -> None:
        self.nodes: dict[int, Node] = {ROOT_INODE: Node(ROOT_INODE, b"", b"", stat.S_IFDIR | 0o555)}
        self.entries = entries
        by_path: dict[bytes, int] = {b"": ROOT_INODE}
        # The root's entries take the first numbers, in tree order, and ``keep`` (path ->
        # inode) what a mount answering before its clone landed numbered (rootview.py): the
        # inodes the kernel has stay right once the full tree is built.
        top = keep if keep is not None else {
            e.path: FIRST_INODE + i for i, e in enumerate(e for e in entries if b"/" not in e.path)}
        inode = max(top.values(), default=FIRST_INODE - 1) + 1
        for entry in entries:  # ls-tree -t lists a directory before its contents
            parent_path, _, name = entry.path.rpartition(b"/")
            parent = by_path[parent_path]
            number = top.get(entry.path)
            if number is None:
                number, inode = inode, inode + 1
            node = Node(number, name, entry.path, GIT_MODES[entry.git_mode], entry.oid,
                        sizes.get(entry.oid, UNSIZED) if entry.kind == "blob" else 0, parent)
            self.nodes[number] = node
            self.nodes[parent].children[name] = number
            if entry.kind != "blob":
                by_path[entry.path] = number

    def apply_sizes(self, sizes: dict[str, int]) -> None:
        """Give every blob still ``UNSIZED`` its size from ``sizes`` (which has them all)."""
        for node in self.nodes.values():
            if node.size == UNSIZED and node.oid in sizes:
                node.size = sizes[node.oid]

    def blobs(self) -> Iterator[Node]:
        return (node for node in self.nodes.values() if node.is_blob)

    def child(self, parent: int, name: bytes) -> Node | None:
        inode = self.nodes[parent].children.get(name)
        return self.nodes[inode] if inode is not None else None
