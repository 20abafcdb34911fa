"""Response models: every JSON result and the v4 envelope around it.

The handlers build their results through these models (``shapes.py`` fills them from store
rows) and ``openapi.py`` renders the same models as the OpenAPI document's schemas, so the
document cannot drift from what the server sends. Field names and types follow spec 001 and
the published REST reference; fields beyond the spec are listed in docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Sha = Annotated[str, Field(pattern="^[0-9a-f]{40}$")]
Scope = Literal["read", "write"]
TokenState = Literal["active", "expired", "revoked"]
RepoStatus = Literal["ready", "importing", "forking", "failed"]


class Result(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _without_none(
    model: BaseModel, handler: SerializerFunctionWrapHandler, keys: tuple[str, ...]
) -> dict[str, Any]:
    data: dict[str, Any] = handler(model)
    for key in keys:
        if data.get(key) is None:
            data.pop(key, None)
    return data


# -- the envelope ------------------------------------------------------------------------


class ErrorSource(Result):
    pointer: str = Field(description="JSON pointer to the request field (or query parameter)")


class ApiError(Result):
    # Extra members (such as ``retriable``) pass through: an error is never refused for them.
    model_config = ConfigDict(frozen=True, extra="allow")

    code: int = Field(description="Stable numeric error code (docs/errors.md)")
    message: str
    documentation_url: str | None = None
    source: ErrorSource | None = None
    retriable: bool | None = Field(
        None, description="Present (true) when the same request can succeed if retried later"
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(self, handler, ("documentation_url", "source", "retriable"))


class CursorResultInfo(Result):
    """Keyset pagination (``GET /namespaces``, ``GET /repos``)."""

    cursor: str = Field(description="Opaque cursor for the next page; empty on the last page")
    per_page: int
    count: int
    total_count: int | None = Field(
        default=None, description="Beyond the spec: repos matching the listing (repo lists only)")


class OffsetResultInfo(Result):
    """Page-number pagination (``GET /repos/:name/tokens``)."""

    page: int
    per_page: int
    total_pages: int
    count: int
    total_count: int


class LogResultInfo(Result):
    """Offset pagination of ``GET /repos/:name/log`` (beyond the spec: docs/api.md)."""

    page: int
    per_page: int
    offset: int
    count: int
    has_more: bool


ResultInfo = CursorResultInfo | OffsetResultInfo | LogResultInfo


class Envelope(Result):
    """The Cloudflare v4 envelope of every JSON response (``result_info`` only on listings)."""

    result: Any = None
    success: bool
    errors: list[ApiError]
    messages: list[ApiError]
    result_info: ResultInfo | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(self, handler, ("result_info",))


# -- namespaces, repos, tokens -----------------------------------------------------------


class NamespaceInfo(Result):
    name: str
    created_at: Timestamp


class NamespaceDetail(NamespaceInfo):
    repo_count: int


class RepoInfo(Result):
    """``RepoWithRemote`` of the spec, plus ``status``, ``status_reason``, ``size`` and
    ``maintained_at``."""

    id: str
    name: str
    description: str | None
    default_branch: str
    created_at: Timestamp
    updated_at: Timestamp
    last_push_at: Timestamp | None
    source: str | None
    read_only: bool
    remote: str
    status: RepoStatus
    status_reason: str | None
    size: int = Field(description="Bytes of git objects stored for the repo")
    maintained_at: Timestamp | None


class CreateRepoResult(Result):
    """Create and import: the repo, its remote and its first (write) token."""

    id: str
    name: str
    description: str | None
    default_branch: str
    remote: str
    token: str = Field(description="A write token for the remote (shown once)")
    expires_at: Timestamp = Field(description="When ``token`` expires")


class ForkRepoResult(CreateRepoResult):
    objects: int = Field(description="Git objects the fork shares with its parent")


class DeleteRepoResult(Result):
    id: str


class TokenInfo(Result):
    id: str
    scope: Scope
    state: TokenState
    created_at: Timestamp
    expires_at: Timestamp


class CreateTokenResult(Result):
    id: str
    plaintext: str = Field(description="The token (shown once)")
    scope: Scope
    expires_at: Timestamp


class RevokeTokenResult(Result):
    id: str


class WhoAmIResult(Result):
    """Beyond the spec: the API token that sent the request."""

    account_id: str
    token_id: str
    permission: Literal["read", "edit"]


# -- repo content ------------------------------------------------------------------------


class IdentityInfo(Result):
    name: str
    email: str
    date: str = Field(description="ISO-8601 in the person's own UTC offset, as git recorded it")


class CommitInfo(Result):
    sha: Sha
    tree: Sha
    parents: list[Sha]
    author: IdentityInfo
    committer: IdentityInfo
    message: str


class TreeEntryInfo(Result):
    name: str
    mode: str = Field(description="Six octal digits, as git ls-tree prints them")
    type: Literal["blob", "tree", "commit"]
    sha: Sha
    size: int | None = Field(description="Bytes of a blob; null for trees and submodules")


class TreeInfo(Result):
    sha: Sha
    entries: list[TreeEntryInfo]


# -- GraphQL (documented here; graphql.py parses the body itself, as GraphQL servers do) ---


class GraphQLRequest(BaseModel):
    query: str = Field(description="A query on `viewer.accounts.artifactsEventsAdaptiveGroups`",
                       min_length=1)
    variables: dict[str, Any] | None = None
    operationName: str | None = None  # GraphQL's own field name


class GraphQLError(Result):
    message: str


class GraphQLResponse(Result):
    data: dict[str, Any] | None
    errors: list[GraphQLError] | None = None


# -- health (plain JSON, not enveloped: load balancers read the status code) --------------


class Liveness(Result):
    status: Literal["ok"]


class CheckResult(Result):
    name: Literal["database", "migrations", "data_dir", "git"]
    ok: bool
    detail: str | None = Field(description="Why the check failed; null when it passed")


class Readiness(Result):
    status: Literal["ok", "unavailable"]
    checks: list[CheckResult]


# -- read helpers: compare, blame, recursive tree (issue 13; docs/api.md) -----------------


class CompareSideInfo(Result):
    repo: str = Field(description="Name of the repo the side was read from")
    ref: str
    sha: Sha


class HunkInfo(Result):
    old_start: int
    old_lines: int
    new_start: int
    new_lines: int
    header: str = Field(description="git's function context after the hunk's second @@")
    lines: list[str] = Field(description="Lines with their ' ', '+', '-' or '\\' prefix")


class ChangedFileInfo(Result):
    path: str
    previous_path: str | None = Field(description="The old path of a rename or copy, else null")
    status: Literal["added", "removed", "modified", "renamed", "copied", "changed", "unmerged",
                    "unknown"]
    additions: int
    deletions: int
    binary: bool
    hunks: list[HunkInfo] | None = Field(None, description="With `hunks=true`: the file's diff "
                                                           "hunks (none for a binary file)")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(self, handler, ("hunks",))


class CompareInfo(Result):
    base: CompareSideInfo
    head: CompareSideInfo
    merge_base: Sha | None = Field(description="Null when the two sides share no history")
    ahead_by: int = Field(description="Commits in head and not in base")
    behind_by: int = Field(description="Commits in base and not in head")
    commits: list[CommitInfo] = Field(description="Commits in head and not in base, oldest "
                                                  "first (at most 250)")
    commits_truncated: bool
    files: list[ChangedFileInfo] = Field(description="Files changed from the merge base to "
                                                     "head (at most 300)")
    truncated: bool = Field(description="True when files were left out (over 300 files)")
    hunks_truncated: bool | None = Field(None, description="With `hunks=true`: true when the "
                                                           "patch was cut at its size limit")

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(self, handler, ("hunks_truncated",))


class BlameRangeInfo(Result):
    start: int = Field(description="First line (1-based) in the file at the ref")
    lines: int
    commit: Sha
    original_start: int = Field(description="First line in the commit that introduced them")
    original_path: str


class BlameCommitInfo(Result):
    sha: Sha
    author: IdentityInfo
    committer: IdentityInfo
    summary: str


class BlameInfo(Result):
    sha: Sha = Field(description="The commit the file was blamed at")
    path: str
    ranges: list[BlameRangeInfo]
    commits: list[BlameCommitInfo]


class TreeWalkEntryInfo(Result):
    path: str
    mode: str
    type: Literal["blob", "commit"]
    sha: Sha
    size: int | None = Field(description="Bytes of a blob; null for submodules")


class TreeWalkInfo(Result):
    sha: Sha
    entries: list[TreeWalkEntryInfo]
    truncated: bool = Field(description="True when the tree is too large to list in full")
# -- writes without a git client: commits, refs, merge, notes (docs/api.md "Writes") --------


class CommitWriteResult(Result):
    sha: Sha
    tree: Sha
    branch: str
    parents: list[Sha]


class RefResult(Result):
    name: str = Field(description="Short name (branch or tag)")
    ref: str = Field(description="Full ref name (refs/heads/... or refs/tags/...)")
    kind: Literal["branch", "tag"]
    target: Sha = Field(description="The commit (an annotated tag's peeled commit)")
    object_type: str = Field(description="commit, or tag for an annotated tag")


class ConflictInfo(Result):
    path: str
    hunks: list[str] = Field(description="Each conflict region with git's markers "
                                         "(<<<<<<< ours, =======, >>>>>>> theirs)")


class MergeResult(Result):
    mergeable: bool
    sha: Sha | None = Field(description="The new commit (null for a dry run or a conflict)")
    tree: Sha | None = None
    target: str
    head: Sha = Field(description="The commit merged in")
    merge_base: Sha | None
    fast_forward: bool
    conflicts: list[ConflictInfo]
    messages: list[str] = Field(default_factory=list, description="git's merge messages")


class NoteResult(Result):
    commit: Sha
    notes_ref: str
    message: str
    note_sha: Sha = Field(description="The note's blob")
    notes_commit: Sha = Field(description="The notes ref's commit")
# -- event subscriptions (docs/events.md) ---------------------------------------------


class SubscriptionSourceInfo(Result):
    type: Literal["artifacts", "artifacts.repo"]
    namespace: str | None
    repo_name: str | None


class SubscriptionDestinationInfo(Result):
    type: Literal["webhook", "queue"]
    url: str | None


class SubscriptionInfo(Result):
    id: str
    name: str
    source: SubscriptionSourceInfo
    event_types: list[str]
    destination: SubscriptionDestinationInfo
    state: Literal["active", "paused"]
    paused_reason: str | None
    failures: int = Field(description="Failed webhook attempts in a row")
    cursor: str = Field(description="Last event delivered (webhook) or acknowledged (queue)")
    created_at: Timestamp
    updated_at: Timestamp
    secret: str | None = Field(
        default=None, description="The webhook signing secret: only when created or rotated")

    @model_serializer(mode="wrap")
    def _drop_secret(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(self, handler, ("secret",))


class EventSourceInfo(Result):
    type: Literal["artifacts", "artifacts.repo"]
    namespace: str
    repoName: str


class EventMetadataInfo(Result):
    accountId: str
    eventSubscriptionId: str
    eventSchemaVersion: int
    eventTimestamp: Timestamp


class EventInfo(Result):
    id: str = Field(description="Unique event id (also the webhook-id header): dedupe on it")
    type: str
    source: EventSourceInfo
    payload: dict[str, Any]
    metadata: EventMetadataInfo


class DeliveryInfo(Result):
    id: int
    event_id: str
    outcome: Literal["delivered", "failed", "pending"]
    status_code: int | None
    error: str | None
    latency_ms: float | None
    response_snippet: str | None
    attempted_at: Timestamp


class RedeliverResult(Result):
    queued: int


class DeleteSubscriptionResult(Result):
    id: str
