"""Repo-scoped tokens: mint, list, revoke, and verify (the git data plane's credential check)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from artifactd.errors import AuthenticationError, Code, Conflict, NotFound, ValidationError
from artifactd.services.access.tokens import (
    format_repo_token,
    hash_secret,
    is_token_id,
    new_secret,
    new_token_id,
    parse_repo_token,
)
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream
from artifactd.storage.metadata import RepoRow, RepoTokenRow

Scope = Literal["read", "write"]
DEFAULT_TTL = 86_400
MIN_TTL = 60
MAX_TTL = 31_536_000
DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 100
MAX_PAGE = 1_000_000
STATES = ("active", "expired", "revoked", "all")


def token_state(token: RepoTokenRow, at_us: int | None = None) -> str:
    if token.revoked_us is not None:
        return "revoked"
    return "expired" if token.expires_us <= (at_us or now_us()) else "active"


def new_repo_token(
    repo_id: str, scope: str, ttl: int, now: int
) -> tuple[RepoTokenRow, str, str]:
    """Build a token row; returns (row, secret hash, plaintext). Nothing is stored."""
    expires_us = now + ttl * 1_000_000
    secret = new_secret()
    row = RepoTokenRow(new_token_id(), repo_id, scope, now, expires_us, None)
    return row, hash_secret(secret), format_repo_token(secret, expires_us // 1_000_000)


def check_scope(value: object) -> Scope:
    if value not in ("read", "write"):
        raise ValidationError("scope must be 'read' or 'write'", pointer="/scope")
    return "read" if value == "read" else "write"


def check_ttl(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("ttl must be an integer number of seconds", pointer="/ttl")
    if not MIN_TTL <= value <= MAX_TTL:
        raise ValidationError(
            f"ttl must be between {MIN_TTL} and {MAX_TTL} seconds", code=Code.INVALID_TTL,
            pointer="/ttl",
        )
    return value


@dataclass(frozen=True)
class MintedToken:
    row: RepoTokenRow
    plaintext: str


def mint(backend: Backend, repo: RepoRow, scope: object = "write", ttl: object = DEFAULT_TTL) -> MintedToken:
    checked_scope = check_scope(scope)
    checked_ttl = check_ttl(ttl)
    row, secret_hash, plaintext = new_repo_token(repo.id, checked_scope, checked_ttl, now_us())
    backend.meta.insert_repo_token(row, secret_hash, [event_stream.token_created(
        repo, row.id, row.scope, row.expires_us)])
    return MintedToken(row, plaintext)


@dataclass(frozen=True)
class TokenPage:
    tokens: list[RepoTokenRow]
    page: int
    per_page: int
    total: int


def list_tokens(
    backend: Backend, repo: RepoRow, *, state: str = "active", page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
) -> TokenPage:
    if state not in STATES:
        raise ValidationError(f"state must be one of {', '.join(STATES)}", pointer="/state")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValidationError(f"per_page must be between 1 and {MAX_PER_PAGE}", pointer="/per_page")
    if not 1 <= page <= MAX_PAGE:
        raise ValidationError("page must be a positive integer", pointer="/page")
    rows, total = backend.meta.list_repo_tokens(
        repo.id, state, now_us(), (page - 1) * per_page, per_page
    )
    return TokenPage(rows, page, per_page, total)


def revoke(backend: Backend, account_id: str, namespace: str, token_id: str) -> RepoTokenRow:
    """Revoke a token of a repo in this namespace; tokens elsewhere look like unknown ids."""
    not_found = NotFound(f"Token {token_id!r} not found", code=Code.TOKEN_NOT_FOUND)
    if not is_token_id(token_id):
        raise not_found
    token = backend.meta.get_repo_token(token_id)
    if token is None:
        raise not_found
    repo = backend.meta.get_repo_by_id(token.repo_id)
    if repo is None or repo.account_id != account_id or repo.namespace != namespace:
        raise not_found
    if not backend.meta.revoke_repo_token(token_id, now_us(),
                                          [event_stream.token_revoked(repo, token_id)]):
        raise Conflict(f"Token {token_id!r} is already revoked", code=Code.TOKEN_ALREADY_REVOKED)
    return token


def find_token_for_repo(backend: Backend, repo: RepoRow, token_or_id: str) -> RepoTokenRow | None:
    """Resolve a plaintext token or a token id to a token of ``repo`` (SDK's revokeToken)."""
    if is_token_id(token_or_id):
        token = backend.meta.get_repo_token(token_or_id)
    else:
        parsed = parse_repo_token(token_or_id)
        found = backend.meta.find_repo_token(parsed.secret_hash) if parsed else None
        token = found[0] if found else None
    return token if token is not None and token.repo_id == repo.id else None


def revoke_for_repo(backend: Backend, repo: RepoRow, token_or_id: str) -> RepoTokenRow:
    """Revoke a token of ``repo`` given its plaintext or its id (the SDK's ``revoke_token``).

    The error message never repeats what the caller sent: it may be a live plaintext token.
    """
    token = find_token_for_repo(backend, repo, token_or_id)
    if token is None:
        raise NotFound(f"No such token for repo {repo.name!r}", code=Code.TOKEN_NOT_FOUND)
    if not backend.meta.revoke_repo_token(token.id, now_us(),
                                          [event_stream.token_revoked(repo, token.id)]):
        raise Conflict(f"Token {token.id!r} is already revoked", code=Code.TOKEN_ALREADY_REVOKED)
    return token


@dataclass(frozen=True)
class GitAccess:
    repo: RepoRow
    token: RepoTokenRow

    @property
    def can_write(self) -> bool:
        return self.token.scope == "write"


def lookup(backend: Backend, credential: str) -> GitAccess:
    """The token (full string, without suffix, or bare secret) and its repo, any state.

    A ``?expires=`` suffix that does not match the stored expiry means the token string was
    edited, and it is refused like an unknown token.
    """
    parsed = parse_repo_token(credential)
    found = backend.meta.find_repo_token(parsed.secret_hash) if parsed else None
    if parsed is None or found is None:
        raise AuthenticationError("Invalid repo token", code=Code.INVALID_REPO_TOKEN)
    token, repo = found
    if parsed.expires is not None and parsed.expires != token.expires_us // 1_000_000:
        raise AuthenticationError("Invalid repo token", code=Code.INVALID_REPO_TOKEN)
    return GitAccess(repo, token)
