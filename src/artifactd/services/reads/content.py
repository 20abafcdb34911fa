"""Repo content: log, commit, tree, blob, file and raw reads (spec 001 "Repo content").

Every read goes through the worker's ``ObjectReader``: object lookups in process through
libgit2 on an open repository (an LRU of them), no process per request; only blobs larger
than ``INLINE_BLOB_MAX`` stream from a ``git cat-file`` of their own. The rules live here:

- hashes are full 40-hex SHA-1 object ids (the object routes are immutable, so an
  abbreviation that could become ambiguous later is not accepted there);
- a ``ref`` is a branch, then a tag, then a commit hash (4 to 40 hex digits), tried in that
  order; ``refs/...`` names one ref exactly. Names are checked with git's ref-format rules
  before they reach git, so rev syntax (``^``, ``~``, ``:``, ``@{``) cannot be injected;
- paths are relative, ``/``-separated, with no empty, ``.`` or ``..`` component, no NUL and
  no control character;
- a repo that has never been pushed to has no directory: it reads as an empty repo.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from artifactd.errors import Code, InternalError, NotFound, ValidationError
from artifactd.services.backend import Backend
from artifactd.services.descriptors import reader_repo_budget
from artifactd.services.names import ref_problem
from artifactd.storage.catfile import Answer, stream_blob
from artifactd.storage.gitobjects import (
    Commit,
    TreeEntry,
    commit_date,
    commit_parents,
    parse_commit,
    parse_tree,
)
from artifactd.storage.metadata import RepoRow
from artifactd.storage.objectreader import ObjectReader, ReadFailed

HASH = re.compile(r"[0-9a-f]{40}")
ABBREV = re.compile(r"[0-9a-f]{4,40}")
INLINE_BLOB_MAX = 1 << 20  # blobs up to this size are read in process and sent from memory
MAX_OBJECT_JSON = 32 << 20  # commits and trees larger than this are refused, not parsed
MAX_PATH = 4096
LOG_DEFAULT_LIMIT = 50
LOG_MAX_LIMIT = 200
# Past this many commits to skip, one `git rev-list --skip` is cheaper than walking them
# through batches of object lookups. Both produce git's default (commit date) order.
REV_LIST_OFFSET = 500
PREFETCH = 32  # commits read ahead along a first-parent chain in one batch of lookups
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
log = logging.getLogger(__name__)

_POOL_KEY = "content.object_reader"


def pool(backend: Backend) -> ObjectReader:
    """The worker's object reader, made on first use (it belongs to the running event loop)."""
    existing = backend.extras.get(_POOL_KEY)
    if isinstance(existing, ObjectReader):
        return existing
    created = ObjectReader(max_handles=reader_repo_budget(backend.settings))
    backend.extras[_POOL_KEY] = created
    return created


def shutdown(backend: Backend) -> None:
    existing = backend.extras.pop(_POOL_KEY, None)
    if isinstance(existing, ObjectReader):
        existing.close()


def warm(backend: Backend, repo_id: str) -> None:
    """Open a just-pushed repo in the worker's object reader (on the loop, like every use
    of it), so that its first read, typically the pushing agent's own, costs no more than a
    warm one: the open (``HEAD``, refs, pack index: about 1 ms) is paid after the push's
    answer, not inside the read. Best effort: a failure here only leaves the open to the
    read."""
    try:
        pool(backend).read(backend.repos.path(repo_id), [("info", "HEAD")])
    except (ReadFailed, OSError) as exc:
        log.debug("warming the object reader for repo %s failed: %s", repo_id, exc)


def forget_repo(backend: Backend, repo_id: str) -> None:
    """Close the open handle of a deleted repo at once (others age out when idle)."""
    existing = backend.extras.get(_POOL_KEY)
    if isinstance(existing, ObjectReader):
        existing.evict(backend.repos.path(repo_id))


# -- validation ------------------------------------------------------------------------------


def check_hash(value: str, pointer: str = "/hash") -> str:
    lowered = value.lower()
    if not HASH.fullmatch(lowered):
        raise ValidationError(
            f"Malformed object hash {value[:80]!r}: expected 40 hexadecimal digits",
            code=Code.INVALID_HASH, pointer=pointer,
        )
    return lowered


