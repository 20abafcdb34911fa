"""Control-plane routes under ``/client/v4/accounts/{account_id}/artifacts`` (spec 001)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.api import Call, endpoint
from artifactd.http.apidoc import Operation, Query
from artifactd.http.envelope import success
from artifactd.http.results import (
    CreateRepoResult,
    CreateTokenResult,
    CursorResultInfo,
    DeleteRepoResult,
    NamespaceDetail,
    NamespaceInfo,
    OffsetResultInfo,
    RepoInfo,
    RevokeTokenResult,
    TokenInfo,
    WhoAmIResult,
)
from artifactd.http.shapes import create_result, namespace_detail, namespace_info, repo_info, token_info
from artifactd.models import CreateRepoRequest, CreateTokenRequest, RevokeRepoTokenRequest
from artifactd.services.access import repo_tokens
from artifactd.services.clock import iso
from artifactd.services.repos import repos

PREFIX = "/client/v4/accounts/{account_id}/artifacts"
NS = PREFIX + "/namespaces/{namespace}"


def list_namespaces(call: Call) -> Response:
    limit = call.int_query("limit", repos.DEFAULT_LIMIT)
    rows, cursor = repos.list_namespaces(
        call.backend, call.account_id, limit=limit, cursor=call.query.get("cursor") or None
    )
    return success(
        [namespace_info(r) for r in rows],
        result_info=CursorResultInfo(cursor=cursor or "", per_page=limit, count=len(rows)),
    )


def get_namespace(call: Call) -> Response:
    row, count = repos.get_namespace(call.backend, call.account_id, call.namespace)
    return success(namespace_detail(row, count))


def create_repo(call: Call) -> Response:
    body = call.body(CreateRepoRequest)
    created = repos.create_repo(
        call.backend, call.account_id, call.namespace, body.name,
        description=body.description, default_branch=body.default_branch,
        read_only=body.read_only,
    )
    return success(create_result(created, call.backend.settings))


def list_repos(call: Call) -> Response:
    page = repos.list_repos(
        call.backend, call.account_id, call.namespace,
        limit=call.int_query("limit", repos.DEFAULT_LIMIT),
        cursor=call.query.get("cursor") or None,
        search=call.query.get("search") or None,
        sort=call.query.get("sort") or "created_at",
        direction=call.query.get("direction") or "desc",
    )
    settings = call.backend.settings
    return success(
        [repo_info(r, settings) for r in page.repos],
        # total_count is beyond the published CursorResultInfo: the binding's `list().total`.
        result_info=CursorResultInfo(
            cursor=page.cursor or "", per_page=page.per_page, count=len(page.repos),
            total_count=page.total,
        ),
    )


def get_repo(call: Call) -> Response:
    repo = repos.get_repo(call.backend, call.account_id, call.namespace, call.path["name"])
    return success(repo_info(repo, call.backend.settings))


def delete_repo(call: Call) -> Response:
    repo = repos.delete_repo(call.backend, call.account_id, call.namespace, call.path["name"])
    return success(DeleteRepoResult(id=repo.id), status=202)


def create_token(call: Call) -> Response:
    body = call.body(CreateTokenRequest)
    repo = repos.get_repo(call.backend, call.account_id, call.namespace, body.repo)
    minted = repo_tokens.mint(call.backend, repo, body.scope, body.ttl)
    return success(CreateTokenResult(
        id=minted.row.id,
        plaintext=minted.plaintext,
        scope=minted.row.scope,
        expires_at=iso(minted.row.expires_us) or "",
    ))


def list_tokens(call: Call) -> Response:
    repo = repos.get_repo(call.backend, call.account_id, call.namespace, call.path["name"])
    page = repo_tokens.list_tokens(
        call.backend, repo,
        state=call.query.get("state") or "active",
        page=call.int_query("page", 1),
        per_page=call.int_query("per_page", repo_tokens.DEFAULT_PER_PAGE),
    )
    total_pages = (page.total + page.per_page - 1) // page.per_page
    return success(
        [token_info(t) for t in page.tokens],
        result_info=OffsetResultInfo(
            page=page.page, per_page=page.per_page, total_pages=total_pages,
            count=len(page.tokens), total_count=page.total,
        ),
    )


def revoke_token(call: Call) -> Response:
    token = repo_tokens.revoke(call.backend, call.account_id, call.namespace, call.path["token_id"])
    return success(RevokeTokenResult(id=token.id))


def revoke_repo_token(call: Call) -> Response:
    """Beyond the spec: revoke a token of this repo by plaintext or id (docs/api.md)."""
    body = call.body(RevokeRepoTokenRequest)
    repo = repos.get_repo(call.backend, call.account_id, call.namespace, call.path["name"])
    token = repo_tokens.revoke_for_repo(call.backend, repo, body.token)
    return success(RevokeTokenResult(id=token.id))


def whoami(call: Call) -> Response:
    """Beyond the spec: the account and permission of the API token that sent the request."""
    principal = call.principal
    return success(WhoAmIResult(
        account_id=principal.account_id, token_id=principal.token_id,
        permission=principal.permission,
    ))


LIMIT = Query("limit", f"Page size, 1 to {repos.MAX_LIMIT} (default {repos.DEFAULT_LIMIT})",
              {"type": "integer", "minimum": 1, "maximum": repos.MAX_LIMIT})
CURSOR = Query("cursor", "The `cursor` of the previous page's `result_info`")
TAG_NS, TAG_REPOS, TAG_TOKENS = "Namespaces", "Repos", "Tokens"

routes = [
    Route(PREFIX + "/whoami", endpoint(whoami, doc=Operation(
        "Who am I", TAG_NS, response=WhoAmIResult,
        description="Beyond the spec: the account and permission of the API token that sent "
                    "the request.",
    )), methods=["GET"]),
    Route(PREFIX + "/namespaces", endpoint(list_namespaces, doc=Operation(
        "List namespaces", TAG_NS, response=NamespaceInfo, many=True,
        result_info=CursorResultInfo, query=(LIMIT, CURSOR),
    )), methods=["GET"]),
    Route(NS, endpoint(get_namespace, doc=Operation(
        "Get a namespace", TAG_NS, response=NamespaceDetail,
    )), methods=["GET"]),
    Route(NS + "/repos", endpoint(list_repos, doc=Operation(
        "List repos", TAG_REPOS, response=RepoInfo, many=True, result_info=CursorResultInfo,
        query=(
            LIMIT, CURSOR,
            Query("search", "Case-sensitive substring of the repo name (at most 256 characters)"),
            Query("sort", "Sort field (default `created_at`)",
                  {"type": "string", "enum": list(repos.SORT_FIELDS)}),
            Query("direction", "Sort direction (default `desc`)",
                  {"type": "string", "enum": ["asc", "desc"]}),
        ),
    )), methods=["GET"]),
    Route(NS + "/repos", endpoint(create_repo, edit=True, body=True, doc=Operation(
        "Create a repo", TAG_REPOS, request=CreateRepoRequest, response=CreateRepoResult,
    )), methods=["POST"]),
    Route(NS + "/repos/{name}", endpoint(get_repo, doc=Operation(
        "Get a repo", TAG_REPOS, response=RepoInfo,
    )), methods=["GET"]),
    Route(NS + "/repos/{name}", endpoint(delete_repo, edit=True, doc=Operation(
        "Delete a repo", TAG_REPOS, response=DeleteRepoResult, status=202,
        description="Answers at once; the repo's bytes are removed in the background.",
    )), methods=["DELETE"]),
    Route(NS + "/repos/{name}/tokens", endpoint(list_tokens, doc=Operation(
        "List a repo's tokens", TAG_TOKENS, response=TokenInfo, many=True,
        result_info=OffsetResultInfo, query=(
            Query("state", "Which tokens (default `active`)",
                  {"type": "string", "enum": ["active", "expired", "revoked", "all"]}),
            Query("per_page", f"Page size, 1 to {repo_tokens.MAX_PER_PAGE} (default "
                  f"{repo_tokens.DEFAULT_PER_PAGE})",
                  {"type": "integer", "minimum": 1, "maximum": repo_tokens.MAX_PER_PAGE}),
            Query("page", "Page number (default 1)",
                  {"type": "integer", "minimum": 1, "maximum": repo_tokens.MAX_PAGE}),
        ),
    )), methods=["GET"]),
    Route(NS + "/repos/{name}/tokens/revoke", endpoint(revoke_repo_token, edit=True, body=True,
          doc=Operation(
              "Revoke a repo's token by plaintext or id", TAG_TOKENS,
              request=RevokeRepoTokenRequest, response=RevokeTokenResult,
              description="Beyond the spec: the token travels in the body, never in a URL.",
          )), methods=["POST"]),
    Route(NS + "/tokens", endpoint(create_token, edit=True, body=True, doc=Operation(
        "Create a repo token", TAG_TOKENS, request=CreateTokenRequest, response=CreateTokenResult,
    )), methods=["POST"]),
    Route(NS + "/tokens/{token_id}", endpoint(revoke_token, edit=True, doc=Operation(
        "Revoke a token", TAG_TOKENS, response=RevokeTokenResult,
    )), methods=["DELETE"]),
]
