"""Commits from files (issue 13 item 1): put, delete and move files on a branch, atomically.

A commit's objects (the blobs, only the directories the changes touch, the commit) are
computed in-process and written loose, or as one pack when there are many (git's rule;
``storage/objwrite.py``), with no process started; then the branch moves only if it is still where it was read
(compare-and-swap under git's own ref lock file, the lock a push takes). Nothing moves unless
every change is valid: a racing push or commit makes the loser a ``409`` and loses nothing of
the winner's. Contents of a JSON body are already in memory and written from there; an
NDJSON body's are spooled to files of the work area as they arrive and read from there.
A commit with an explicit date is made by ``git commit-tree`` (git's date parser).

Rules checked before anything is written (each a 4xx with ``source.pointer``):

- paths are relative, ``/``-separated, without empty, ``.``, ``..`` or ``.git`` components,
  NUL or control characters, at most 4096 bytes;
- ``content`` is valid for its ``encoding``; ``mode`` is a file mode (no submodules);
- no path is both a file and a directory after the changes; a path changes at most once;
- a delete or move names a file that exists; at most ``MAX_CHANGES`` changes;
- ``expected_head``, when given, is the branch's current commit.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path

from artifactd.errors import Code, Conflict, NotFound, ValidationError
from artifactd.models import CommitRequest, FileChange, Person
from artifactd.services.backend import Backend
from artifactd.services.names import check_branch, ref_problem
from artifactd.services.reads.content import HASH, check_hash, path_problem, ref_candidates
from artifactd.services.writes import write_access
from artifactd.storage.gitwrite import ZERO, GitWriter, Identity, IndexEntry, RefUpdateRefused
from artifactd.storage.objwrite import TREE_MODE, ObjectWriter, git_ident

MAX_CHANGES = 1000
MAX_MESSAGE_BYTES = 1 << 20
MODES = ("100644", "100755", "120000")
DEFAULT_IDENTITY = Identity("artifactd", "artifactd@localhost")
_BAD_IDENTITY = re.compile(r"[<>\x00-\x1f\x7f]")
_BAD_DATE = re.compile(r"[^0-9A-Za-z:+\-. ]")


@dataclass
class Put:
    """Content of a ``put``: spooled to a server-owned file (a streamed body: never held whole
    in memory), or the bytes of a JSON body, which is in memory already."""

    file: Path | None
    size: int
    sha: str = ""
    data: bytes | None = None


@dataclass
class Change:
    op: str
    path: str
    pointer: str  # "/changes/<i>"
    mode: str = "100644"
    source: str | None = None  # move: the file moved
    put: Put | None = None


@dataclass
class CommitSpec:
    branch: str
    message: str
    author: Identity
    committer: Identity
    expected_head: str | None
    base: str | None
    changes: list[Change] = field(default_factory=list)


@dataclass(frozen=True)
class CommitResult:
    sha: str
    tree: str
    branch: str
    parents: list[str]


# -- validation ------------------------------------------------------------------------------


def check_repo_path(value: str | None, pointer: str) -> str:
    if value is None:
        raise ValidationError("path is required", code=Code.INVALID_PATH, pointer=pointer)
    problem = path_problem(value)
    if problem is None and any(part.lower() == ".git" for part in value.split("/")):
        problem = "must not contain a '.git' component"
    if problem is None and value != value.strip("\ufeff"):
        problem = "must not start or end with a byte-order mark"
    if problem is not None:
        raise ValidationError(f"Invalid path: {problem}", code=Code.INVALID_PATH, pointer=pointer)
    return value


def identity(person: Person | None, pointer: str, fallback: Identity) -> Identity:
    if person is None:
        return fallback
    for key, value in (("name", person.name), ("email", person.email)):
        if not value.strip() or len(value) > 256 or _BAD_IDENTITY.search(value):
            raise ValidationError(
                f"Invalid {key}: 1 to 256 characters, no '<', '>' or control characters",
                pointer=f"{pointer}/{key}",
            )
    if person.date is not None and (not person.date or len(person.date) > 64
                                    or _BAD_DATE.search(person.date)):
        raise ValidationError("Invalid date: use ISO 8601 or '<unix seconds> <+hhmm>'",
                              pointer=f"{pointer}/date")
    return Identity(person.name, person.email, person.date)


def check_message(message: str, pointer: str = "/message") -> str:
    if not message.strip():
        raise ValidationError("message must not be empty", pointer=pointer)
    if "\0" in message or len(message.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ValidationError(f"message must have no NUL and at most {MAX_MESSAGE_BYTES} bytes",
                              pointer=pointer)
    return message if message.endswith("\n") else message + "\n"


def check_expected(value: str | None, pointer: str = "/expected_head") -> str | None:
    return None if value is None else check_hash(value, pointer)


def decode_content(change: FileChange, pointer: str) -> bytes:
    if change.content is None:
        raise ValidationError("content is required for put", pointer=f"{pointer}/content")
    if change.encoding == "base64":
        try:
            return base64.b64decode(change.content, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("content is not valid base64", code=Code.INVALID_CONTENT,
                                  pointer=f"{pointer}/content") from None
    if change.encoding != "utf-8":
        raise ValidationError("encoding must be 'utf-8' or 'base64'",
                              pointer=f"{pointer}/encoding")
    try:
        return change.content.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("content is not valid UTF-8 text", code=Code.INVALID_CONTENT,
                              pointer=f"{pointer}/content") from None


def check_change(change: FileChange, index: int) -> Change:
    """A change's fields, without its content (``spool`` writes that)."""
    pointer = f"/changes/{index}"
    path = check_repo_path(change.path, f"{pointer}/path")
    if change.op == "put":
        mode = change.mode or "100644"
        if mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}",
                                  pointer=f"{pointer}/mode")
        if change.from_ is not None:
            raise ValidationError("from is only for move", pointer=f"{pointer}/from")
        return Change("put", path, pointer, mode=mode)
    if change.content is not None or change.mode is not None:
        field_name = "content" if change.content is not None else "mode"
        raise ValidationError(f"{field_name} is only for put", pointer=f"{pointer}/{field_name}")
    if change.op == "delete":
        if change.from_ is not None:
            raise ValidationError("from is only for move", pointer=f"{pointer}/from")
        return Change("delete", path, pointer)
    if change.op == "move":
        source = check_repo_path(change.from_, f"{pointer}/from")
        return Change("move", path, pointer, source=source)
    raise ValidationError("op must be 'put', 'delete' or 'move'", code=Code.INVALID_CHANGE,
                          pointer=f"{pointer}/op")


