"""JSON shapes of API results, built from store rows (see docs/api.md)."""

from __future__ import annotations

from typing import Any

from artifactd.config import Settings
from artifactd.services.clock import iso
from artifactd.services.content import Tree
from artifactd.services.repo_tokens import token_state
from artifactd.storage.gitobjects import Commit, Identity
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
        "maintained_at": iso(repo.maintained_us),
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


def identity_info(person: Identity) -> dict[str, Any]:
    return {"name": person.name, "email": person.email, "date": person.date}


def commit_info(commit: Commit) -> dict[str, Any]:
    """A commit of the content routes (``log``, ``commit/:hash``); see docs/api.md."""
    return {
        "sha": commit.sha,
        "tree": commit.tree,
        "parents": list(commit.parents),
        "author": identity_info(commit.author),
        "committer": identity_info(commit.committer),
        "message": commit.message,
    }


def tree_info(tree: Tree) -> dict[str, Any]:
    """``tree/:hash``: the tree's sha and its entries; ``size`` is null except for blobs."""
    return {
        "sha": tree.sha,
        "entries": [
            {"name": item.entry.name, "mode": item.entry.mode, "type": item.entry.type,
             "sha": item.entry.sha, "size": item.size}
            for item in tree.entries
        ],
    }
