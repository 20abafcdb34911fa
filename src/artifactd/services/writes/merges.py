"""Merge a branch, or a fork's branch, into a target branch (issue 13 item 4).

No working tree: ``git merge-tree --write-tree`` computes the merged tree (and, on conflict,
the conflicted paths; the tree it writes holds the files with git's conflict markers, which
are the hunks we report). A real merge then makes the commit (``commit-tree``: two parents
for ``merge``, one for ``squash``) or, for ``fast-forward``, moves the target to the head;
the target moves with one compare-and-swap ``update-ref``, so a push in between makes the
merge a ``409`` and loses nothing.

A head in another repo (``repo:ref``, a repo of the same namespace and account, such as an
agent's fork) is read through a temporary alternate for a dry run; a real merge first copies
the head's objects in (a local fetch of the one commit, no ref moved).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from artifactd.errors import Code, Conflict, NotFound, ValidationError
from artifactd.models import MergeRequest
from artifactd.services.backend import Backend
from artifactd.services.names import check_branch, check_name, ref_problem
from artifactd.services.writes import write_access
from artifactd.services.writes.commits import (
    DEFAULT_IDENTITY,
    check_expected,
    check_message,
    identity,
    resolve_any,
)
from artifactd.storage.gitwrite import GitWriter, RefUpdateRefused

STRATEGIES = ("merge", "squash", "fast-forward")
MAX_CONFLICT_FILES = 100
MAX_HUNK_BYTES = 64 << 10  # per conflicted file: larger hunks are cut (and say so)


@dataclass(frozen=True)
class ConflictedFile:
    path: str
    hunks: list[str]


@dataclass
class MergeOutcome:
    mergeable: bool
    target: str
    head: str
    merge_base: str | None
    fast_forward: bool
    sha: str | None = None
    tree: str | None = None
    conflicts: list[ConflictedFile] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def parse_head(value: str) -> tuple[str | None, str]:
    """``ref`` or ``repo:ref`` (``:`` cannot appear in a ref name)."""
    repo, colon, ref = value.partition(":")
    if not colon:
        repo, ref = "", value
    if colon:
        check_name(repo, "head", "repo name in head")
    problem = ref_problem(ref)
    if problem is not None:
        raise ValidationError(f"Invalid head: {problem}", pointer="/head")
    return (repo or None), ref


def conflict_hunks(text: bytes) -> list[str]:
    """The regions between git's ``<<<<<<<`` and ``>>>>>>>`` markers, markers included."""
    hunks: list[str] = []
    current: list[str] | None = None
    size = 0
    for line in text.decode("utf-8", "replace").splitlines(keepends=True):
        if current is None and line.startswith("<<<<<<< "):
            current = []
        if current is not None:
            size += len(line)
            if size <= MAX_HUNK_BYTES:
                current.append(line)
            if line.startswith(">>>>>>> "):
                hunks.append("".join(current))
                current = None
    return hunks


def _conflicts(writer: GitWriter, tree: str, paths: list[str]) -> list[ConflictedFile]:
    found = []
    listed = writer.list_tree(tree)
    for path in paths[:MAX_CONFLICT_FILES]:
        entry = listed.get(path)
        hunks = conflict_hunks(writer.show_blob(entry.sha)) if entry is not None else []
        found.append(ConflictedFile(path, hunks))
    return found