def spec_header(request: CommitRequest) -> CommitSpec:
    check_branch(request.branch, "branch")
    if request.base is not None:
        problem = ref_problem(request.base)
        if problem is not None:
            raise ValidationError(f"Invalid base: {problem}", pointer="/base")
    author = identity(request.author, "/author", DEFAULT_IDENTITY)
    committer = identity(request.committer, "/committer", author)
    return CommitSpec(
        branch=request.branch, message=check_message(request.message), author=author,
        committer=committer, expected_head=check_expected(request.expected_head),
        base=request.base,
    )


def check_count(count: int) -> None:
    if count > MAX_CHANGES:
        raise ValidationError(f"At most {MAX_CHANGES} changes in one commit",
                              code=Code.TOO_MANY_CHANGES, pointer="/changes")


def spool(change: Change, data: bytes, work: Path) -> None:
    """Write a put's content to a file of the work area (hash-object reads it from there)."""
    if change.mode == "120000" and not data:
        raise ValidationError("A symlink needs a target (content)", code=Code.INVALID_CONTENT,
                              pointer=f"{change.pointer}/content")
    target = work / f"blob-{change.pointer.rsplit('/', 1)[1]}"
    target.write_bytes(data)
    change.put = Put(target, len(data))


def keep(change: Change, data: bytes) -> None:
    """A put's content kept in memory (a JSON body's, which is there already)."""
    if change.mode == "120000" and not data:
        raise ValidationError("A symlink needs a target (content)", code=Code.INVALID_CONTENT,
                              pointer=f"{change.pointer}/content")
    change.put = Put(None, len(data), data=data)


