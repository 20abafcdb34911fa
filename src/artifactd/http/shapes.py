"""API results built from store rows, through the response models of ``results.py``."""

from __future__ import annotations

from artifactd.config import Settings
from artifactd.http.results import (
    CommitInfo,
    CreateRepoResult,
    ForkRepoResult,
    IdentityInfo,
    NamespaceDetail,
    NamespaceInfo,
    RepoInfo,
    TokenInfo,
    TreeEntryInfo,
    TreeInfo,
)
from artifactd.services.access.repo_tokens import token_state
from artifactd.services.clock import iso
from artifactd.services.reads.content import Tree
from artifactd.services.repos.repos import CreatedRepo
from artifactd.storage.gitobjects import Commit, Identity
from artifactd.storage.metadata import NamespaceRow, RepoRow, RepoTokenRow


def _iso(us: int) -> str:
    """A time that is always set (creation, expiry)."""
    return iso(us) or ""


def repo_info(repo: RepoRow, settings: Settings) -> RepoInfo:
    return RepoInfo(
        id=repo.id,
        name=repo.name,
        description=repo.description,
        default_branch=repo.default_branch,
        created_at=_iso(repo.created_us),
        updated_at=_iso(repo.updated_us),
        last_push_at=iso(repo.last_push_us),
        source=repo.source,
        read_only=repo.read_only,
        remote=settings.remote_url(repo.account_id, repo.namespace, repo.name),
        status=repo.status,
        status_reason=repo.status_reason,
        size=repo.size_bytes,
        maintained_at=iso(repo.maintained_us),
    )


def create_result(created: CreatedRepo, settings: Settings) -> CreateRepoResult:
    """``CreateRepoResult`` of the spec, with the token's ``expires_at`` as published."""
    repo = created.repo
    return CreateRepoResult(
        id=repo.id,
        name=repo.name,
        description=repo.description,
        default_branch=repo.default_branch,
        remote=settings.remote_url(repo.account_id, repo.namespace, repo.name),
        token=created.token,
        expires_at=_iso(created.token_expires_us),
    )


def fork_result(created: CreatedRepo, objects: int, settings: Settings) -> ForkRepoResult:
    return ForkRepoResult(**create_result(created, settings).model_dump(), objects=objects)


def token_info(token: RepoTokenRow) -> TokenInfo:
    return TokenInfo(
        id=token.id,
        scope=token.scope,
        state=token_state(token),
        created_at=_iso(token.created_us),
        expires_at=_iso(token.expires_us),
    )


def namespace_info(ns: NamespaceRow) -> NamespaceInfo:
    return NamespaceInfo(name=ns.name, created_at=_iso(ns.created_us))


def namespace_detail(ns: NamespaceRow, repo_count: int) -> NamespaceDetail:
    return NamespaceDetail(name=ns.name, created_at=_iso(ns.created_us), repo_count=repo_count)


def identity_info(person: Identity) -> IdentityInfo:
    return IdentityInfo(name=person.name, email=person.email, date=person.date)


def commit_info(commit: Commit) -> CommitInfo:
    """A commit of the content routes (``log``, ``commit/:hash``); see docs/api.md."""
    return CommitInfo(
        sha=commit.sha,
        tree=commit.tree,
        parents=list(commit.parents),
        author=identity_info(commit.author),
        committer=identity_info(commit.committer),
        message=commit.message,
    )


def tree_info(tree: Tree) -> TreeInfo:
    """``tree/:hash``: the tree's sha and its entries; ``size`` is null except for blobs."""
    return TreeInfo(
        sha=tree.sha,
        entries=[
            TreeEntryInfo(name=item.entry.name, mode=item.entry.mode,
                          type=item.entry.type,
                          sha=item.entry.sha, size=item.size)
            for item in tree.entries
        ],
    )
