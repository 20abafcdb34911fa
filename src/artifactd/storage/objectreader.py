"""Object reads for the content routes, in process through libgit2 (pygit2).

A read of a small file is a few object lookups of tens of microseconds each. Starting a
``git cat-file`` for it costs milliseconds, and a pool of them either holds a process per
repo of the working set or starts one on nearly every read when reads fan out over
thousands of repos (one per agent). Opening a repository in libgit2 costs a few hundred
microseconds and no process, so the first read of a fresh repo costs about what a warm one
does, plus that open.

``ObjectReader.run`` answers the same commands the cat-file batch protocol does
(``info``/``contents`` of a name) with the same answers, for the name forms the content
routes use: a full ref name or an object id (4 to 40 hex digits), optionally followed by
``^{kind}`` (peel) or ``~n`` (first-parent ancestor), optionally followed by ``:path``.
Refs are read from disk on every lookup (libgit2 re-reads loose refs and re-stats
``packed-refs``), so a push is visible at once. Replace refs are never consulted.

Open repositories are kept in an LRU over repos, bounded by ``max_handles`` and closed when
idle for ``idle_seconds`` (which also lets go of the files of a repository that was deleted
and moved to the trash). A handle is reopened when a pack directory it reads (its own or an
alternate's, for forks) changed since it was opened: a maintenance repack replaces the
packs, and a handle holding the old ones would keep their disk space and, once an old pack
is gone before libgit2 opened it, fail. Inside one request a race with a repack can still
show as a libgit2 error or as an object that should exist but was not found; either makes
the whole batch run again once on a freshly opened repository.

Everything runs on the event loop of the worker process that made the reader, without a
thread hop: the calls are short (the routes only read blobs up to ``content.INLINE_BLOB_MAX``
this way; larger ones stream from ``catfile.stream_blob``), pygit2 holds the GIL while it
works, and a hop would cost about as much as the lookups themselves.
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pygit2
from pygit2.enums import ConfigLevel, FileMode, ObjectType, RepositoryOpenFlag

from artifactd.observability import CONTENT_REPO_OPENS
from artifactd.storage.catfile import Answer, ObjectInfo

# The default bound (the server passes its ``content_reader_max_repos``, fitted to the
# open-file limit). A handle holds an open descriptor per pack it has read from (one after
# compaction, and the parent's for a fork), which ``http.protocol``'s descriptor budget
# counts, and about 30 KiB of memory.
MAX_HANDLES = 1024
MIN_HANDLES = 64  # what the reader keeps however low the open-file limit
DESCRIPTORS_PER_HANDLE = 2
# libgit2 caches parsed commits and trees (never blobs by default) across all repositories
# of the process; its default total is 256 MB.
CACHE_MAX_BYTES = 32 << 20

_TYPES = {ObjectType.COMMIT: "commit", ObjectType.TREE: "tree", ObjectType.BLOB: "blob",
          ObjectType.TAG: "tag"}
_NAME = re.compile(
    r"(?P<base>[^:^~]+)(?:\^\{(?P<peel>commit|tree|blob|tag)\}|~(?P<back>\d{1,6}))?"
    r"(?::(?P<path>.*))?", re.DOTALL,
)
_HEX = re.compile(r"[0-9a-f]{4,40}")
_OPEN_FLAGS = RepositoryOpenFlag.NO_SEARCH | RepositoryOpenFlag.BARE
_MAX_TAG_CHAIN = 16
T = TypeVar("T")


class ReadFailed(Exception):
    """The repository could not be read (gone, not a repository, or broken)."""


class _Missing(Exception):
    """An object named by an id we hold (from a ref, a tree or a parent) is not there."""


_configured = False


def _configure() -> None:
    """Process-wide libgit2 settings: no user or system config, no ownership check."""
    global _configured
    if _configured:
        return
    # The repositories belong to the server's data directory (git gets safe.directory=*),
    # and nothing in a user's ~/.gitconfig or /etc/gitconfig may change how they read.
    pygit2.settings.owner_validation = False
    for level in (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL,
                  ConfigLevel.PROGRAMDATA):
        pygit2.settings.search_path[level] = ""
    pygit2.settings.cache_max_size(CACHE_MAX_BYTES)
    _configured = True


configure = _configure  # for the other in-process readers of this package (storage/pushlog.py)
OPEN_FLAGS = _OPEN_FLAGS


def _pack_dirs(git_dir: Path) -> tuple[Path, ...]:
    """The pack directories a repository reads: its own, then its alternates' (forks)."""
    objects = git_dir / "objects"
    dirs = [objects / "pack"]
    try:
        text = (objects / "info" / "alternates").read_text()
    except OSError:
        return tuple(dirs)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            dirs.append((objects / line / "pack").resolve())
    return tuple(dirs)


def _stamp(paths: Sequence[Path]) -> tuple[int, ...]:
    stamps = []
    for path in paths:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(-1)
    return tuple(stamps)


