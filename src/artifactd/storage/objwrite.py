"""In-process object writes for REST commits: blobs, trees and commits with libgit2 (pygit2).

A REST commit of a few files used to start seven git processes (rev-parse, ls-tree,
hash-object, update-index, write-tree, commit-tree, update-ref); their starts were most of
its time (docs/benchmarks.md, "Writes without a git client"). libgit2 writes the same loose
objects git does (zlib, a temporary file renamed into place, nothing written when the object
exists), in-process, and reads packs, loose objects and the alternates of forks. The branch
moves with a libgit2 ref transaction: git's lock file protocol (``<ref>.lock``, created
exclusively, renamed over the ref), the one ``update-ref`` and a push's receive-pack follow,
so a REST commit and a push racing on one branch exclude each other exactly as two pushes
do (``move_ref``).

A tree is written by rebuilding only the directories a commit touches (``TreeBuilder`` on
the parent's subtree), not the whole index, so a commit to a large tree costs its changes,
not the tree's size.

libgit2 reads no configuration file of the machine (the search paths are emptied, as git
runs with ``GIT_CONFIG_NOSYSTEM`` and ``GIT_CONFIG_GLOBAL=/dev/null``), and the repos are
server-owned paths, so its ownership check is off (git runs with ``safe.directory=*``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pygit2
from pygit2.enums import ConfigLevel, FileMode, ObjectType, Option, RepositoryOpenFlag

from artifactd.storage.gitwrite import IndexEntry, RefUpdateRefused

for _level in (ConfigLevel.PROGRAMDATA, ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL):
    pygit2.option(Option.SET_SEARCH_PATH, _level, "")
pygit2.option(Option.SET_OWNER_VALIDATION, 0)

# What git's ident code strips from both ends of a name or email ("crud"), so that a commit
# made here has the bytes ``git commit-tree`` would have written.
CRUD = "".join(chr(c) for c in range(33)) + ".,:;<>\"\\'"
TREE_MODE = "040000"


class ObjectWriter:
    """Objects of one bare repo; remembers the loose objects it created (for accounting)."""

    def __init__(self, git_dir: Path):
        self.git_dir = git_dir
        self.repo = pygit2.Repository(str(git_dir),
                                      RepositoryOpenFlag.BARE | RepositoryOpenFlag.NO_SEARCH)
        self.created: list[str] = []

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

    # -- writes ------------------------------------------------------------------------

    def _created(self, oid: pygit2.Oid, existed: bool) -> str:
        sha = str(oid)
        if not existed:
            self.created.append(sha)
        return sha

    def blob(self, data: bytes) -> str:
        existed = pygit2.hash(data) in self.repo
        return self._created(self.repo.create_blob(data), existed)

    def blob_from_file(self, path: Path) -> str:
        """A server-owned spooled file as a blob, read by libgit2 (never whole in memory)."""
        existed = pygit2.hashfile(str(path)) in self.repo
        return self._created(self.repo.create_blob_fromdisk(str(path)), existed)

    def tree(self, base_commit: str | None, changes: dict[str, IndexEntry | None]) -> str:
        """The tree of ``base_commit`` with ``changes`` applied (``None``: remove the file).

        The changes must already be consistent (``commits._resolve`` checked them): no path is
        both a file and a directory afterwards. A directory left empty disappears, as in git.
        """
        base = self.repo[base_commit].peel(pygit2.Tree) if base_commit else None
        sha = self._tree(base, changes)
        if sha is None:  # every file removed: the empty tree
            return self._write_tree(self.repo.TreeBuilder())
        return sha

    def _tree(self, base: pygit2.Tree | None, changes: dict[str, IndexEntry | None]) -> str | None:
        builder = self.repo.TreeBuilder(base) if base is not None else self.repo.TreeBuilder()
        here: dict[str, IndexEntry | None] = {}
        below: dict[str, dict[str, IndexEntry | None]] = {}
        for path, entry in changes.items():
            name, slash, rest = path.partition("/")
            if slash:
                below.setdefault(name, {})[rest] = entry
            else:
                here[name] = entry
        for name in {*here, *below}:
            existing = builder.get(name)
            subtree: str | None = None
            if name in below:
                inner = (existing.peel(pygit2.Tree)
                         if existing is not None and existing.type == ObjectType.TREE else None)
                subtree = self._tree(inner, below[name])
            put = here.get(name)
            if put is not None:  # a file; anything below it was removed (checked)
                builder.insert(name, pygit2.Oid(hex=put.sha), int(put.mode, 8))
            elif subtree is not None:
                builder.insert(name, pygit2.Oid(hex=subtree), FileMode.TREE)
            elif existing is not None and (name in here or name in below):
                builder.remove(name)
        if len(builder) == 0:
            return None
        return self._write_tree(builder)

    def _write_tree(self, builder: pygit2.TreeBuilder) -> str:
        # Only the directories a commit touches are written, and those are almost always
        # new; one that reverts to an earlier loose tree is counted again until the next
        # maintenance measures the disk (an overcount, never an undercount).
        return self._created(builder.write(), False)

    def commit(self, tree: str, parents: list[str], message: str, author: tuple[str, str],
               committer: tuple[str, str]) -> str:
        """A commit dated now (the local time zone, as git's); identities are (name, email)
        already stripped of git's crud."""
        oid = self.repo.create_commit(
            None, pygit2.Signature(*author), pygit2.Signature(*committer), message,
            pygit2.Oid(hex=tree), [pygit2.Oid(hex=p) for p in parents])
        return self._created(oid, False)

    # -- refs --------------------------------------------------------------------------

    def move_ref(self, full_ref: str, new: str, old: str | None) -> None:
        """Move ``full_ref`` from ``old`` (None: it must not exist) to ``new``, or raise
        ``RefUpdateRefused`` and move nothing.

        The compare-and-swap happens under git's own lock file (``<ref>.lock``, created
        exclusively: the lock ``update-ref`` and a push's receive-pack take), and the value is
        read once the lock is held, so a push that moved the ref first makes this fail, and
        a push that comes while it is held fails to lock (its client is told to retry)."""
        try:
            with self.repo.transaction() as txn:
                txn.lock_ref(full_ref)
                found = self.repo.references.get(full_ref)
                current = None if found is None else str(found.target)
                if current != old:
                    raise RefUpdateRefused(f"{full_ref} is at {current}, not at {old}")
                txn.set_target(full_ref, pygit2.Oid(hex=new), message="artifactd: commit")
        except (pygit2.GitError, ValueError) as exc:  # locked, or a file/directory clash
            raise RefUpdateRefused(str(exc)[:500]) from None

    # -- accounting --------------------------------------------------------------------

    def _loose(self, sha: str) -> Path:
        return self.git_dir / "objects" / sha[:2] / sha[2:]

    def added_bytes(self, extra: tuple[str, ...] = ()) -> int:
        """Bytes on disk of the loose objects this writer created (and of ``extra``)."""
        total = 0
        for sha in {*self.created, *extra}:
            with contextlib.suppress(OSError):
                total += self._loose(sha).stat().st_size
        return total


def git_ident(name: str, email: str) -> tuple[str, str] | None:
    """(name, email) as git's ident code writes them, or None when git would refuse them
    (a name or email of crud only): the caller then lets git say so."""
    name, email = name.strip(CRUD), email.strip(CRUD)
    return (name, email) if name and email else None
