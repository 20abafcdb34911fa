"""Request bodies of the REST API, shared by the server (validation) and the SDK (building).

Bodies are validated strictly: a wrong JSON type is an error (``"ttl": "60"`` is refused,
not coerced). Unknown fields are ignored, as Cloudflare's v4 API ignores them, so a client
written for a newer API version (or sending extra keys) keeps working (docs/api.md).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field


def _documented(**schema: Any) -> Any:
    """Constraints for the OpenAPI document only: the services check them (with their own
    error codes and messages), so pydantic must not."""
    return Field(json_schema_extra=schema)


Name = Annotated[str, _documented(pattern="^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                                  description="A letter or digit, then letters, digits, "
                                              "'.', '_' or '-'; at most 64 characters")]
Branch = Annotated[str, _documented(maxLength=255, description="A branch name (git "
                                    "check-ref-format rules)")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CreateRepoRequest(_Body):
    name: Name
    description: str | None = None
    default_branch: Branch | None = None
    read_only: bool = False


class ForkRepoRequest(_Body):
    name: Name
    description: str | None = None
    read_only: bool = False
    default_branch_only: bool = False


class ImportRepoRequest(_Body):
    url: str
    branch: Branch | None = None
    depth: Annotated[int, _documented(minimum=1)] | None = None
    read_only: bool = False
    description: str | None = None


class CreateTokenRequest(_Body):
    repo: Name
    scope: Annotated[str, _documented(enum=["read", "write"])] = "write"
    ttl: Annotated[int, _documented(minimum=60, maximum=31_536_000,
                                    description="Seconds until the token expires")] = 86_400


class RevokeRepoTokenRequest(_Body):
    """``POST .../repos/:name/tokens/revoke`` (beyond the spec): the binding's ``revokeToken``.

    ``token`` is the plaintext token or its id; it travels in the body so it never lands in a
    URL or an access log.
    """

    token: str


# -- writes without a git client (commits, refs, merge, notes) ------------------------------

Hash = Annotated[str, _documented(pattern="^[0-9a-f]{40}$", description="A full commit id")]
RepoPath = Annotated[str, _documented(maxLength=4096, description="A relative '/'-separated "
                                      "path: no '.', '..', empty or '.git' component")]


class Person(_Body):
    name: Annotated[str, _documented(maxLength=256)]
    email: Annotated[str, _documented(maxLength=256)]
    date: Annotated[str, _documented(description="ISO 8601 or '<unix seconds> <+hhmm>'; "
                                     "default now")] | None = None


class FileChange(_Body):
    """One change of a commit. ``op``: ``put`` (``path``, ``content``, ``encoding``,
    ``mode``), ``delete`` (``path``) or ``move`` (``from`` to ``path``)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    op: Annotated[str, _documented(enum=["put", "delete", "move"])]
    path: RepoPath
    content: str | None = None
    encoding: Annotated[str, _documented(enum=["utf-8", "base64"])] = "utf-8"
    mode: Annotated[str, _documented(enum=["100644", "100755", "120000"])] | None = None
    from_: RepoPath | None = Field(None, alias="from")


class CommitRequest(_Body):
    branch: Branch
    message: str
    author: Person | None = None
    committer: Person | None = None
    expected_head: Hash | None = None
    base: Annotated[str, _documented(description="Where a new branch starts (a ref or "
                                     "commit); only when the branch does not exist")] | None = None
    changes: list[FileChange]


class CreateBranchRequest(_Body):
    name: Branch
    target: Annotated[str, _documented(description="A ref or commit id")]


class UpdateRefRequest(_Body):
    """Move a branch or tag (``ref``: a short branch name, or ``refs/heads/...`` /
    ``refs/tags/...``) to ``target``, if it is still at ``expected``."""

    ref: Annotated[str, _documented(maxLength=255)]
    target: Hash
    expected: Hash | None = None
    force: bool = False


class MergeRequest(_Body):
    head: Annotated[str, _documented(description="'ref' of this repo or 'repo:ref' of a repo "
                                     "of the same namespace (a fork)")]
    target: Branch | None = None
    strategy: Annotated[str, _documented(enum=["merge", "squash", "fast-forward"])] = "merge"
    message: str | None = None
    dry_run: bool = False
    expected_head: Hash | None = None
    author: Person | None = None


class NoteRequest(_Body):
    message: str
    notes_ref: Annotated[str, _documented(description="Notes ref: 'commits' (default) or a "
                                          "name under refs/notes/")] = "commits"
    author: Person | None = None
    expected: Hash | None = None
# -- event subscriptions (docs/events.md) ---------------------------------------------


class SubscriptionSource(_Body):
    type: str
    namespace: str | None = None
    repo_name: str | None = None


class SubscriptionDestination(_Body):
    type: str
    url: str | None = None


class CreateSubscriptionRequest(_Body):
    name: str
    source: SubscriptionSource
    event_types: list[str] | None = None
    destination: SubscriptionDestination


class UpdateSubscriptionRequest(_Body):
    name: str | None = None
    event_types: list[str] | None = None
    url: str | None = None
    state: str | None = None
    rotate_secret: bool = False


class AckRequest(_Body):
    cursor: str


class RedeliverRequest(_Body):
    event_id: str | None = None
    start: str | None = None
    end: str | None = None
