"""Compare two commits: ``base...head``, each side ``ref`` or ``repo:ref`` (issue 13).

Either side may name another repo of the same namespace (a fork's parent, a sibling): the
caller must be able to read it, and a repo it cannot read answers exactly as a missing one.
git runs in the base side's repo and reads the other repo's objects through
``GIT_ALTERNATE_OBJECT_DIRECTORIES`` (server-owned paths), so nothing is fetched or copied.
Every value that reaches git is a resolved 40-hex object id.

The diff is from the merge base to the head (GitHub's three-dot compare); with no common
history it is from the base itself. Limits are explicit: at most ``MAX_FILES`` files, at
most ``MAX_COMMITS`` commits and ``MAX_PATCH_BYTES`` of patch, each with a truncation flag.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from artifactd.errors import NotFound, ValidationError
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.names import name_problem
from artifactd.services.reads import gitread
from artifactd.services.reads.content import RepoReader, check_ref
from artifactd.services.repos import repos
from artifactd.storage.gitobjects import Commit, parse_commit
from artifactd.storage.metadata import RepoRow

MAX_FILES = 300
MAX_COMMITS = 250
MAX_PATCH_BYTES = 4 << 20
MAX_RAW_BYTES = 16 << 20  # the --raw/--numstat listing of MAX_FILES files fits easily
MAX_SPEC = 1024
STATUS = {"A": "added", "D": "removed", "M": "modified", "R": "renamed", "C": "copied",
          "T": "changed", "U": "unmerged", "X": "unknown"}
_HEX = re.compile(r"[0-9a-f]{40}")

# Finds a repo of the caller's namespace by name, raising NotFound when it cannot read it.
RepoFinder = Callable[[str], RepoRow]


@dataclass(frozen=True)
class Side:
    repo: RepoRow
    ref: str
    sha: str


@dataclass(frozen=True)
class ChangedFile:
    path: str
    previous_path: str | None
    status: str
    additions: int
    deletions: int
    binary: bool


@dataclass(frozen=True)
class Comparison:
    base: Side
    head: Side
    merge_base: str | None
    ahead_by: int
    behind_by: int
    commits: list[Commit]
    files: list[ChangedFile]
    truncated: bool
    commits_truncated: bool
    git_dir: Path = field(repr=False)
    env: dict[str, str] = field(repr=False)

    @property
    def diff_from(self) -> str:
        return self.merge_base or self.base.sha


def split_spec(spec: str) -> tuple[str, str]:
    """``base...head`` into its sides (refs cannot contain ``..``, so the split is exact)."""
    if len(spec) > MAX_SPEC:
        raise ValidationError(f"The compare spec must be at most {MAX_SPEC} characters",
                              pointer="/basehead")
    base, sep, head = spec.partition("...")
    if not sep or not base or not head:
        raise ValidationError("Compare as 'base...head' (each side 'ref' or 'repo:ref')",
                              pointer="/basehead")
    return base, head


def finder_for(backend: Backend, account_id: str, namespace: str) -> RepoFinder:
    """Repos an API token of the account can read: every repo of its namespaces."""
    def find(name: str) -> RepoRow:
        repo = repos.get_repo(backend, account_id, namespace, name)
        limits.check_rate(backend, "git", repo.id)  # a read of that repo, like its own routes
        repos.require_ready(repo)
        return repo
    return find


async def resolve_side(
    backend: Backend, here: RepoRow, text: str, pointer: str, find: RepoFinder
) -> Side:
    repo = here
    ref = text
    if ":" in text:  # refs cannot contain ':' (git check-ref-format), so this names a repo
        name, _, ref = text.partition(":")
        if name_problem(name) is not None:
            raise ValidationError(f"Invalid repo name in {pointer[1:]}", pointer=pointer)
        if name != here.name:
            try:
                repo = find(name)
            except NotFound:
                raise NotFound(f"Repo {name!r} not found", pointer=pointer) from None
    check_ref(ref, pointer)
    sha = await RepoReader(backend, repo).resolve_commit(ref, pointer)
    return Side(repo, ref, sha)


async def compare(
    backend: Backend, here: RepoRow, spec: str, find: RepoFinder
) -> Comparison:
    base_text, head_text = split_spec(spec)
    base = await resolve_side(backend, here, base_text, "/base", find)
    head = await resolve_side(backend, here, head_text, "/head", find)
    git_dir = backend.repos.path(base.repo.id)
    others = [backend.repos.path(head.repo.id)] if head.repo.id != base.repo.id else []
    env = gitread.alternates_env(others)

    # Independent reads run side by side: the time of a compare is mostly process starts.
    found, counts, listed = await asyncio.gather(
        gitread.run(backend, git_dir, ["merge-base", "--end-of-options", base.sha, head.sha],
                    max_bytes=4096, env=env, ok_codes=(0, 1)),
        gitread.run(backend, git_dir, [
            "rev-list", "--left-right", "--count", "--end-of-options",
            f"{base.sha}...{head.sha}",
        ], max_bytes=4096, env=env),
        gitread.run(backend, git_dir, [
            "rev-list", "--reverse", "--topo-order", "--end-of-options", head.sha, f"^{base.sha}",
        ], max_bytes=41 * 100_000, env=env),
    )
    merge_base = found.data.decode().strip() or None
    if merge_base is not None and not _HEX.fullmatch(merge_base):
        merge_base = None
    behind_text, _, ahead_text = counts.data.decode().strip().partition("\t")
    behind_by, ahead_by = int(behind_text or 0), int(ahead_text or 0)

    (commits, commits_truncated), listing = await asyncio.gather(
        _commits(backend, git_dir, env, listed),
        gitread.run(backend, git_dir, [
            "diff", "--raw", "--numstat", "-z", "-M", "--no-ext-diff", "--no-textconv",
            "--end-of-options", merge_base or base.sha, head.sha,
        ], max_bytes=MAX_RAW_BYTES, env=env),
    )
    files, truncated = parse_raw_numstat(listing.data, MAX_FILES)
    return Comparison(base, head, merge_base, ahead_by, behind_by, commits, files,
                      truncated or listing.truncated, commits_truncated, git_dir, env)


async def _commits(
    backend: Backend, git_dir: Path, env: dict[str, str], listed: gitread.Output
) -> tuple[list[Commit], bool]:
    """The listed commits (in head, not in base; oldest first), at most MAX_COMMITS of them."""
    shas = listed.data.decode().split()
    truncated = listed.truncated or len(shas) > MAX_COMMITS
    shas = [sha for sha in shas[:MAX_COMMITS] if _HEX.fullmatch(sha)]
    if not shas:
        return [], truncated
    raw = await gitread.run(backend, git_dir, ["cat-file", "--batch"],
                            max_bytes=64 << 20, env=env, stdin="\n".join(shas).encode() + b"\n")
    return _parse_batch(raw.data), truncated or raw.truncated


def _parse_batch(data: bytes) -> list[Commit]:
    commits: list[Commit] = []
    pos = 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        header = data[pos:newline].split(b" ")
        if len(header) != 3:  # "<sha> missing"
            pos = newline + 1
            continue
        size = int(header[2])
        body = data[newline + 1:newline + 1 + size]
        if header[1] == b"commit":
            commits.append(parse_commit(header[0].decode(), body))
        pos = newline + 1 + size + 1
    return commits


def parse_raw_numstat(data: bytes, max_files: int) -> tuple[list[ChangedFile], bool]:
    """Parse ``git diff --raw --numstat -z``: the raw records, then as many numstat records."""
    tokens = data.split(b"\0")
    raws: list[tuple[str, str | None, str]] = []  # status, previous path, path
    index = 0
    while index < len(tokens) and tokens[index].startswith(b":"):
        status = tokens[index].split(b" ")[-1].decode()[:1]
        if status in ("R", "C"):
            raws.append((status, _text(tokens[index + 1]), _text(tokens[index + 2])))
            index += 3
        else:
            raws.append((status, None, _text(tokens[index + 1])))
            index += 2
    files: list[ChangedFile] = []
    for status, previous, path in raws:
        if index >= len(tokens):
            break
        added, _, rest = tokens[index].partition(b"\t")
        deleted, _, _ = rest.partition(b"\t")
        # A rename's numstat record is "a\td\t" then the two paths, each its own token.
        index += 3 if not rest.partition(b"\t")[2] else 1
        binary = added == b"-"
        files.append(ChangedFile(
            path=path, previous_path=previous, status=STATUS.get(status, "unknown"),
            additions=0 if binary else int(added or 0),
            deletions=0 if binary else int(deleted or 0), binary=binary,
        ))
    return files[:max_files], len(files) > max_files


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode("utf-8")


async def patch(backend: Backend, found: Comparison, max_bytes: int = MAX_PATCH_BYTES
                ) -> gitread.Output:
    """The unified diff of a comparison, cut at ``max_bytes`` (``truncated`` then set)."""
    return await gitread.run(backend, found.git_dir, [
        "diff", "--patch", "-M", "--no-ext-diff", "--no-textconv",
        "--end-of-options", found.diff_from, found.head.sha,
    ], max_bytes=max_bytes, env=found.env)
