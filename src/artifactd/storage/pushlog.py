"""The commits a ref update brought, read in process through libgit2 (pygit2).

A push's ``pushed`` event lists the commits it brought. Reading them with ``git rev-list
--count`` and ``git log`` cost every push two processes; a libgit2 revision walk over the
same range costs a repository open and the commits' parsing, with the same answer: for an
update ``old..new``; for a new ref, what ``new`` reaches and no other ref under ``refs/``
does (the ``--not --exclude=<ref> --glob=refs/*`` of the git commands it replaces).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pygit2
from pygit2.enums import SortMode

from artifactd.storage import objectreader

ZERO_IDS = ("0" * 40, "0" * 64)


@dataclass(frozen=True)
class PushedCommit:
    sha: str
    parents: list[str]
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    commit_time: int
    message: str


def _text(raw: bytes) -> str:
    return raw.decode(errors="replace")


def brought(git_dir: Path, old: str, new: str, ref: str, limit: int
            ) -> tuple[list[PushedCommit], int]:
    """Up to ``limit`` of the commits, newest first (as ``git log``), and how many there are.

    An unreadable repository or range answers ``([], 0)``, as the failed git commands did:
    the event still says which ref moved where."""
    objectreader.configure()
    try:
        repo = pygit2.Repository(str(git_dir), objectreader.OPEN_FLAGS)
    except (pygit2.GitError, KeyError, ValueError, OSError):
        return [], 0
    try:
        walker = repo.walk(pygit2.Oid(hex=new), SortMode.NONE)  # git log's default order
        if old in ZERO_IDS:
            for name in repo.references:
                if name == ref or not name.startswith("refs/"):
                    continue
                target = repo.references[name].resolve().target
                if isinstance(target, pygit2.Oid):
                    try:
                        walker.hide(target)
                    except (pygit2.GitError, KeyError, ValueError):
                        continue  # a ref to a non-commit (a tag of a tree, a blob) hides nothing
        else:
            walker.hide(pygit2.Oid(hex=old))
        listed: list[PushedCommit] = []
        total = 0
        for commit in walker:
            total += 1
            if len(listed) < limit:
                author, committer = commit.author, commit.committer
                listed.append(PushedCommit(
                    sha=str(commit.id), parents=[str(p) for p in commit.parent_ids],
                    author_name=_text(author.raw_name), author_email=_text(author.raw_email),
                    committer_name=_text(committer.raw_name),
                    committer_email=_text(committer.raw_email),
                    commit_time=commit.commit_time, message=_text(commit.raw_message),
                ))
        return listed, total
    except (pygit2.GitError, KeyError, ValueError, OSError):
        return [], 0
    finally:
        repo.free()  # its pack descriptors now, not when the collector gets to it
