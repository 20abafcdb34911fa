"""Branches and tags over REST (issue 13 item 2): list with targets, create, delete, move.

Every change is one ``update-ref --stdin`` with the old value, so it is a compare-and-swap
against pushes and other writes: a ref that moved in between makes the change a ``409`` and
changes nothing. Only ``refs/heads/`` and ``refs/tags/`` are managed here (notes have their
own routes; other refs are the server's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from artifactd.errors import Code, Conflict, NotFound, ValidationError
from artifactd.models import CreateBranchRequest, UpdateRefRequest
from artifactd.services.backend import Backend
from artifactd.services.names import check_branch, ref_problem
from artifactd.services.reads.content import check_hash
from artifactd.services.writes import write_access
from artifactd.services.writes.commits import check_expected, resolve_any
from artifactd.storage.gitwrite import ZERO, RefUpdateRefused

Kind = Literal["branch", "tag"]
PREFIXES: dict[str, str] = {"branches": "refs/heads/", "tags": "refs/tags/"}
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 1000


@dataclass(frozen=True)
class RefInfo:
    name: str  # short name
    ref: str  # full name
    kind: Kind
    target: str  # the commit (annotated tags: peeled)
    object_type: str  # commit, or tag for an annotated tag


@dataclass(frozen=True)
class RefPage:
    refs: list[RefInfo]
    cursor: str
    per_page: int


def _info(full: str, target: str, object_type: str) -> RefInfo:
    kind: Kind = "branch" if full.startswith("refs/heads/") else "tag"
    prefix = PREFIXES["branches" if kind == "branch" else "tags"]
    return RefInfo(full.removeprefix(prefix), full, kind, target, object_type)


def list_refs(backend: Backend, account_id: str, namespace: str, name: str, kind: str,
              per_page: int, cursor: str | None) -> RefPage:
    if kind not in ("all", *PREFIXES):
        raise ValidationError("kind must be 'branches', 'tags' or 'all'", pointer="/kind")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValidationError(f"per_page must be between 1 and {MAX_PER_PAGE}",
                              pointer="/per_page")
    after = ""
    if cursor:
        after = str(backend.cursors.decode(cursor, {"q": "refs", "kind": kind}).get("after", ""))
    repo = write_access.readable(backend, account_id, namespace, name)
    if not backend.repos.exists(repo.id):  # s3: known from SQL, whatever this node caches
        return RefPage([], "", per_page)
    writer = write_access.open_repo(backend, repo)
    prefixes = list(PREFIXES.values()) if kind == "all" else [PREFIXES[kind]]
    found = [row for row in writer.refs(prefixes) if row[0] > after]
    page = [_info(*row) for row in found[:per_page]]
    next_cursor = ""
    if len(found) > per_page:
        next_cursor = backend.cursors.encode({"q": "refs", "kind": kind, "after": page[-1].ref})
    return RefPage(page, next_cursor, per_page)


def full_ref(value: str, pointer: str = "/ref") -> str:
    """``refs/heads/x`` or ``refs/tags/x`` as given, or a short name as a branch."""
    problem = ref_problem(value)
    if problem is not None:
        raise ValidationError(f"Invalid ref: {problem}", pointer=pointer)
    if value.startswith("refs/"):
        if not value.startswith(tuple(PREFIXES.values())) or value.count("/") < 2:
            raise ValidationError("Only refs/heads/... and refs/tags/... can be changed",
                                  pointer=pointer)
        return value
    return f"refs/heads/{value}"


def _update(backend: Backend, target: write_access.WriteTarget, full: str, new: str, old: str,
            pointer: str) -> None:
    try:
        write_access.move_refs(backend, target, [(full, new, old)])
    except RefUpdateRefused:
        raise Conflict(f"{full} moved meanwhile; nothing changed", code=Code.HEAD_MOVED,
                       pointer=pointer) from None


def create_branch(backend: Backend, account_id: str, namespace: str, name: str,
                  request: CreateBranchRequest) -> RefInfo:
    check_branch(request.name, "name")
    problem = ref_problem(request.target)
    if problem is not None:
        raise ValidationError(f"Invalid target: {problem}", pointer="/target")
    full = f"refs/heads/{request.name}"
    with write_access.admit(backend, account_id, namespace, name) as target:
        if target.writer.resolve(full) is not None:
            raise Conflict(f"Branch {request.name!r} already exists", code=Code.REF_EXISTS,
                           pointer="/name")
        commit = resolve_any(target.writer, request.target)
        if commit is None:
            raise NotFound(f"Ref {request.target!r} not found", code=Code.REF_NOT_FOUND,
                           pointer="/target")
        try:
            write_access.move_refs(backend, target, [(full, commit, ZERO)])
        except RefUpdateRefused:
            raise Conflict(f"Branch {request.name!r} already exists", code=Code.REF_EXISTS,
                           pointer="/name") from None
        write_access.record_write(backend, target)
        return RefInfo(request.name, full, "branch", commit, "commit")


def delete_ref(backend: Backend, account_id: str, namespace: str, name: str, ref: str,
               expected: str | None) -> RefInfo:
    full = full_ref(ref)
    expected = check_expected(expected, "/expected")
    with write_access.admit(backend, account_id, namespace, name) as target:
        rows = [row for row in target.writer.refs([full]) if row[0] == full]
        if not rows:
            raise NotFound(f"Ref {ref!r} not found", code=Code.REF_NOT_FOUND, pointer="/ref")
        current = _raw_value(target, full)
        if full == f"refs/heads/{target.repo.default_branch}":
            raise ValidationError("The default branch cannot be deleted", pointer="/ref")
        if expected is not None and rows[0][1] != expected and current != expected:
            raise Conflict(f"{full} is at {rows[0][1]}, not at {expected}",
                           code=Code.HEAD_MOVED, pointer="/expected")
        _update(backend, target, full, ZERO, current, "/ref")
        write_access.record_write(backend, target)
        return _info(*rows[0])


def _raw_value(target: write_access.WriteTarget, full: str) -> str:
    return target.writer.raw_value(full) or ZERO


def move_ref(backend: Backend, account_id: str, namespace: str, name: str,
             request: UpdateRefRequest) -> RefInfo:
    """Point a branch or tag at ``target``; a branch moves only forward unless ``force``."""
    full = full_ref(request.ref)
    new = check_hash(request.target, "/target")
    expected = check_expected(request.expected, "/expected")
    with write_access.admit(backend, account_id, namespace, name) as target:
        writer = target.writer
        if writer.object_type(new) != "commit":
            raise NotFound(f"No commit {new} in this repo", code=Code.OBJECT_NOT_FOUND,
                           pointer="/target")
        current = _raw_value(target, full)
        if current == ZERO:
            raise NotFound(f"Ref {request.ref!r} not found", code=Code.REF_NOT_FOUND,
                           pointer="/ref")
        if expected is not None and current != expected:
            raise Conflict(f"{full} is at {current}, not at {expected}", code=Code.HEAD_MOVED,
                           pointer="/expected")
        if (full.startswith("refs/heads/") and not request.force
                and not writer.is_ancestor(current, new)):
            raise Conflict(f"{new} is not a descendant of {full} ({current}): give force",
                           code=Code.NOT_FAST_FORWARD, pointer="/target")
        _update(backend, target, full, new, current, "/ref")
        write_access.record_write(backend, target)
        return _info(full, new, "commit")
