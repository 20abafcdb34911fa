"""``GET /openapi.json`` and ``GET /docs``: generated from the routes, valid, served from the
package, and true to what the server sends."""

from __future__ import annotations

import functools
import re
from typing import Any

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route

from artifactd.http import content, control, git, graphql, health, metrics, reference, repo_actions
from artifactd.http.apidoc import operation_of
from artifactd.http.openapi import build_document
from tests.harness import Server

ROUTE_TABLES = (control, repo_actions, content, git, graphql, metrics, health, reference)
NS = "/client/v4/accounts/{account_id}/artifacts/namespaces/{namespace}"


def test_document_is_valid_openapi_31_and_unauthenticated(sqlite_server: Server) -> None:
    r = httpx.get(f"{sqlite_server.url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    document = r.json()
    assert document["openapi"].startswith("3.1")
    validate(document)
    paths = document["paths"]
    for path, method in [
        ("/client/v4/accounts/{account_id}/artifacts/namespaces", "get"),
        (NS + "/repos", "post"), (NS + "/repos/{name}", "delete"),
        (NS + "/repos/{name}/fork", "post"), (NS + "/repos/{name}/import", "post"),
        (NS + "/tokens", "post"), (NS + "/tokens/{token_id}", "delete"),
        (NS + "/repos/{name}/raw/{rest}", "get"),
        ("/git/{account_id}/{namespace}/{repo}.git/info/refs", "get"),
        ("/git/{account_id}/{namespace}/{repo}.git/git-receive-pack", "post"),
        ("/client/v4/graphql", "post"), ("/metrics", "get"), ("/healthz", "get"),
        ("/readyz", "get"),
    ]:
        assert method in paths[path], (method, path)
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiToken"]["scheme"] == "bearer" and schemes["repoTokenBasic"]["scheme"] == "basic"
    create = paths[NS + "/repos"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateRepoRequest"}
    assert create["security"] == [{"apiToken": []}]
    assert paths["/healthz"]["get"]["security"] == []
    result = document["components"]["schemas"]["CreateRepoResult"]
    assert {"token", "expires_at", "remote"} <= set(result["required"])
    assert document["components"]["schemas"]["CursorResultInfo"]["properties"]["cursor"]["type"] == "string"


def test_every_route_in_the_route_tables_is_documented() -> None:
    """A new route without an ``Operation`` fails here instead of being left out silently."""
    for module in ROUTE_TABLES:
        for route in module.routes:
            assert isinstance(route, Route) and operation_of(route.endpoint) is not None, route.path


def test_routes_are_documented_wherever_they_are_mounted() -> None:
    """A route table mounted again under another base path (the `/v1/api` mirror) is documented
    there too, with its own operation ids, from the same metadata."""
    def wrapped(endpoint: Any) -> Any:
        @functools.wraps(endpoint)
        async def run(request: Any) -> Any:  # e.g. a wrapper that supplies the account
            return await endpoint(request)
        return run

    mirror = [Route(route.path.replace("/client/v4/accounts/{account_id}/artifacts", "/v1/api"),
                    wrapped(route.endpoint), methods=route.methods)
              for route in control.routes]
    document = build_document([*control.routes, *mirror])
    validate(document)
    assert document["paths"]["/v1/api/namespaces/{namespace}/repos"]["post"]["summary"] == "Create a repo"
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == 2 * sum(len(r.methods - {"HEAD"}) for r in control.routes)


def test_results_match_their_schemas(sqlite_server: Server, unique_name: str) -> None:
    """The document's result schema for create is the set of keys the server returns."""
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    schemas = document["components"]["schemas"]
    with sqlite_server.client() as c:
        created = c.post("/repos", json={"name": unique_name}).json()["result"]
        got = c.get(f"/repos/{unique_name}").json()["result"]
        tokens = c.get(f"/repos/{unique_name}/tokens").json()
    assert set(created) == set(schemas["CreateRepoResult"]["properties"])
    assert set(got) == set(schemas["RepoInfo"]["properties"])
    assert set(tokens["result"][0]) == set(schemas["TokenInfo"]["properties"])
    assert set(tokens) == set(schemas["Envelope"]["properties"])
    assert set(tokens["result_info"]) == set(schemas["OffsetResultInfo"]["properties"])


def test_docs_page_is_rendered_from_the_document_and_self_contained(sqlite_server: Server) -> None:
    r = httpx.get(f"{sqlite_server.url}/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    page = r.text
    document = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    for path, operations in document["paths"].items():
        assert path.replace("{", "").replace("}", "") in page.replace("{", "").replace("}", "")
        for operation in operations.values():
            assert f'id="{operation["operationId"]}"' in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    # Nothing is fetched from elsewhere: no scripts, no stylesheets or images by URL.
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
