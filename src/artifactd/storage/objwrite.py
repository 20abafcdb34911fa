"""In-process writes for REST commits: blobs, trees and the commit as one pack, and the ref.

A REST commit of a few files used to start seven git processes (rev-parse, ls-tree,
hash-object, update-index, write-tree, commit-tree, update-ref) and write a loose file per
object; the process starts were most of its time (docs/benchmarks.md, "Writes without a git
client"). Here the objects are computed in Python (git's object format: the ids are SHA-1 of
the same bytes ``hash-object``, ``write-tree`` and ``commit-tree`` hash) and written by
``objectfiles`` (loose, or one pack for a large commit, git's rule); objects the commit's
parent already has along the changed paths are not written again.
Reads (the parent's trees, what exists) go through libgit2 (pygit2), which reads packs,
loose objects and the alternates of forks. The branch moves with a libgit2 ref transaction:
git's lock file protocol (``<ref>.lock``, created exclusively, renamed over the ref), the
one ``update-ref`` and a push's receive-pack follow, so a REST commit and a push racing on
one branch exclude each other exactly as two pushes do (``move_ref``).

A tree is written by rebuilding only the directories a commit touches, from the parent's
raw tree objects (entries it does not touch are kept byte for byte), so a commit to a large
tree costs its changes, not the tree's size.

libgit2 reads no configuration file of the machine (the search paths are emptied, as git
runs with ``GIT_CONFIG_NOSYSTEM`` and ``GIT_CONFIG_GLOBAL=/dev/null``), and the repos are
server-owned paths, so its ownership check is off (git runs with ``safe.directory=*``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pygit2
from pygit2.enums import ConfigLevel, FileMode, Option, RepositoryOpenFlag

from artifactd.storage.gitwrite import IndexEntry, RefUpdateRefused
from artifactd.storage.objectfiles import PendingObject, object_id, write_objects, write_pack

for _level in (ConfigLevel.PROGRAMDATA, ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL):
    pygit2.option(Option.SET_SEARCH_PATH, _level, "")
pygit2.option(Option.SET_OWNER_VALIDATION, 0)

# What git's ident code strips from both ends of a name or email ("crud"), so that a commit
# made here has the bytes ``git commit-tree`` would have written.
CRUD = "".join(chr(c) for c in range(33)) + ".,:;<>\"\\'"
TREE_MODE = "040000"  # how ``entry`` reports a directory
_TREE = b"40000"  # how a tree object names one
LOCK_TIMEOUT = 0.1  # seconds a held ref lock is retried (git's filesRefLockTimeout default)


class _Locked(Exception):
    """The ref's lock file is held by another writer (or cannot be made)."""


def _parse_tree(raw: bytes) -> dict[bytes, tuple[bytes, bytes]]:
    """A raw tree object's entries: name -> (mode, 20-byte id), in the object's order."""
    entries: dict[bytes, tuple[bytes, bytes]] = {}
    at = 0
    while at < len(raw):
        space = raw.index(b" ", at)
        nul = raw.index(b"\0", space)
        entries[raw[space + 1:nul]] = (raw[at:space], raw[nul + 1:nul + 21])
        at = nul + 21
    return entries


def _tree_order(item: tuple[bytes, tuple[bytes, bytes]]) -> bytes:
    """git's tree order: names as bytes, a directory as if its name ended with '/'."""
    name, (mode, _) = item
    return name + b"/" if _is_tree(mode) else name


def _is_tree(mode: bytes) -> bool:
    return mode.lstrip(b"0") == _TREE  # "040000" too, as some old tools wrote it


def _now() -> str:
    """``<unix seconds> <+hhmm>`` of now in the local time zone, as git writes a date."""
    seconds = int(time.time())
    offset = time.localtime(seconds).tm_gmtoff // 60
    sign = "-" if offset < 0 else "+"
    return f"{seconds} {sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