# -- the commit ------------------------------------------------------------------------------


def _check_shape(changes: list[Change]) -> None:
    """Refuse a path changed twice, and a file and a directory at one path, in the changes."""
    touched: dict[str, str] = {}
    for change in changes:
        for path in (change.path, change.source) if change.source else (change.path,):
            if path in touched:
                raise ValidationError(f"Path {path!r} is changed twice ({touched[path]})",
                                      code=Code.INVALID_CHANGE, pointer=f"{change.pointer}/path")
            touched[path] = change.pointer
    written = {c.path: c.pointer for c in changes if c.op != "delete"}
    for path, pointer in written.items():
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in written:
                raise ValidationError(
                    f"{prefix!r} would be both a file and a directory",
                    code=Code.INVALID_CHANGE, pointer=f"{pointer}/path",
                )


def _resolve(objects: ObjectWriter, parent: str | None,
             changes: list[Change]) -> dict[str, IndexEntry | None]:
    """What ``changes`` do to the parent's tree, path by path (``None``: the file goes), checked
    against it with lookups down the changed paths (never a listing of the whole tree):

    - a delete or move names a file of the branch;
    - no put or move target is a directory of the branch that keeps a file;
    - no directory above a put or move target is a file of the branch that stays.

    A path changes at most once and written paths do not nest (``_check_shape``), so the
    parent's tree alone answers each question. A put's entry has no blob id yet.
    """
    tree = objects.root(parent)
    removed = {c.source if c.op == "move" else c.path for c in changes if c.op != "put"}
    result: dict[str, IndexEntry | None] = {}
    for change in changes:
        if change.op == "put":
            result[change.path] = IndexEntry(change.mode, "")
            continue
        source = change.source if change.op == "move" else change.path
        assert source is not None
        found = objects.entry(tree, source)
        if found is None or found.mode == TREE_MODE:
            where = "from" if change.op == "move" else "path"
            raise NotFound(f"No file {source!r} on the branch", code=Code.FILE_NOT_FOUND,
                           pointer=f"{change.pointer}/{where}")
        result[source] = None
        if change.op == "move":
            result[change.path] = found
    for change in changes:
        if change.op == "delete":
            continue
        found = objects.entry(tree, change.path)
        if found is not None and found.mode == TREE_MODE and tree is not None and any(
                path not in removed for path in objects.files_under(tree, change.path)):
            raise ValidationError(f"{change.path!r} is a directory on the branch",
                                  code=Code.INVALID_CHANGE, pointer=f"{change.pointer}/path")
        parts = change.path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            above = objects.entry(tree, prefix)
            if above is None:
                break  # nothing deeper exists either
            if above.mode != TREE_MODE and prefix not in removed:
                raise ValidationError(f"{prefix!r} is a file on the branch",
                                      code=Code.INVALID_CHANGE, pointer=f"{change.pointer}/path")
    return result


def resolve_any(writer: GitWriter, ref: str) -> str | None:
    """A branch, tag or commit id of the repo, as ``content`` reads it."""
    for candidate in ref_candidates(ref):
        if HASH.fullmatch(candidate) and writer.object_type(candidate) == "commit":
            return candidate
        if not HASH.fullmatch(candidate):
            found = writer.resolve(candidate)
            if found is not None:
                return found
    return None


