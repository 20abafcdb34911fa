"""The published Artifacts event schema (version 1): outbox rows and the documents built from them.

The analytics dataset (``services/events/events.py``) and this stream report the same facts; this
module turns a change into the ``OutboxRow`` that the change's own transaction writes, and an
outbox row into the event a subscriber receives. Field names, nesting and the ISO timestamps
with milliseconds are those of Cloudflare's published examples (docs/events.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from artifactd.observability import EVENTS_WRITTEN
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage import pushlog
from artifactd.storage.metadata import OutboxRow, RepoRow
from artifactd.storage.pushhooks import RefUpdate

SCHEMA_VERSION = 1
PREFIX = "cf.artifacts.repo."
ACCOUNT_EVENTS = tuple(PREFIX + t for t in ("created", "deleted", "forked", "imported"))
REPO_EVENTS = tuple(PREFIX + t for t in (
    "pushed", "cloned", "fetched", "token.created", "token.revoked"))
ALL_EVENTS = ACCOUNT_EVENTS + REPO_EVENTS
ZERO_ID = "0" * 40
MAX_COMMITS = 20  # commits listed per pushed ref (``totalCommitsCount`` counts all)
MAX_MESSAGE = 4096  # characters of a commit message (``messageTruncated`` says when cut)


def source_type(event_type: str) -> str:
    return "artifacts" if event_type in ACCOUNT_EVENTS else "artifacts.repo"


def iso_ms(us: int | None) -> str | None:
    """``2026-05-18T15:53:46.833Z`` (milliseconds, as the published examples)."""
    if not us:
        return None
    moment = datetime.fromtimestamp(us / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def new_event_id() -> str:
    return "evt_" + uuid.uuid4().hex


def _row(repo: RepoRow, event_type: str, payload: dict[str, Any], *,
         namespace: str | None = None, repo_name: str | None = None,
         at_us: int | None = None) -> OutboxRow:
    EVENTS_WRITTEN.labels(event_type).inc()
    return OutboxRow(
        id=new_event_id(), account_id=repo.account_id, type=event_type,
        namespace=namespace if namespace is not None else repo.namespace,
        repo_name=repo_name if repo_name is not None else repo.name,
        payload=json.dumps(payload, separators=(",", ":")), created_us=at_us or now_us(),
    )


def repo_payload(repo: RepoRow) -> dict[str, Any]:
    return {
        "repoId": repo.id, "defaultBranch": repo.default_branch,
        "description": repo.description, "readOnly": repo.read_only,
        "createdAt": iso_ms(repo.created_us), "updatedAt": iso_ms(repo.updated_us),
        "lastPushAt": iso_ms(repo.last_push_us),
    }


def created(repo: RepoRow) -> OutboxRow:
    return _row(repo, PREFIX + "created", repo_payload(repo))


def deleted(repo: RepoRow) -> OutboxRow:
    return _row(repo, PREFIX + "deleted", repo_payload(repo))


def forked(parent: RepoRow, child: RepoRow) -> OutboxRow:
    """Reported at the parent (the published ``source``), the fork in the payload."""
    payload = {"namespace": child.namespace, "repoName": child.name, **repo_payload(child)}
    return _row(parent, PREFIX + "forked", payload)


def imported(repo: RepoRow, source_url: str, branch: str) -> OutboxRow:
    return _row(repo, PREFIX + "imported",
                {**repo_payload(repo), "sourceUrl": source_url, "branch": branch})


def token_created(repo: RepoRow, token_id: str, scope: str, expires_us: int) -> OutboxRow:
    return _row(repo, PREFIX + "token.created",
                {"tokenId": token_id, "scope": scope, "expiresAt": iso_ms(expires_us)})


def token_revoked(repo: RepoRow, token_id: str) -> OutboxRow:
    return _row(repo, PREFIX + "token.revoked", {"tokenId": token_id})


def pulled(repo: RepoRow, clone: bool) -> OutboxRow:
    return _row(repo, PREFIX + ("cloned" if clone else "fetched"), {})


# -- pushes -----------------------------------------------------------------------------

def _commits(backend: Backend, repo: RepoRow, update: RefUpdate) -> tuple[list[dict[str, Any]], int]:
    # In process (libgit2): two git processes per push cost more than the rest of the event.
    listed, total = pushlog.brought(backend.repos.path(repo.id), update.old, update.new,
                                    update.ref, MAX_COMMITS)
    commits: list[dict[str, Any]] = []
    for commit in listed:
        message = commit.message.strip()
        commits.append({
            "id": commit.sha, "message": message[:MAX_MESSAGE],
            "messageTruncated": len(message) > MAX_MESSAGE,
            "timestamp": iso_ms(commit.commit_time * 1_000_000),
            "author": {"name": commit.author_name, "email": commit.author_email},
            "committer": {"name": commit.committer_name, "email": commit.committer_email},
            "parents": commit.parents,
        })
    commits.reverse()  # newest first as listed; the published order is newest last
    return commits, max(total, len(commits))


def pushed(backend: Backend, repo: RepoRow, updates: Sequence[RefUpdate]) -> list[OutboxRow]:
    """One ``pushed`` event per updated ref, read from the repo as it now is."""
    now = now_us()
    rows: list[OutboxRow] = []
    for update in updates:
        commits: list[dict[str, Any]] = []
        total = 0
        if update.new not in (ZERO_ID, "0" * 64):  # a deletion brought no commits
            commits, total = _commits(backend, repo, update)
        rows.append(_row(repo, PREFIX + "pushed", {
            "ref": update.ref, "before": update.old, "after": update.new,
            "commits": commits, "totalCommitsCount": total,
            "commitsTruncated": total > len(commits),
        }, at_us=now))
    return rows


def document(row: Any, subscription_id: str) -> dict[str, Any]:
    """The event a subscriber receives: the published shape plus its unique ``id``."""
    return {
        "id": row.id,
        "type": row.type,
        "source": {"type": source_type(row.type), "namespace": row.namespace,
                   "repoName": row.repo_name},
        "payload": json.loads(row.payload),
        "metadata": {
            "accountId": row.account_id, "eventSubscriptionId": subscription_id,
            "eventSchemaVersion": SCHEMA_VERSION, "eventTimestamp": iso_ms(row.created_us),
        },
    }


def document_bytes(row: Any, subscription_id: str) -> bytes:
    """``document`` serialised, the stored payload spliced in as it is (it is JSON already):
    a webhook body costs no parse and re-serialisation of the payload."""
    head = json.dumps({"id": row.id, "type": row.type, "source": {
        "type": source_type(row.type), "namespace": row.namespace, "repoName": row.repo_name}},
        separators=(",", ":"))
    metadata = json.dumps({
        "accountId": row.account_id, "eventSubscriptionId": subscription_id,
        "eventSchemaVersion": SCHEMA_VERSION, "eventTimestamp": iso_ms(row.created_us),
    }, separators=(",", ":"))
    return f'{head[:-1]},"payload":{row.payload},"metadata":{metadata}}}'.encode()
