"""The branch's root directory straight from the remote, before any clone: three requests.

A mount's first ``ls`` needs the names and sizes of the root's entries only. Those come
over the git protocol (v2, smart HTTP), on one kept-alive connection and with the git
remote's own credentials (the REST tree routes want an API token a mount does not have):

1. ``ls-refs`` with the branch as prefix: the commit the branch points at;
2. ``fetch`` of that commit with ``filter tree:1``: a pack of the commit and its root tree
   only (depth 1 leaves out every blob and every deeper tree), decoded here;
3. ``object-info`` for the root's blobs: their sizes, no content.

Any answer that is not what these ask for raises ``RootReadError``; the caller then takes
the path through the clone (a remote without ``object-info`` or without filters).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from artifactd.fs import fetchpack, objectinfo
from artifactd.fs.gitcmd import GitFailed
from artifactd.fs.tree import Entry
from artifactd.fs.wire import Remote, WireError

OBJ_COMMIT, OBJ_TREE = 1, 2
HOT_SET_REF = "refs/artifact-fs/hotset"  # hotset.REF (not imported here: it loads logging and subprocess)
COMMITTER = re.compile(rb"^committer .* (\d+) [+-]\d{4}$", re.MULTILINE)
KINDS = {"040000": "tree", "160000": "commit"}  # any other mode is a blob


class RootReadError(RuntimeError):
    pass


@dataclass
class RootRead:
    commit: str
    commit_time: int
    tree: str  # the root tree's id
    entries: list[Entry]  # the root's entries, in tree order
    sizes: dict[str, int]  # blob id -> size, for the root's blobs
    hot_set: bool = False  # the remote has a hot set (``hotset.REF``): reads wait for its batch


def request_body(commit: str, *, tip_only: bool = False) -> bytes:
    """A fetch of ``commit`` (or of a tree) with its root tree but no blob and no subtree.
    ``tip_only`` (a commit): ``deepen 1``, so that the remote sends that commit and not
    every commit of its history (a filter never leaves out commits); the answer then has
    a ``shallow-info`` section before the pack, which ``fetchpack.pack_of`` skips."""
    pkt = fetchpack._pkt
    return (pkt("command=fetch\n") + pkt("agent=git/artifact-fs\n") + pkt("object-format=sha1\n")
            + b"0001" + pkt("no-progress\n") + pkt("ofs-delta\n") + pkt(f"want {commit}\n")
            + (pkt("deepen 1\n") if tip_only else b"")
            + pkt("filter tree:1\n") + pkt("done\n") + b"0000")


def parse_commit(data: bytes) -> tuple[str, int]:
    """The root tree's id and the committer's time of a commit object."""
    header = data.split(b"\n\n", 1)[0]
    if not header.startswith(b"tree ") or len(header) < 45:
        raise RootReadError("the commit in the pack has no tree line")
    found = COMMITTER.search(header)
    if found is None:
        raise RootReadError("the commit in the pack has no committer time")
    return header[5:45].decode(), int(found.group(1))


def parse_tree_object(data: bytes) -> list[Entry]:
    """The entries of a raw tree object (``MODE NAME\\0`` then 20 bytes of id), in order."""
    entries = []
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        mode = data[at:space].decode().rjust(6, "0")
        oid = data[nul + 1:nul + 21].hex()
        if len(oid) != 40:
            raise RootReadError("a truncated tree object")
        entries.append(Entry(mode, KINDS.get(mode, "blob"), oid, data[space + 1:nul]))
        at = nul + 21
    return entries


def read_tree(remote: Remote, tree: str) -> tuple[list[Entry], dict[str, int]]:
    """One directory below the root, the same way: its tree object alone (``filter tree:1``
    on a wanted tree leaves out everything it holds), then its blobs' sizes."""
    try:
        status, body = remote.request("POST", "/git-upload-pack", request_body(tree), fetchpack.POST_HEADERS)
        if status != 200:
            raise RootReadError(f"the fetch of tree {tree} answered HTTP {status}")
        objects = fetchpack.parse_objects(fetchpack.pack_of(body))
    except (WireError, fetchpack.PackError, ValueError) as exc:
        raise RootReadError(f"cannot read tree {tree}: {exc}") from exc
    found = [data for kind, data in objects if kind == OBJ_TREE and fetchpack_id("tree", data) == tree]
    if not found:
        raise RootReadError(f"the fetch of tree {tree} did not bring it")
    entries = parse_tree_object(found[0])
    blobs = sorted({e.oid for e in entries if e.kind == "blob"})
    try:
        return entries, objectinfo.sizes(remote, blobs) if blobs else {}
    except objectinfo.ObjectInfoError as exc:
        raise RootReadError(str(exc)) from exc