def _start(writer: GitWriter, objects: ObjectWriter,
           spec: CommitSpec) -> tuple[str, str | None, str | None]:
    """(full branch ref, its current commit, the parent: that commit or a new branch's base)."""
    full = f"refs/heads/{spec.branch}"
    head = objects.resolve(full)
    if spec.expected_head is not None and head != spec.expected_head:
        raise Conflict(
            f"Branch {spec.branch!r} is at {head or 'nothing (it does not exist)'}, "
            f"not at expected_head {spec.expected_head}",
            code=Code.HEAD_MOVED, pointer="/expected_head",
        )
    if head is not None or spec.base is None:
        if head is None and writer.refs(["refs/heads/"]):
            raise NotFound(f"Branch {spec.branch!r} not found: give 'base' to start it",
                           code=Code.REF_NOT_FOUND, pointer="/branch")
        return full, head, head
    base = resolve_any(writer, spec.base)
    if base is None:
        raise NotFound(f"Ref {spec.base!r} not found", code=Code.REF_NOT_FOUND, pointer="/base")
    return full, None, base


def commit(backend: Backend, target: write_access.WriteTarget, spec: CommitSpec) -> CommitResult:
    """Make the commit of a validated ``spec`` whose contents are kept or spooled."""
    _check_shape(spec.changes)
    writer = target.writer
    objects = write_access.object_writer(target)
    full, old, parent = _start(writer, objects, spec)
    puts = {c.path: c.put for c in spec.changes if c.put is not None}
    write_access.check_room(backend, target.repo, sum(p.size for p in puts.values()))
    # Every change is checked against the branch before a blob is written, so a refused
    # commit leaves no object behind.
    changed = _resolve(objects, parent, spec.changes)
    for path, put in puts.items():
        if put.data is not None:
            put.sha = objects.blob(put.data)
        else:
            assert put.file is not None
            put.sha = objects.blob_from_file(put.file)
        entry = changed[path]
        assert entry is not None
        changed[path] = IndexEntry(entry.mode, put.sha)
    tree = objects.tree(parent, changed)
    parents = [parent] if parent else []
    sha, by_git = _commit_object(writer, objects, tree, parents, spec)
    try:
        if target.remote:
            # The writer's one pack holds every new object unless git wrote some (a dated
            # commit) or the parent is not the branch's head (a new branch from ``base``,
            # which may name a commit no ref reaches): then ``move_refs`` packs them.
            complete = not by_git and (old is not None or parent is None)
            write_access.move_refs(backend, target, [(full, sha, old or ZERO)],
                                   complete=complete)
        else:
            objects.move_ref(full, sha, old)
    except RefUpdateRefused:
        raise Conflict(f"Branch {spec.branch!r} moved while the commit was made; retry",
                       code=Code.HEAD_MOVED, pointer="/branch") from None
    write_access.record_write(backend, target, objects.added_bytes(by_git))
    return CommitResult(sha, tree, spec.branch, parents)


def _commit_object(writer: GitWriter, objects: ObjectWriter, tree: str, parents: list[str],
                   spec: CommitSpec) -> tuple[str, tuple[str, ...]]:
    """The commit, and the objects git wrote (not counted by ``objects``)."""
    author = git_ident(spec.author.name, spec.author.email)
    committer = git_ident(spec.committer.name, spec.committer.email)
    if spec.author.date or spec.committer.date or author is None or committer is None:
        objects.flush()  # git reads the tree from the repo
        sha = writer.commit_tree(tree, parents, spec.message, spec.author, spec.committer)
        return sha, (sha,)
    sha = objects.commit(tree, parents, spec.message, author, committer)
    objects.flush()
    return sha, ()


def commit_request(backend: Backend, account_id: str, namespace: str, name: str,
                   request: CommitRequest) -> CommitResult:
    """``POST .../commits`` with a JSON body (contents inline)."""
    spec = spec_header(request)
    check_count(len(request.changes))
    if not request.changes:
        raise ValidationError("changes must not be empty", code=Code.INVALID_CHANGE,
                              pointer="/changes")
    spec.changes = [check_change(change, i) for i, change in enumerate(request.changes)]
    contents = [decode_content(raw, c.pointer) if c.op == "put" else b""
                for raw, c in zip(request.changes, spec.changes, strict=True)]
    for change, data in zip(spec.changes, contents, strict=True):
        if change.op == "put":
            keep(change, data)
    with write_access.admit(backend, account_id, namespace, name) as target:
        return commit(backend, target, spec)
