"""JSON shapes of API results, built from store rows (see docs/api.md)."""

from __future__ import annotations

from typing import Any

from artifactd.config import Settings
from artifactd.services.clock import iso
from artifactd.services.repo_tokens import token_state
from artifactd.storage.metadata import NamespaceRow, RepoRow, RepoTokenRow


def repo_info(repo: RepoRow, settings: Settings) -> dict[str, Any]:
    """``RepoWithRemote`` of the spec, plus ``status``, ``status_reason`` and ``size``."""
    return {
        "id": repo.id,
        "name": repo.name,
        "description": repo.description,
        "default_branch": repo.default_branch,
        "created_at": iso(repo.created_us),
        "updated_at": iso(repo.updated_us),
        "last_push_at": iso(repo.last_push_us),
        "source": repo.source,
        "read_only": repo.read_only,
        "remote": settings.remote_url(repo.account_id, repo.namespace, repo.name),
        "status": repo.status,
        "status_reason": repo.status_reason,
        "size": repo.size_bytes,
    }


def create_result(repo: RepoRow, token: str, settings: Settings) -> dict[str, Any]:
    """``CreateRepoResult`` of the spec."""
    return {
        "id": repo.id,
        "name": repo.name,
        "description": repo.description,
        "default_branch": repo.default_branch,
        "remote": settings.remote_url(repo.account_id, repo.namespace, repo.name),
        "token": token,
    }


def token_info(token: RepoTokenRow) -> dict[str, Any]:
    return {
        "id": token.id,
        "scope": token.scope,
        "state": token_state(token),
        "created_at": iso(token.created_us),
        "expires_at": iso(token.expires_us),
    }


def namespace_info(ns: NamespaceRow, repo_count: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": ns.name, "created_at": iso(ns.created_us)}
    if repo_count is not None:
        body["repo_count"] = repo_count
    return body