def merge(backend: Backend, account_id: str, namespace: str, name: str,
          request: MergeRequest) -> MergeOutcome:
    head_repo_name, head_ref = parse_head(request.head)
    if request.strategy not in STRATEGIES:
        raise ValidationError("strategy must be 'merge', 'squash' or 'fast-forward'",
                              pointer="/strategy")
    if request.target is not None:
        check_branch(request.target, "target")
    expected = check_expected(request.expected_head)
    message = check_message(request.message) if request.message is not None else None
    author = identity(request.author, "/author", DEFAULT_IDENTITY)
    with write_access.admit(backend, account_id, namespace, name,
                            write=not request.dry_run) as admitted:
        writer = admitted.writer
        target_name = request.target or admitted.repo.default_branch
        full = f"refs/heads/{target_name}"
        target_head = writer.resolve(full)
        if target_head is None:
            raise NotFound(f"Branch {target_name!r} not found", code=Code.REF_NOT_FOUND,
                           pointer="/target")
        if expected is not None and expected != target_head:
            raise Conflict(f"Branch {target_name!r} is at {target_head}, not at expected_head "
                           f"{expected}", code=Code.HEAD_MOVED, pointer="/expected_head")
        source = writer
        if head_repo_name is not None and head_repo_name != admitted.repo.name:
            # Same answer for a missing repo and one the caller cannot read.
            head_repo = write_access.readable(backend, account_id, namespace, head_repo_name)
            source = write_access.open_repo(backend, head_repo)
        head = resolve_any(source, head_ref)
        if head is None:
            raise NotFound(f"Ref {head_ref!r} not found", code=Code.REF_NOT_FOUND,
                           pointer="/head")
        # merge-tree writes trees and blobs (conflicted files too) and a fork's head is fetched:
        # all of it waits in the work area until the merge is known to succeed.
        writer.quarantine()
        if source is not writer:
            if request.dry_run:
                writer.borrow_objects(source.git_dir)
            else:
                writer.fetch_commit(source.git_dir, head)
        base = writer.merge_base(target_head, head)
        if base is None:
            raise Conflict("The head and the target have no common history",
                           code=Code.UNRELATED_HISTORIES, pointer="/head")
        can_ff = base == target_head
        outcome = MergeOutcome(True, target_name, head, base, can_ff)
        if base == head:  # already merged: nothing to do
            outcome.sha = None if request.dry_run else target_head
            outcome.tree = writer.tree_of(target_head)
            return outcome
        if request.strategy == "fast-forward":
            if not can_ff:
                if request.dry_run:
                    outcome.mergeable = False
                    return outcome
                raise Conflict(f"{target_name!r} cannot be fast-forwarded to {head}",
                               code=Code.NOT_FAST_FORWARD, pointer="/strategy")
            outcome.tree = writer.tree_of(head)
            if not request.dry_run:
                write_access.adopt_objects(admitted)
                _move(backend, admitted, full, head, target_head)
                outcome.sha = head
                write_access.record_write(backend, admitted)
            return outcome
        clean, tree, paths, messages = writer.merge_tree(target_head, head)
        outcome.messages = messages
        if not clean:
            outcome.mergeable = False
            outcome.conflicts = _conflicts(writer, tree, paths)
            if request.dry_run:
                return outcome
            raise Conflict(
                f"Merge conflict in {len(paths)} file(s): {', '.join(paths[:10])}",
                code=Code.MERGE_CONFLICT, pointer="/head",
                details={"conflicts": [{"path": c.path, "hunks": c.hunks}
                                       for c in outcome.conflicts]},
            )
        outcome.tree = tree
        if request.dry_run:
            return outcome
        write_access.adopt_objects(admitted)
        parents = [target_head, head] if request.strategy == "merge" else [target_head]
        text = message or (f"Merge {request.head} into {target_name}\n"
                           if request.strategy == "merge" else f"Squash {request.head} into "
                           f"{target_name}\n")
        outcome.sha = writer.commit_tree(tree, parents, text, author, author)
        _move(backend, admitted, full, outcome.sha, target_head)
        write_access.record_write(backend, admitted)
        return outcome


def _move(backend: Backend, target: write_access.WriteTarget, full: str, new: str,
          old: str) -> None:
    try:
        write_access.move_refs(backend, target, [(full, new, old)])
    except RefUpdateRefused:
        raise Conflict(f"{full} moved while merging; retry", code=Code.HEAD_MOVED,
                       pointer="/target") from None
