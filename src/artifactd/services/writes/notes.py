"""Git notes over REST (issue 13 item 5, the notes half): read, write and remove the note of a
commit on ``refs/notes/commits`` or a named notes ref.

Written with plumbing, as ``git notes`` would: the note is a blob named by the commit's id in
the notes ref's tree (any fanout is read; writes put the note at the top level, which git
reads too), committed on the notes ref with one compare-and-swap ``update-ref``. The notes
are plain git: ``git fetch origin refs/notes/*:refs/notes/*`` and ``git log --notes`` see them.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.errors import Code, Conflict, NotFound, ValidationError
from artifactd.models import NoteRequest
from artifactd.services.backend import Backend
from artifactd.services.names import ref_problem
from artifactd.services.reads.content import check_hash
from artifactd.services.writes import write_access
from artifactd.services.writes.commits import DEFAULT_IDENTITY, check_expected, identity
from artifactd.storage.gitwrite import ZERO, GitWriter, IndexEntry, RefUpdateRefused

MAX_NOTE_BYTES = 1 << 20


@dataclass(frozen=True)
class Note:
    commit: str
    notes_ref: str
    message: str
    note_sha: str
    notes_commit: str


def notes_ref(value: str) -> str:
    """``commits`` -> ``refs/notes/commits``; ``refs/notes/x`` as given; ``x`` -> under it."""
    full = value if value.startswith("refs/notes/") else f"refs/notes/{value}"
    problem = ("must be a name under refs/notes/"
               if value.startswith("refs/") and not value.startswith("refs/notes/")
               else ref_problem(full))
    if problem is not None or full == "refs/notes/":
        raise ValidationError(f"Invalid notes_ref: {problem or 'must not be empty'}",
                              pointer="/notes_ref")
    return full


def _find(writer: GitWriter, notes_commit: str | None, commit: str) -> tuple[str, str] | None:
    """(path in the notes tree, note blob) of ``commit``'s note."""
    if notes_commit is None:
        return None
    for path, entry in writer.list_tree(writer.tree_of(notes_commit)).items():
        if path.replace("/", "") == commit:
            return path, entry.sha
    return None


def _commit(writer: GitWriter, commit: str) -> str:
    sha = check_hash(commit, "/commit")
    if writer.object_type(sha) != "commit":
        raise NotFound(f"No commit {sha} in this repo", code=Code.OBJECT_NOT_FOUND,
                       pointer="/commit")
    return sha


def read_note(backend: Backend, account_id: str, namespace: str, name: str, commit: str,
              ref: str) -> Note:
    full = notes_ref(ref)
    sha = check_hash(commit, "/commit")
    repo = write_access.readable(backend, account_id, namespace, name)
    writer = write_access.open_repo(backend, repo)
    _commit(writer, sha)
    notes_commit = writer.resolve(full)
    found = _find(writer, notes_commit, sha)
    if found is None or notes_commit is None:
        raise NotFound(f"Commit {sha} has no note on {full}", code=Code.NOTE_NOT_FOUND)
    text = writer.show_blob(found[1]).decode("utf-8", "replace")
    return Note(sha, full, text, found[1], notes_commit)


def write_note(backend: Backend, account_id: str, namespace: str, name: str, commit: str,
               request: NoteRequest) -> Note:
    full = notes_ref(request.notes_ref)
    sha = check_hash(commit, "/commit")
    expected = check_expected(request.expected, "/expected")
    data = request.message.encode("utf-8", "surrogatepass")
    if not request.message.strip() or len(data) > MAX_NOTE_BYTES or b"\0" in data:
        raise ValidationError(f"message must be 1 to {MAX_NOTE_BYTES} bytes of text",
                              pointer="/message")
    if not request.message.endswith("\n"):
        data += b"\n"
    who = identity(request.author, "/author", DEFAULT_IDENTITY)
    with write_access.admit(backend, account_id, namespace, name) as target:
        writer = target.writer
        _commit(writer, sha)
        write_access.check_room(backend, target.repo, len(data))
        old = writer.resolve(full)
        if expected is not None and old != expected:
            raise Conflict(f"{full} is at {old or 'nothing'}, not at {expected}",
                           code=Code.HEAD_MOVED, pointer="/expected")
        found = _find(writer, old, sha)
        blob = writer.hash_bytes(data)
        tree = writer.write_tree(writer.tree_of(old) if old else None,
                                 [found[0]] if found else [], [(sha, IndexEntry("100644", blob))])
        notes_commit = writer.commit_tree(tree, [old] if old else [],
                                          "Notes added by artifactd\n", who, who)
        _move(backend, target, full, notes_commit, old or ZERO)
        write_access.record_write(backend, target)
        return Note(sha, full, data.decode("utf-8", "replace"), blob, notes_commit)


def delete_note(backend: Backend, account_id: str, namespace: str, name: str, commit: str,
                ref: str) -> Note:
    full = notes_ref(ref)
    sha = check_hash(commit, "/commit")
    with write_access.admit(backend, account_id, namespace, name) as target:
        writer = target.writer
        old = writer.resolve(full)
        found = _find(writer, old, sha)
        if found is None or old is None:
            raise NotFound(f"Commit {sha} has no note on {full}", code=Code.NOTE_NOT_FOUND)
        text = writer.show_blob(found[1]).decode("utf-8", "replace")
        tree = writer.write_tree(writer.tree_of(old), [found[0]], [])
        notes_commit = writer.commit_tree(tree, [old], "Notes removed by artifactd\n",
                                          DEFAULT_IDENTITY, DEFAULT_IDENTITY)
        _move(backend, target, full, notes_commit, old)
        write_access.record_write(backend, target)
        return Note(sha, full, text, found[1], notes_commit)


def _move(backend: Backend, target: write_access.WriteTarget, full: str, new: str,
          old: str) -> None:
    try:
        write_access.move_refs(backend, target, [(full, new, old)])
    except RefUpdateRefused:
        raise Conflict(f"{full} moved meanwhile; retry", code=Code.HEAD_MOVED,
                       pointer="/notes_ref") from None
