"""Reads the dashboard needs beyond the content routes: a repo's branches and tags, and the
patch of one commit. Both run C git through the one runner, with fixed argv: the only user
value (a commit id) is checked as 40 hex digits before it is passed, after ``--end-of-options``.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.services.backend import Backend
from artifactd.services.reads.content import check_hash
from artifactd.storage.metadata import RepoRow

MAX_REFS = 500  # branches and tags listed at most (a page, not a scan of a huge ref set)
MAX_DIFF_BYTES = 2 << 20  # a patch is cut here and the page says so
GIT_TIMEOUT = 30


@dataclass(frozen=True)
class Ref:
    name: str  # short name: ``main``, ``v1.0``
    kind: str  # ``branch`` or ``tag``
    sha: str


@dataclass(frozen=True)
class Patch:
    text: str
    truncated: bool


def list_refs(backend: Backend, repo: RepoRow) -> list[Ref]:
    """Branches, then tags, by name; at most ``MAX_REFS`` of them."""
    if not backend.repos.exists(repo.id):
        return []
    result = backend.git.run(
        backend.repos.prepare(repo.id, repo.default_branch),
        ["for-each-ref", f"--count={MAX_REFS}", "--format=%(objectname) %(refname)",
         "refs/heads", "refs/tags"],
        timeout=GIT_TIMEOUT,
    )
    refs = []
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        sha, _, name = line.partition(" ")
        for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
            if name.startswith(prefix):
                refs.append(Ref(name[len(prefix):], kind, sha))
    return refs


def commit_patch(backend: Backend, repo: RepoRow, sha: str) -> Patch:
    """The commit's changes against its first parent (or the empty tree for a root commit)."""
    sha = check_hash(sha)
    if not backend.repos.exists(repo.id):
        return Patch("", False)
    result = backend.git.run(
        backend.repos.prepare(repo.id, repo.default_branch),
        ["diff-tree", "-p", "--root", "-M", "--no-color", "--no-ext-diff", "--no-textconv",
         "--diff-merges=first-parent", "--no-commit-id", "--end-of-options", sha],
        timeout=GIT_TIMEOUT,
    )
    data = result.stdout
    truncated = len(data) > MAX_DIFF_BYTES
    return Patch(data[:MAX_DIFF_BYTES].decode("utf-8", errors="replace"), truncated)


FORK_SCAN = 1000  # repos looked at, at most, to find a repo's forks


@dataclass(frozen=True)
class Forks:
    children: list[RepoRow]
    complete: bool  # False: more repos were created after the parent than were looked at


def fork_children(backend: Backend, parent: RepoRow, scan: int = FORK_SCAN) -> Forks:
    """The parent's forks. A fork lives in its parent's namespace and is created after it, so
    one keyset page of the namespace in creation order, starting at the parent, holds them
    (bounded by ``scan``: a namespace of a million repos is never walked)."""
    rows = backend.meta.list_repos(
        parent.account_id, parent.namespace, sort="created_at", descending=False,
        limit=scan + 1, after=(parent.created_us, parent.id), search=None,
    )
    source = f"fork:{parent.namespace}/{parent.name}"
    children = [row for row in rows[:scan] if row.source == source]
    return Forks(children, complete=len(rows) <= scan)