class ObjectWriter:
    """Objects of one bare repo: reads through libgit2; writes queued, then ``flush``."""

    def __init__(self, git_dir: Path, objects_dir: Path | None = None, *, one_pack: bool = False):
        """``objects_dir``: where ``flush`` writes (a quarantine; the repo's own by default);
        ``one_pack``: always as one pack (the ``s3`` store uploads it as it is)."""
        self.git_dir = git_dir
        self.objects_dir = objects_dir or git_dir / "objects"
        self.one_pack = one_pack
        self.repo = pygit2.Repository(str(git_dir),
                                      RepositoryOpenFlag.BARE | RepositoryOpenFlag.NO_SEARCH)
        self.pending: dict[bytes, PendingObject] = {}
        self.known: set[bytes] = set()  # ids read from the repo's own trees
        self.written_bytes = 0

    # -- reads -------------------------------------------------------------------------

    def resolve(self, full_ref: str) -> str | None:
        """The commit a full ref points at (symbolic refs followed, tags peeled), or None."""
        try:
            target = self.repo.references[full_ref].resolve().target
            return str(self.repo[target].peel(pygit2.Commit).id)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            return None

    def root(self, commit: str | None) -> pygit2.Tree | None:
        return self.repo[commit].peel(pygit2.Tree) if commit else None

    def entry(self, tree: pygit2.Tree | None, path: str) -> IndexEntry | None:
        """What is at ``path`` of ``tree`` (mode ``TREE_MODE`` for a directory), or None:
        a lookup down the path, whatever the size of the tree."""
        if tree is None:
            return None
        try:
            found = tree[path]
        except KeyError:
            return None
        self.known.add(found.id.raw)
        return IndexEntry(f"{found.filemode:06o}", str(found.id))

    def files_under(self, tree: pygit2.Tree, path: str) -> list[str]:
        """Every file (blob, symlink or submodule entry) below directory ``path``."""
        found: list[str] = []
        stack: list[tuple[str, pygit2.Tree]] = [(path + "/", tree[path].peel(pygit2.Tree))]
        while stack:
            prefix, subtree = stack.pop()
            for item in subtree:
                name = prefix + (item.raw_name or b"").decode("utf-8", "surrogateescape")
                if item.filemode == FileMode.TREE:
                    stack.append((name + "/", self.repo[item.id].peel(pygit2.Tree)))
                else:
                    found.append(name)
        return found

    def _has(self, oid: bytes) -> bool:
        """Whether the object is queued or known to be in the repo: on the parent's trees
        along the changed paths (an unchanged file or directory, a put of the content a
        file already has). The odb is not asked: each miss there rescans and searches every
        pack, which between two maintenances of a busy repo is milliseconds per object. An
        object that exists elsewhere is written again, which git tolerates (the next repack
        keeps one copy; the size is counted high until then, never low)."""
        return oid in self.pending or oid in self.known

    # -- writes (queued; ``flush`` writes them) ------------------------------------------

    def _queue(self, item: PendingObject) -> str:
        if not self._has(item.oid):
            self.pending[item.oid] = item
        return item.oid.hex()

    def _queue_bytes(self, kind: str, data: bytes) -> str:
        oid = object_id(kind, len(data), iter((data,)))
        return self._queue(PendingObject(oid, kind, len(data), data=data))

    def blob(self, data: bytes) -> str:
        return self._queue_bytes("blob", data)

    def blob_from_file(self, path: Path) -> str:
        """A server-owned spooled file as a blob, read in chunks (never whole in memory)."""
        size = path.stat().st_size
        oid = object_id("blob", size, PendingObject(b"", "blob", size, file=path).chunks())
        return self._queue(PendingObject(oid, "blob", size, file=path))

    def tree(self, base_commit: str | None, changes: dict[str, IndexEntry | None]) -> str:
        """The tree of ``base_commit`` with ``changes`` applied (``None``: remove the file).

        The changes must already be consistent (``commits._resolve`` checked them): no path
        is both a file and a directory afterwards. A directory left empty disappears, as in
        git; every file removed leaves git's empty tree.
        """
        base = self.repo[base_commit].peel(pygit2.Tree).id.raw if base_commit else None
        grouped = {path.encode("utf-8", "surrogateescape"): entry
                   for path, entry in changes.items()}
        oid = self._tree(base, grouped)
        return oid.hex() if oid is not None else self._queue_bytes("tree", b"")

    def _tree(self, base: bytes | None,
              changes: dict[bytes, IndexEntry | None]) -> bytes | None:
        entries = _parse_tree(self.repo.odb.read(pygit2.Oid(raw=base))[1]) if base else {}
        if base is not None:
            self.known.add(base)
            self.known.update(oid for _, oid in entries.values())
        here: dict[bytes, IndexEntry | None] = {}
        below: dict[bytes, dict[bytes, IndexEntry | None]] = {}
        for path, entry in changes.items():
            name, slash, rest = path.partition(b"/")
            if slash:
                below.setdefault(name, {})[rest] = entry
            else:
                here[name] = entry
        for name in {*here, *below}:
            existing = entries.get(name)
            subtree: bytes | None = None
            if name in below:
                inner = existing[1] if existing is not None and _is_tree(existing[0]) else None
                subtree = self._tree(inner, below[name])
            put = here.get(name)
            if put is not None:  # a file; anything below it was removed (checked)
                entries[name] = (put.mode.encode(), bytes.fromhex(put.sha))
            elif subtree is not None:
                entries[name] = (_TREE, subtree)
            else:
                entries.pop(name, None)
        if not entries:
            return None
        data = b"".join(mode + b" " + name + b"\0" + oid for name, (mode, oid) in
                        sorted(entries.items(), key=_tree_order))
        return bytes.fromhex(self._queue_bytes("tree", data))

    def commit(self, tree: str, parents: list[str], message: str, author: tuple[str, str],
               committer: tuple[str, str]) -> str:
        """A commit dated now in the local time zone (as ``git commit-tree`` dates it);
        identities are (name, email) already stripped of git's crud."""
        stamp = _now()
        lines = [f"tree {tree}", *(f"parent {p}" for p in parents),
                 f"author {author[0]} <{author[1]}> {stamp}",
                 f"committer {committer[0]} <{committer[1]}> {stamp}"]
        return self._queue_bytes("commit", ("\n".join(lines) + "\n\n" + message).encode())

    def flush(self) -> None:
        """Write what is queued (loose, or one pack for many objects; ``objectfiles``)."""
        if self.pending:
            queued = list(self.pending.values())
            self.written_bytes += (write_pack(self.objects_dir / "pack", queued) if self.one_pack
                                   else write_objects(self.objects_dir, queued))
            self.pending.clear()

    # -- refs --------------------------------------------------------------------------

    def move_ref(self, full_ref: str, new: str, old: str | None) -> None:
        """Move ``full_ref`` from ``old`` (None: it must not exist) to ``new``, or raise
        ``RefUpdateRefused`` and move nothing.

        The compare-and-swap happens under git's own lock file (``<ref>.lock``, created
        exclusively: the lock ``update-ref`` and a push's receive-pack take), and the value is
        read once the lock is held, so a push that moved the ref first makes this fail, and
        a push that comes while it is held waits or fails to lock. A lock held by someone
        else (a push, maintenance packing refs) is retried for ``LOCK_TIMEOUT`` seconds, as
        git retries (``core.filesRefLockTimeout``, 100 ms by default)."""
        deadline = time.monotonic() + LOCK_TIMEOUT
        pause = 0.001
        while True:
            try:
                self._move_once(full_ref, new, old)
                return
            except _Locked as locked:
                if time.monotonic() >= deadline:
                    raise RefUpdateRefused(str(locked)[:500]) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.016)
            except (pygit2.GitError, ValueError) as exc:  # the commit of the transaction
                raise RefUpdateRefused(str(exc)[:500]) from None

    def _move_once(self, full_ref: str, new: str, old: str | None) -> None:
        with self.repo.transaction() as txn:
            try:
                txn.lock_ref(full_ref)
            except (pygit2.GitError, ValueError) as exc:  # locked, or a file/directory clash
                raise _Locked(str(exc)) from None
            found = self.repo.references.get(full_ref)
            current = None if found is None else str(found.target)
            if current != old:
                raise RefUpdateRefused(f"{full_ref} is at {current}, not at {old}")
            try:
                txn.set_target(full_ref, pygit2.Oid(hex=new), message="artifactd: commit")
            except (pygit2.GitError, ValueError) as exc:
                raise RefUpdateRefused(str(exc)[:500]) from None
        # Leaving the block commits the transaction (renames the lock over the ref).

    # -- accounting --------------------------------------------------------------------

    def added_bytes(self, loose: tuple[str, ...] = ()) -> int:
        """Bytes this writer added to the repo, and those of the ``loose`` objects named
        (written by git for it)."""
        total = self.written_bytes
        for sha in loose:
            with contextlib.suppress(OSError):
                total += (self.git_dir / "objects" / sha[:2] / sha[2:]).stat().st_size
        return total


def git_ident(name: str, email: str) -> tuple[str, str] | None:
    """(name, email) as git's ident code writes them, or None when git would refuse them
    (a name or email of crud only): the caller then lets git say so."""
    name, email = name.strip(CRUD), email.strip(CRUD)
    return (name, email) if name and email else None