def check_ref(value: str, pointer: str = "/ref") -> str:
    problem = ref_problem(value)
    if problem is not None:
        raise ValidationError(f"Invalid ref: {problem}", pointer=pointer)
    return value


def path_problem(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if len(value.encode()) > MAX_PATH:
        return f"must be at most {MAX_PATH} bytes"
    if _CONTROL.search(value):
        return "must not contain NUL or control characters"
    if value.startswith("/"):
        return "must be relative (no leading '/')"
    for part in value.split("/"):
        if part in ("", ".", ".."):
            return "must not contain empty, '.' or '..' components"
    return None


def check_path(value: str | None, pointer: str = "/path") -> str:
    if value is None:
        raise ValidationError("path is required", code=Code.INVALID_PATH, pointer=pointer)
    problem = path_problem(value)
    if problem is not None:
        raise ValidationError(f"Invalid path: {problem}", code=Code.INVALID_PATH, pointer=pointer)
    return value


def ref_candidates(ref: str) -> list[str]:
    """Full names to try for a user's ref, most preferred first."""
    if ref.startswith("refs/"):
        return [ref]
    candidates = [f"refs/heads/{ref}", f"refs/tags/{ref}"]
    if ABBREV.fullmatch(ref):
        candidates.append(ref)
    return candidates


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeItem:
    entry: TreeEntry
    size: int | None  # blobs only


@dataclass(frozen=True)
class Tree:
    sha: str
    entries: list[TreeItem]


@dataclass(frozen=True)
class Blob:
    sha: str
    size: int
    data: bytes | None  # the bytes when small enough to hold, else None (stream it)
    git_dir: Path


@dataclass(frozen=True)
class LogPage:
    commits: list[Commit]
    offset: int
    limit: int
    has_more: bool


def _not_found_ref(ref: str, pointer: str = "/ref") -> NotFound:
    return NotFound(f"Ref {ref!r} not found", code=Code.REF_NOT_FOUND, pointer=pointer)


def _not_found_object(sha: str, what: str = "Object") -> NotFound:
    return NotFound(f"{what} {sha} not found", code=Code.OBJECT_NOT_FOUND)


def _file_not_found() -> NotFound:
    return NotFound("File not found", code=Code.FILE_NOT_FOUND, pointer="/path")


class RepoReader:
    """Reads of one repo's content; cheap to make, one per request."""

    def __init__(self, backend: Backend, repo: RepoRow):
        self.backend = backend
        self.repo = repo
        self.git_dir = backend.repos.prepare(repo.id, repo.default_branch)
        self.exists = (self.git_dir / "HEAD").is_file()

    async def _run(self, commands: Sequence[tuple[str, str]]) -> list[Answer]:
        try:
            return await pool(self.backend).run(self.git_dir, commands)
        except ReadFailed as exc:
            if not (self.git_dir / "HEAD").is_file():  # deleted under us
                raise NotFound("Repo not found", code=Code.REPO_NOT_FOUND) from exc
            raise InternalError(f"reading objects failed: {exc}") from exc

    # -- refs --------------------------------------------------------------------------------

    async def resolve_commit(self, ref: str, pointer: str = "/ref") -> str:
        check_ref(ref, pointer)
        if not self.exists:
            raise _not_found_ref(ref, pointer)
        candidates = ref_candidates(ref)
        answers = await self._run([("info", f"{c}^{{commit}}") for c in candidates])
        for info, _ in answers:
            if info is not None:
                return info.sha
        raise _not_found_ref(ref, pointer)

    async def _find_file(self, refs: Sequence[str], path: str) -> tuple[str, Blob]:
        """Resolve ``path`` at the first of ``refs`` that names a commit; refs are full names."""
        commands = []
        for name in refs:
            commands.append(("info", f"{name}^{{commit}}"))
            commands.append(("info", f"{name}^{{commit}}:{path}"))
        answers = await self._run(commands)
        for index, name in enumerate(refs):
            commit, target = answers[2 * index][0], answers[2 * index + 1][0]
            if commit is None:
                continue
            if target is None or target.type in ("commit", "tag"):  # missing, or a submodule
                raise _file_not_found()
            if target.type == "tree":
                raise ValidationError(
                    f"Path {path!r} is a directory", code=Code.PATH_IS_DIRECTORY, pointer="/path"
                )
            return name, await self._blob(target.sha, target.size)
        raise LookupError("no ref matched")

    async def _blob(self, sha: str, size: int) -> Blob:
        if size > INLINE_BLOB_MAX:
            return Blob(sha, size, None, self.git_dir)
        [(info, data)] = await self._run([("contents", sha)])
        if info is None or data is None:  # vanished between two round trips: only by a gc race
            raise _not_found_object(sha, "Blob")
        return Blob(sha, info.size, data, self.git_dir)

    # -- routes ------------------------------------------------------------------------------

    async def file(self, ref: str | None, path: str | None) -> Blob:
        name = ref or self.repo.default_branch
        check_ref(name)
        clean = check_path(path)
        if not self.exists:
            raise _not_found_ref(name)
        try:
            return (await self._find_file(ref_candidates(name), clean))[1]
        except LookupError:
            raise _not_found_ref(name) from None

    async def raw(self, ref_and_path: str) -> tuple[Blob, str]:
        """``raw/<ref>/<path>`` where the ref may contain ``/``: the longest existing ref wins."""
        parts = ref_and_path.split("/")
        if len(parts) < 2 or not parts[0]:
            raise ValidationError(
                "raw needs a ref and a path: raw/<ref>/<path>", code=Code.INVALID_PATH,
                pointer="/path",
            )
        splits = []
        for cut in range(len(parts) - 1, 0, -1):
            ref = "/".join(parts[:cut])
            if ref_problem(ref) is None:
                splits.append((ref, "/".join(parts[cut:])))
        if not splits:
            raise _not_found_ref(parts[0])
        if not self.exists:
            raise _not_found_ref(splits[-1][0])
        # One round trip: which candidate refs name a commit, longest first.
        names = [(ref, path, full) for ref, path in splits for full in ref_candidates(ref)]
        answers = await self._run([("info", f"{full}^{{commit}}") for _, _, full in names])
        for (_ref, path, full), (info, _) in zip(names, answers, strict=True):
            if info is None:
                continue
            clean = check_path(path)
            try:
                return (await self._find_file([full], clean))[1], clean
            except LookupError:  # the ref moved between the two round trips
                break
        raise _not_found_ref(splits[-1][0])

    async def blob(self, sha: str) -> Blob:
        sha = check_hash(sha)
        if not self.exists:
            raise _not_found_object(sha)
        [(info, _)] = await self._run([("info", sha)])
        if info is None:
            raise _not_found_object(sha)
        if info.type != "blob":
            raise NotFound(f"Object {sha} is a {info.type}, not a blob", code=Code.OBJECT_NOT_FOUND)
        return await self._blob(sha, info.size)

    async def _peeled(self, sha: str, kind: str) -> tuple[str, bytes]:
        """Contents of ``sha`` peeled to ``kind`` (a tag to its commit, a commit to its tree)."""
        if not self.exists:
            raise _not_found_object(sha)
        first, peeled = await self._run([("info", sha), ("info", f"{sha}^{{{kind}}}")])
        if first[0] is None:
            raise _not_found_object(sha)
        info = peeled[0]
        if info is None:
            raise NotFound(
                f"Object {sha} is a {first[0].type}, not a {kind}", code=Code.OBJECT_NOT_FOUND
            )
        if info.size > MAX_OBJECT_JSON:
            raise ValidationError(f"The {kind} {info.sha} is too large to show as JSON")
        [(again, data)] = await self._run([("contents", info.sha)])
        if again is None or data is None:
            raise _not_found_object(sha)
        return info.sha, data

    async def commit(self, sha: str) -> Commit:
        sha = check_hash(sha)
        return parse_commit(*await self._peeled(sha, "commit"))

    async def tree(self, sha: str) -> Tree:
        sha = check_hash(sha)
        tree_sha, data = await self._peeled(sha, "tree")
        entries = parse_tree(data)
        blobs = [e for e in entries if e.type == "blob"]
        sizes: dict[str, int] = {}
        if blobs:
            answers = await self._run([("info", e.sha) for e in blobs])
            sizes = {e.sha: info.size for e, (info, _) in zip(blobs, answers, strict=True) if info}
        items = [TreeItem(e, sizes.get(e.sha) if e.type == "blob" else None) for e in entries]
        return Tree(tree_sha, items)

    async def log(self, ref: str | None, limit: int, offset: int) -> LogPage:
        if not 1 <= limit <= LOG_MAX_LIMIT:
            raise ValidationError(f"limit must be between 1 and {LOG_MAX_LIMIT}", pointer="/limit")
        if offset < 0:
            raise ValidationError("offset must be 0 or more", pointer="/offset")
        start = await self.resolve_commit(ref or self.repo.default_branch)
        want = offset + limit + 1  # one more than the page tells whether there is a next page
        if offset > REV_LIST_OFFSET:
            raws = await self._rev_list_page(start, offset, limit + 1)
        else:
            raws = (await self._walk(start, want))[offset:]
        commits = [parse_commit(sha, raw) for sha, raw in raws[:limit]]
        return LogPage(commits, offset, limit, has_more=len(raws) > limit)

    async def _walk(self, start: str, want: int) -> list[tuple[str, bytes]]:
        """Commits reachable from ``start`` in ``git rev-list`` default order, up to ``want``.

        Git keeps a list ordered by committer date, newest first, and inserts each parent
        after the commits of equal date already queued; a heap keyed on (-date, insertion
        number) is the same order. Commits are fetched ahead along first-parent chains
        (``<sha>~1``, ``<sha>~2``, ... in the same round trip), so a linear stretch of
        history costs one round trip per ``PREFETCH`` commits rather than one per commit.
        """
        cache: dict[str, bytes] = {}
        await self._fetch_commits([start], cache, want)
        raw = cache.get(start)
        if raw is None:
            raise _not_found_object(start, "Commit")
        counter = itertools.count()
        heap: list[tuple[int, int, str, bytes]] = [(-commit_date(raw), next(counter), start, raw)]
        seen = {start}
        out: list[tuple[str, bytes]] = []
        while heap and len(out) < want:
            _, _, sha, raw = heapq.heappop(heap)
            out.append((sha, raw))
            if len(out) >= want:
                break
            parents = [p for p in commit_parents(raw) if p not in seen]
            if not parents:
                continue
            seen.update(parents)
            missing = [p for p in parents if p not in cache]
            if missing:
                await self._fetch_commits(missing, cache, want - len(out))
            for parent in parents:
                # Not found is a shallow boundary: git shows the commit without that parent.
                praw = cache.pop(parent, None)
                if praw is not None:
                    heapq.heappush(heap, (-commit_date(praw), next(counter), parent, praw))
        return out

    async def _fetch_commits(self, shas: Sequence[str], cache: dict[str, bytes], budget: int) -> None:
        """Read ``shas`` into ``cache``, and up to ``budget`` first-parent ancestors of the first."""
        ahead = max(0, min(PREFETCH, budget) - 1)
        commands = [("contents", sha) for sha in shas]
        commands += [("contents", f"{shas[0]}~{k}") for k in range(1, ahead + 1)]
        for info, raw in await self._run(commands):
            if info is not None and raw is not None and info.type == "commit":
                cache[info.sha] = raw

    async def _rev_list_page(self, start: str, skip: int, count: int) -> list[tuple[str, bytes]]:
        result = await asyncio.to_thread(
            self.backend.git.run, self.git_dir,
            ["rev-list", f"--skip={skip}", f"--max-count={count}", start, "--"], timeout=60,
        )
        shas = result.stdout.decode().split()
        if not shas:
            return []
        answers = await self._run([("contents", sha) for sha in shas])
        return [(sha, raw) for sha, (info, raw) in zip(shas, answers, strict=True) if info and raw]


async def blob_chunks(backend: Backend, blob: Blob, start: int, length: int) -> AsyncIterator[bytes]:
    """The bytes ``[start, start + length)`` of a blob: from memory, or streamed from git."""
    if blob.data is not None:
        yield blob.data[start:start + length]
        return
    async for chunk in stream_blob(backend.git, blob.git_dir, blob.sha, start, length):
        yield chunk