@dataclass
class _Handle:
    repo: pygit2.Repository
    watched: tuple[Path, ...]  # the alternates file and every pack directory read
    stamps: tuple[int, ...]
    last_used: float


class ObjectReader:
    def __init__(self, *, max_handles: int = MAX_HANDLES, idle_seconds: float = 60.0):
        _configure()
        self.max_handles = max(1, max_handles)
        self.idle_seconds = idle_seconds
        self._handles: OrderedDict[Path, _Handle] = OrderedDict()
        self._last_reap = time.monotonic()
        self.opened = 0  # repositories opened since creation (tests and benchmarks read it)

    @property
    def total(self) -> int:
        return len(self._handles)

    async def run(self, git_dir: Path, commands: Sequence[tuple[str, str]]) -> list[Answer]:
        """Answer ``info``/``contents`` commands as ``git cat-file --batch-command`` does."""
        return self.read(git_dir, commands)

    def read(self, git_dir: Path, commands: Sequence[tuple[str, str]]) -> list[Answer]:
        for kind, name in commands:
            if kind not in ("info", "contents") or "\0" in name or "\n" in name:
                raise ValueError(f"bad object read {kind!r} {name!r}")
        self._reap_if_due()
        fresh, handle = self._handle(git_dir)
        for _attempt in (1, 2):
            try:
                answers, suspicious = _answer_all(handle.repo, commands)
            except pygit2.GitError as exc:
                if fresh:
                    raise ReadFailed(f"cannot read {git_dir.name}: {exc}") from exc
                suspicious = True
            if not suspicious or fresh:
                handle.last_used = time.monotonic()
                return answers
            # A repack may have replaced the packs between our stat and the lookups.
            self.evict(git_dir)
            fresh, handle = self._handle(git_dir)
        raise AssertionError("unreachable")

    def use(self, git_dir: Path, work: Callable[[pygit2.Repository], T]) -> T:
        """``work(repo)`` on the open repository; run again once on a fresh handle if it
        fails with a libgit2 error or a missing object (``KeyError``) on a handle opened
        earlier (a repack may have replaced the packs it knew)."""
        self._reap_if_due()
        fresh, handle = self._handle(git_dir)
        try:
            result = work(handle.repo)
        except (pygit2.GitError, KeyError):
            if fresh:
                raise
            self.evict(git_dir)
            _fresh, handle = self._handle(git_dir)
            result = work(handle.repo)
        handle.last_used = time.monotonic()
        return result

    def _handle(self, git_dir: Path) -> tuple[bool, _Handle]:
        """The open repository for ``git_dir`` and whether it was opened just now."""
        handle = self._handles.get(git_dir)
        if handle is not None:
            if _stamp(handle.watched) == handle.stamps:
                self._handles.move_to_end(git_dir)
                return False, handle
            self.evict(git_dir)
        alternates = git_dir / "objects" / "info" / "alternates"
        watched = (alternates, *_pack_dirs(git_dir))
        stamps = _stamp(watched)  # before opening: a change after this is seen next time
        try:
            repo = pygit2.Repository(str(git_dir), _OPEN_FLAGS)
        except (pygit2.GitError, OSError, KeyError) as exc:
            raise ReadFailed(f"cannot open {git_dir.name}: {exc}") from exc
        self.opened += 1
        CONTENT_REPO_OPENS.inc()
        handle = _Handle(repo, watched, stamps, time.monotonic())
        self._handles[git_dir] = handle
        while len(self._handles) > self.max_handles:
            _, oldest = self._handles.popitem(last=False)
            oldest.repo.free()
        return True, handle

    def packed_here(self, git_dir: Path) -> None:
        """This process just added a pack to ``git_dir``'s own pack directory (a push
        received in process): keep the open handle rather than reopen it on its next use.
        Nothing was removed, and libgit2 rereads the pack directory when an object is not
        found, so the handle sees the new objects. Only when nothing else it watches changed
        (an alternate's repack still reopens it)."""
        handle = self._handles.get(git_dir)
        if handle is None:
            return
        stamps = _stamp(handle.watched)
        own_pack_dir = 1  # watched = (alternates file, own pack dir, alternates' pack dirs)
        if all(new == old for i, (new, old) in enumerate(zip(stamps, handle.stamps, strict=True))
               if i != own_pack_dir):
            handle.stamps = stamps

    def evict(self, git_dir: Path) -> None:
        """Close the handle of one repository (it was deleted, replaced or repacked)."""
        handle = self._handles.pop(git_dir, None)
        if handle is not None:
            handle.repo.free()

    def reap(self, now: float | None = None) -> int:
        """Close handles idle for longer than ``idle_seconds``; returns how many."""
        cutoff = (time.monotonic() if now is None else now) - self.idle_seconds
        stale = [key for key, handle in self._handles.items() if handle.last_used < cutoff]
        for key in stale:
            self.evict(key)
        return len(stale)

    def _reap_if_due(self) -> None:
        # On the read path rather than a timer: a worker that stops reading keeps its
        # handles until the next read, which is when their descriptors could matter.
        now = time.monotonic()
        if now - self._last_reap >= max(0.5, self.idle_seconds / 4):
            self._last_reap = now
            self.reap(now)

    def close(self) -> None:
        for key in list(self._handles):
            self.evict(key)


