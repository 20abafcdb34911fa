"""Repos of a namespace whose name starts with a prefix, in name order, from the unique
``(account_id, namespace, name)`` index: a range of it, never a scan of the namespace."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from artifactd.storage.metadata import _REPO_COLUMNS, RepoRow, _repo
from artifactd.storage.schema import repos

# Every character a repo name may hold sorts below this one (names are [A-Za-z0-9._-]).
_ABOVE_NAMES = "\x7f"


def repos_by_prefix(engine: Engine, account_id: str, namespace: str, prefix: str, *,
                    descending: bool, limit: int, after: str | None) -> list[RepoRow]:
    name = repos.c.name
    query = select(*_REPO_COLUMNS).where(
        repos.c.account_id == account_id, repos.c.namespace == namespace,
        name >= prefix, name < prefix + _ABOVE_NAMES,
        # Exact whatever the database's collation does with the range above.
        func.substr(name, 1, len(prefix)) == prefix,
    )
    if after is not None:
        query = query.where(name < after if descending else name > after)
    query = query.order_by(name.desc() if descending else name.asc())
    with engine.begin() as conn:
        return [_repo(r) for r in conn.execute(query.limit(limit))]
