"""The dashboard's repo search: names that start with the text, in name order, paged by a
signed cursor. A range of the name index, so a search costs the same in a namespace of ten
repos or of a million (the REST list's ``search`` is a substring match and reads them all)."""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.errors import Code, ValidationError
from artifactd.services.backend import Backend
from artifactd.storage.metadata import RepoRow
from artifactd.storage.reposearch import repos_by_prefix

MAX_PREFIX = 64  # a repo name is at most 64 characters


@dataclass(frozen=True)
class SearchPage:
    repos: list[RepoRow]
    cursor: str | None


def search_repos(backend: Backend, account_id: str, namespace: str, prefix: str, *,
                 limit: int, cursor: str | None, direction: str = "asc") -> SearchPage:
    if len(prefix) > MAX_PREFIX:
        raise ValidationError(f"search must be at most {MAX_PREFIX} characters", pointer="/search")
    if direction not in ("asc", "desc"):
        raise ValidationError("direction must be 'asc' or 'desc'", pointer="/direction")
    key = {"p": prefix, "d": direction}
    after = None
    if cursor:
        last = backend.cursors.decode(cursor, key).get("n")
        if not isinstance(last, str):
            raise ValidationError("Invalid cursor", code=Code.INVALID_CURSOR, pointer="/cursor")
        after = last
    rows = repos_by_prefix(backend.meta.engine, account_id, namespace, prefix,
                           descending=direction == "desc", limit=limit + 1, after=after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = backend.cursors.encode({**key, "n": rows[-1].name})
    return SearchPage(rows, next_cursor)