def read_root(remote: Remote, branch: str) -> RootRead:
    """The branch's commit, its root entries and their blobs' sizes (see the module)."""
    try:
        refs = fetchpack.ls_refs(remote, f"refs/heads/{branch}", HOT_SET_REF)  # one request for both
        commit = refs.get(f"refs/heads/{branch}")
        if commit is None:
            raise RootReadError(f"no branch {branch!r} on the remote")
        status, body = remote.request("POST", "/git-upload-pack", request_body(commit, tip_only=True),
                                      fetchpack.POST_HEADERS)
        if status != 200:
            raise RootReadError(f"the fetch of the root tree answered HTTP {status}")
        objects = fetchpack.parse_objects(fetchpack.pack_of(body))
    except (WireError, fetchpack.PackError, ValueError) as exc:
        raise RootReadError(f"cannot read the root tree: {exc}") from exc
    # The tip alone; a remote that sent more (no shallow support) still has it among them.
    commits = [data for kind, data in objects
               if kind == OBJ_COMMIT and fetchpack_id("commit", data) == commit]
    trees = {fetchpack_id("tree", data): data for kind, data in objects if kind == OBJ_TREE}
    if len(commits) != 1:
        raise RootReadError(f"the root fetch did not bring commit {commit}")
    tree, commit_time = parse_commit(commits[0])
    if tree not in trees:
        raise RootReadError("the root fetch brought no root tree (no tree:1 filter on the remote?)")
    entries = parse_tree_object(trees[tree])
    blobs = sorted({e.oid for e in entries if e.kind == "blob"})
    try:
        sizes = objectinfo.sizes(remote, blobs) if blobs else {}
    except objectinfo.ObjectInfoError as exc:
        raise RootReadError(str(exc)) from exc
    return RootRead(commit, commit_time, tree, entries, sizes, HOT_SET_REF in refs)


def fetchpack_id(kind: str, data: bytes) -> str:
    import hashlib

    return hashlib.sha1(f"{kind} {len(data)}\0".encode() + data).hexdigest()  # noqa: S324 - git ids


class EarlyRoot:
    """``read_root`` on a thread of the command that forks the mount (``add-repo`` handed to a
    daemon, ``artifactd mount``), with the credentials it was given: it overlaps the import
    of the FUSE side, needs no ``git credential`` call, and the mount process inherits the
    answer and the open connection (``wait`` before the fork: the child has no threads).
    ``fill``: where the credentials come from when they were not given (the daemon mounting
    a repo ``add-repo`` recorded: git's credential cache), asked on the same thread."""

    def __init__(self, url: str, auth: tuple[str, str] | None, branch: str,
                 fill: Callable[[], tuple[str, str] | None] | None = None) -> None:
        self.remote = Remote(url, auth, objectinfo.TIMEOUT)
        self.read: RootRead | None = None
        self.error = ""
        self.seconds = 0.0  # the three requests' time, for the mount's log
        self._fill = fill
        self._thread = threading.Thread(target=self._run, args=(branch,), name="rootfirst", daemon=True)
        self._thread.start()

    def _run(self, branch: str) -> None:
        started = time.monotonic()
        try:
            if self._fill is not None:
                self.remote.auth = self._fill()
            self.read = read_root(self.remote, branch)
        except (RootReadError, GitFailed, OSError) as exc:  # the last two: from git's credential cache
            self.error = str(exc)
            self.remote.close()
        self.seconds = time.monotonic() - started

    def wait(self) -> None:
        self._thread.join()
