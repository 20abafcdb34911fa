"""Forking a repository directory without copying object bytes.

Git never changes an object file after writing it: loose objects and packs are written to a
temporary name and renamed into place, and removed (by gc, repack, prune) only by unlinking.
So a fork can *hardlink* every file of the parent's object store into its own directory,
as ``git clone --local`` does: the fork gets its own names for the same inodes, in time
proportional to the number of files (a handful of packs after maintenance) and independent
of their size. Deleting the parent or collecting its garbage unlinks only the parent's
names; the fork's links keep the data alive.

A fork never sees objects written to its parent (or to sibling forks) after it was made:
links are taken once, and each repository writes new objects only into its own directory.
What a fork does receive is the parent's whole object store at fork time, which can hold
more than its refs reach (other branches with ``default_branch_only``, unreachable objects
the parent has not pruned yet). Git clients cannot fetch those: upload-pack serves only
objects reachable from the fork's refs (``uploadpack.allowReachableSHA1InWant``, never
``allowAnySHA1InWant``). The content routes by hash can read them, within the same
namespace that could read the parent anyway; the fork's own maintenance prunes them.

Only ``objects/`` is shared. The parent's ``objects/info/alternates`` is never followed (the
repo store does not use alternates), and refs are written fresh from a snapshot taken by
the caller *before* linking, so every object those refs reach was already on disk.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Files under objects/ that describe the object store and are safe to share: packs and their
# indexes, reverse indexes, bitmaps, the multi-pack index, commit-graphs, promisor markers.
_PACK_SUFFIXES = (".pack", ".idx", ".rev", ".bitmap", ".promisor", ".mtimes")
_HEX2 = set("0123456789abcdef")


class ObjectsMoved(Exception):
    """A file vanished while linking (a concurrent repack or prune); take a new snapshot."""


@dataclass(frozen=True)
class LinkedObjects:
    objects: int  # loose objects plus objects in packs (a duplicate in two packs counts twice)
    bytes: int
    files: int


def _idx_count(path: Path) -> int:
    """Number of objects in a pack index (v2: magic, version, 256-entry fanout table)."""
    with open(path, "rb") as handle:
        head = handle.read(8 + 256 * 4)
    if len(head) < 8 + 256 * 4 or head[:4] != b"\xfftOc":
        return 0
    return int(struct.unpack(">I", head[-4:])[0])


def _link(src: Path, dst: Path) -> int:
    try:
        os.link(src, dst)
        return os.lstat(dst).st_size
    except FileNotFoundError as exc:
        raise ObjectsMoved(str(src)) from exc


def _list(directory: Path) -> list[os.DirEntry[str]]:
    """The entries of ``directory``; one that vanished (prune removes emptied loose-object
    directories, a repack replaces packs) means the snapshot is stale, as for a file."""
    try:
        with os.scandir(directory) as entries:
            return list(entries)
    except FileNotFoundError as exc:
        raise ObjectsMoved(str(directory)) from exc


def link_objects(src_objects: Path, dst_objects: Path) -> LinkedObjects:
    """Hardlink every object file of ``src_objects`` into the (empty) ``dst_objects``."""
    objects = total = files = 0
    if not src_objects.is_dir():
        return LinkedObjects(0, 0, 0)
    names = sorted(e.name for e in _list(src_objects) if e.is_dir(follow_symlinks=False))
    for name in names:
        if len(name) == 2 and set(name) <= _HEX2:  # loose objects fan-out directory
            loose = src_objects / name
            target = dst_objects / name
            files_here = [e.name for e in _list(loose) if len(e.name) == 38 and not e.name.startswith(".")]
            if files_here:
                target.mkdir(exist_ok=True)
            for file in files_here:
                total += _link(loose / file, target / file)
                objects += 1
                files += 1
    pack_dir = src_objects / "pack"
    if pack_dir.is_dir():
        (dst_objects / "pack").mkdir(exist_ok=True)
        pack_files = sorted(e.name for e in _list(pack_dir) if e.is_file(follow_symlinks=False))
        # Link each pack before its index: a reader that sees an .idx expects its .pack.
        for file in sorted(pack_files, key=lambda f: (not f.endswith(".pack"), f)):
            if file.startswith("tmp_") or not (
                file.endswith(_PACK_SUFFIXES) or file in ("multi-pack-index",)
            ):
                continue
            total += _link(pack_dir / file, dst_objects / "pack" / file)
            files += 1
            if file.endswith(".idx"):
                objects += _idx_count(dst_objects / "pack" / file)
    info_dir = src_objects / "info"
    if info_dir.is_dir():
        (dst_objects / "info").mkdir(exist_ok=True)
        graph = info_dir / "commit-graph"
        if graph.is_file():
            total += _link(graph, dst_objects / "info" / "commit-graph")
            files += 1
        chain_dir = info_dir / "commit-graphs"
        if chain_dir.is_dir():
            (dst_objects / "info" / "commit-graphs").mkdir(exist_ok=True)
            for file in sorted(e.name for e in _list(chain_dir)):
                if file.startswith("tmp_"):
                    continue
                total += _link(chain_dir / file, dst_objects / "info" / "commit-graphs" / file)
                files += 1
    return LinkedObjects(objects, total, files)


def write_packed_refs(git_dir: Path, refs: Sequence[tuple[str, str]]) -> None:
    """Write ``refs`` (name, object id) as the repository's packed-refs file.

    No peeled lines: git peels annotated tags on demand when a file does not claim to be
    peeled. Sorted, as the ``sorted`` trait promises git's binary search.
    """
    lines = ["# pack-refs with: sorted \n"]
    for name, sha in sorted(refs, key=lambda item: item[0].encode()):
        lines.append(f"{sha} {name}\n")
    tmp = git_dir / "packed-refs.tmp"
    tmp.write_text("".join(lines))
    os.replace(tmp, git_dir / "packed-refs")