def _answer_all(repo: pygit2.Repository, commands: Sequence[tuple[str, str]]
                ) -> tuple[list[Answer], bool]:
    """Every command's answer, and whether an object we held an id for was missing."""
    answers: list[Answer] = []
    suspicious = False
    ancestors: dict[tuple[str, int], pygit2.Oid | None] = {}
    for kind, name in commands:
        try:
            oid = _resolve(repo, name, ancestors)
            if oid is None:
                answers.append((None, None))
                continue
            if kind == "info":
                type_, size = repo.odb.read_header(oid)
                answers.append((ObjectInfo(str(oid), _TYPES[type_], size), None))
            else:
                type_, data = repo.odb.read(oid)
                answers.append((ObjectInfo(str(oid), _TYPES[type_], len(data)), data))
        except _Missing:
            suspicious = True
            answers.append((None, None))
        except KeyError:  # read_header/read of an id given by the caller: not in the repo
            suspicious = True
            answers.append((None, None))
    return answers, suspicious


def _resolve(repo: pygit2.Repository, name: str,
             ancestors: dict[tuple[str, int], pygit2.Oid | None]) -> pygit2.Oid | None:
    """The object ``name`` names, or ``None`` when the name does not resolve."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"unsupported object name {name!r}")
    oid = _base(repo, match["base"])
    if oid is None:
        return None
    if match["peel"] is not None:
        oid = _peel(repo, oid, match["peel"])
    elif match["back"] is not None:
        oid = _ancestor(repo, match["base"], oid, int(match["back"]), ancestors)
    if oid is None or match["path"] is None:
        return oid
    tree = _peel(repo, oid, "tree")
    if tree is None:
        return None
    if match["path"] == "":
        return tree
    tree_object = _read(repo, tree)
    assert isinstance(tree_object, pygit2.Tree)
    try:
        entry = tree_object[match["path"]]
    except (KeyError, TypeError, ValueError):  # no such path, or a component is not a tree
        return None
    if entry.filemode == FileMode.COMMIT:  # a submodule: its commit is not in this repo
        return None
    found: pygit2.Oid = entry.id
    return found


def _base(repo: pygit2.Repository, base: str) -> pygit2.Oid | None:
    if len(base) == 40 and _HEX.fullmatch(base):
        return pygit2.Oid(hex=base)
    if _HEX.fullmatch(base):
        try:
            return repo.expand_id(base)
        except (KeyError, ValueError):  # no such object, or ambiguous: both are "missing"
            return None
    try:
        ref = repo.references.get(base)
        if ref is None:
            return None
        target = ref.resolve().target
    except (KeyError, ValueError):  # a dangling symbolic ref, or a name libgit2 refuses
        return None
    return target if isinstance(target, pygit2.Oid) else None


def _read(repo: pygit2.Repository, oid: pygit2.Oid) -> pygit2.Object:
    try:
        return repo[oid]
    except KeyError:
        raise _Missing(str(oid)) from None


def _header_type(repo: pygit2.Repository, oid: pygit2.Oid) -> int:
    try:
        return int(repo.odb.read_header(oid)[0])
    except KeyError:
        raise _Missing(str(oid)) from None


def _peel(repo: pygit2.Repository, oid: pygit2.Oid, kind: str) -> pygit2.Oid | None:
    """``oid^{kind}``: tags followed, a commit peeled to its tree; else ``None``.

    Types come from object headers, so peeling never reads a blob's contents."""
    for _ in range(_MAX_TAG_CHAIN):
        type_ = _TYPES.get(ObjectType(_header_type(repo, oid)))
        if type_ == kind:
            return oid
        if type_ == "tag":
            tag = _read(repo, oid)
            assert isinstance(tag, pygit2.Tag)
            oid = tag.target
        elif type_ == "commit" and kind == "tree":
            commit = _read(repo, oid)
            assert isinstance(commit, pygit2.Commit)
            return commit.tree_id
        else:
            return None
    return None


def _ancestor(repo: pygit2.Repository, base: str, oid: pygit2.Oid, back: int,
              ancestors: dict[tuple[str, int], pygit2.Oid | None]) -> pygit2.Oid | None:
    """``base~back``, reusing ``base~(back-1)`` when the same batch asked for it (a log page
    asks for ``sha~1`` to ``sha~31`` together)."""
    start = 0
    current: pygit2.Oid | None = _peel(repo, oid, "commit")
    for k in range(back - 1, 0, -1):
        if (base, k) in ancestors:
            start, current = k, ancestors[(base, k)]
            break
    for k in range(start + 1, back + 1):
        if current is None:
            break
        commit = _read(repo, current)
        assert isinstance(commit, pygit2.Commit)
        parents = commit.parent_ids
        current = parents[0] if parents else None
        ancestors[(base, k)] = current
    return current
