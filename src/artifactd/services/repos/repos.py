"""Repo lifecycle and listing: create, get, list, delete, and namespaces."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from artifactd.errors import Code, Conflict, NotFound, ValidationError
from artifactd.services.access.repo_tokens import DEFAULT_TTL, new_repo_token
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream, events
from artifactd.services.names import check_branch, check_name
from artifactd.storage.metadata import NamespaceRow, RepoRow, SortField

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
SORT_FIELDS: tuple[SortField, ...] = ("created_at", "updated_at", "last_push_at", "name")
READY, IMPORTING, FORKING, FAILED = "ready", "importing", "forking", "failed"


@dataclass(frozen=True)
class CreatedRepo:
    repo: RepoRow
    token: str
    token_expires_us: int = 0  # the initial token's expiry, returned beside it as expires_at


def new_repo_id() -> str:
    return uuid.uuid4().hex


def create_repo(
    backend: Backend,
    account_id: str,
    namespace: str,
    name: object,
    *,
    description: str | None = None,
    default_branch: str | None = None,
    read_only: bool = False,
    source: str | None = None,
    status: str = READY,
    import_spec: str | None = None,
    repo_id: str | None = None,
    event: str | None = "create",
) -> CreatedRepo:
    check_name(namespace, "namespace", "namespace name")
    repo_name = check_name(name, "name", "repo name")
    branch = check_branch(default_branch or "main", "default_branch")
    now = now_us()
    repo = RepoRow(
        id=repo_id or new_repo_id(), account_id=account_id, namespace=namespace, name=repo_name,
        description=description, default_branch=branch, read_only=read_only, source=source,
        status=status, status_reason=None, created_us=now, updated_us=now, last_push_us=0,
        size_bytes=0, maintained_us=0, pushes_since_maintenance=0, import_spec=import_spec,
    )
    token_row, secret_hash, plaintext = new_repo_token(repo.id, "write", DEFAULT_TTL, now)
    # Imports and forks report themselves when they are done (``imported``, ``forked``).
    outbox = [event_stream.created(repo)] if event == "create" and status == READY else []
    backend.meta.create_repo(repo, token_row, secret_hash, outbox)
    if event is not None:
        events.record(backend, repo, event, started_us=now)
    return CreatedRepo(repo, plaintext, token_row.expires_us)


def get_repo(backend: Backend, account_id: str, namespace: str, name: str) -> RepoRow:
    repo = backend.meta.get_repo(account_id, namespace, name)
    if repo is None:
        raise NotFound(
            f"Repo {name!r} not found in namespace {namespace!r}", code=Code.REPO_NOT_FOUND
        )
    return repo


def require_ready(repo: RepoRow) -> None:
    """Routes that need a repo's content refuse while it is being imported or forked."""
    if repo.status in (IMPORTING, FORKING):
        raise Conflict(
            f"Repo {repo.name!r} is still {repo.status}; retry shortly",
            code=Code.IMPORT_IN_PROGRESS if repo.status == IMPORTING else Code.FORK_IN_PROGRESS,
            retriable=True,
        )
    if repo.status == FAILED:
        raise Conflict(
            f"Repo {repo.name!r} failed to {'import' if repo.import_spec else 'initialise'}: "
            f"{repo.status_reason or 'unknown reason'}; delete it or retry the import",
            code=Code.REPO_FAILED,
        )


@dataclass(frozen=True)
class RepoPage:
    repos: list[RepoRow]
    cursor: str | None
    per_page: int
    total: int  # repos of the namespace that match ``search``, across all pages


def _sort_value(repo: RepoRow, sort: SortField) -> Any:
    return {
        "created_at": repo.created_us,
        "updated_at": repo.updated_us,
        "last_push_at": repo.last_push_us,
        "name": repo.name,
    }[sort]


def list_repos(
    backend: Backend,
    account_id: str,
    namespace: str,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    search: str | None = None,
    sort: str = "created_at",
    direction: str = "desc",
) -> RepoPage:
    if sort not in SORT_FIELDS:
        raise ValidationError(
            f"sort must be one of {', '.join(SORT_FIELDS)}", pointer="/sort"
        )
    if direction not in ("asc", "desc"):
        raise ValidationError("direction must be 'asc' or 'desc'", pointer="/direction")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", pointer="/limit")
    if search is not None and len(search) > 256:
        raise ValidationError("search must be at most 256 characters", pointer="/search")
    sort_field: SortField = sort
    query_key = {"s": sort, "d": direction, "q": search or ""}
    after: tuple[Any, str] | None = None
    if cursor:
        data = backend.cursors.decode(cursor, query_key)
        value, last_id = data.get("v"), data.get("i")
        if not isinstance(last_id, str) or value is None:
            raise ValidationError("Invalid cursor", code=Code.INVALID_CURSOR, pointer="/cursor")
        after = (value, last_id)
    rows = backend.meta.list_repos(
        account_id, namespace, sort=sort_field, descending=direction == "desc",
        limit=limit + 1, after=after, search=search or None,
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = backend.cursors.encode(
            {**query_key, "v": _sort_value(last, sort_field), "i": last.id}
        )
    # A first page that is also the last one counts itself; only longer lists pay a COUNT.
    total = len(rows) if after is None and next_cursor is None else backend.meta.count_repos(
        account_id, namespace, search or None
    )
    return RepoPage(rows, next_cursor, limit, total)


def delete_repo(backend: Backend, account_id: str, namespace: str, name: str) -> RepoRow:
    """Remove the repo from every route at once; its directory goes to the trash.

    The row (and with it the name and every token) is gone when this returns; the bytes are
    reclaimed by the background sweeper.
    """
    repo = get_repo(backend, account_id, namespace, name)
    started = now_us()
    if not backend.meta.delete_repo(repo.id, [event_stream.deleted(repo)]):
        raise NotFound(
            f"Repo {name!r} not found in namespace {namespace!r}", code=Code.REPO_NOT_FOUND
        )
    backend.repos.trash(repo.id)
    events.record(backend, repo, "delete", started_us=started)
    return repo


def get_namespace(backend: Backend, account_id: str, namespace: str) -> tuple[NamespaceRow, int]:
    check_name(namespace, "namespace", "namespace name")
    row = backend.meta.get_namespace(account_id, namespace)
    if row is None:
        raise NotFound(f"Namespace {namespace!r} not found", code=Code.NAMESPACE_NOT_FOUND)
    return row, backend.meta.count_repos(account_id, namespace)


def list_namespaces(
    backend: Backend, account_id: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> tuple[list[NamespaceRow], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}", pointer="/limit")
    after = None
    if cursor:
        data = backend.cursors.decode(cursor, {"k": "ns"})
        after = data.get("v")
        if not isinstance(after, str):
            raise ValidationError("Invalid cursor", code=Code.INVALID_CURSOR, pointer="/cursor")
    rows = backend.meta.list_namespaces(account_id, limit + 1, after)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = backend.cursors.encode({"k": "ns", "v": rows[-1].name})
    return rows, next_cursor
