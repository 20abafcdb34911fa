"""Clients written against Cloudflare's hosted Artifacts work against artifactd unchanged.

Every route of the published REST reference is called on the ``/v1/api/namespaces/:ns`` base
path of its newer version (the account comes from the API token), with the published
request bodies, and the answers are checked against the published result shapes and the
published error table (embedded below as data: the test reads no file outside the repo).
Git remotes of the changelog's form ``<host>/<namespace>/<repo>.git`` are driven with the
real git CLI.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from artifactd import Artifacts, AsyncArtifacts
from artifactd.cli.credential import match
from artifactd.client import Conflict, ValidationError
from artifactd.client._core import api_error
from artifactd.errors import Code
from artifactd.errors import Conflict as DomainConflict
from artifactd.services.repos.repos import require_ready
from artifactd.storage.metadata import RepoRow
from tests.clientutil import client_env, run_cli
from tests.gitsource import GitSource
from tests.gitutil import Git, basic_remote, bearer
from tests.harness import Server

# Cloudflare Artifacts docs, "Errors" > "Error codes" (api/errors.mdx).
PUBLISHED_ERRORS: dict[str, tuple[int, str]] = {
    "ALREADY_EXISTS": (10201, "The target repository already exists in the namespace."),
    "NOT_FOUND": (10200, "The repository or remote resource does not exist."),
    "IMPORT_IN_PROGRESS": (10302, "The repository is still being imported and is not yet available."),
    "FORK_IN_PROGRESS": (10303, "The repository is still being forked and is not yet available."),
    "INVALID_INPUT": (10100, "A request parameter is missing, malformed, or outside the accepted range."),
    "INVALID_REPO_NAME": (10101, "The repository name does not meet naming requirements."),
    "INVALID_TTL": (10103, "The token TTL is outside the allowed range (60-31,536,000 seconds)."),
    "INVALID_URL": (10104, "The source URL does not point to a valid git repository."),
    "REMOTE_AUTH_REQUIRED": (10106, "The remote repository requires authentication."),
    "UPSTREAM_UNAVAILABLE": (10401, "The remote git server could not be reached."),
    "MEMORY_LIMIT": (10402, "The operation exceeds service memory limits."),
    "INTERNAL_ERROR": (10400, "An unexpected internal error occurred."),
}
PUBLISHED = {code: name for name, (code, _) in PUBLISHED_ERRORS.items()}

# Result shapes of the REST reference ("Shared types" and each route's result type).
REPO_INFO = {"id", "name", "description", "default_branch", "created_at", "updated_at",
             "last_push_at", "source", "read_only"}
REPO_WITH_REMOTE = REPO_INFO | {"remote"}
CREATE_REPO_RESULT = {"id", "name", "description", "default_branch", "remote", "token"}
TOKEN_INFO = {"id", "scope", "state", "created_at", "expires_at"}
CREATE_TOKEN_RESULT = {"id", "plaintext", "scope", "expires_at"}
CURSOR_RESULT_INFO = {"cursor", "per_page", "count"}
OFFSET_RESULT_INFO = {"page", "per_page", "total_pages", "count", "total_count"}

NAMESPACE = "compat"


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The ``result`` of a successful v4 envelope."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True and body["errors"] == [] and body["messages"] == []
    return body["result"]


def published_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """The error of a failed envelope, which carries the published code ``name``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["result"] is None and body["messages"] == []
    error = body["errors"][0]
    assert error["code"] == PUBLISHED_ERRORS[name][0], (name, body)
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitSource]:
    base = tmp_path_factory.mktemp("compat-upstream")
    git = Git(base / "home")
    src = GitSource(base / "root")
    git.new_work(base / "work", {"README.md": "# upstream\n"})
    for name in ("upstream", "slow"):
        git.run("clone", "-q", "--bare", str(base / "work"), str(src.root / f"{name}.git"))
    src.start()
    yield src
    src.stop()


def v1(server: Server, token: str | None = None) -> httpx.Client:
    """A client whose base URL is the published ``ARTIFACTS_BASE_URL`` (no account in it)."""
    return httpx.Client(
        base_url=f"{server.url}/v1/api/namespaces/{NAMESPACE}",
        headers={"Authorization": f"Bearer {token or server.token}"}, timeout=60,
    )


def test_code_enum_carries_the_published_table() -> None:
    for name, (code, _) in PUBLISHED_ERRORS.items():
        assert Code[name] == code, name
    # artifactd's own codes collide with no published number: a member whose value is
    # published is that published code or an alias of it.
    for member in Code:
        if member.value in PUBLISHED:
            assert member.name == PUBLISHED[member.value], member
    assert all(member.value >= 11000 for member in Code if member.value not in PUBLISHED)


def test_every_published_route_on_the_v1_base(import_server: Server, source: GitSource,
                                              unique_name: str) -> None:
    name = unique_name
    with v1(import_server) as c:
        # Create a repo, as in the reference's curl (all optional fields given).
        created = ok(c.post("/repos", json={
            "name": name, "description": "Repository for automation experiments",
            "default_branch": "main", "read_only": False,
        }))
        assert set(created) >= CREATE_REPO_RESULT
        assert created["token"].startswith("art_v1_") and "?expires=" in created["token"]
        published_error(c.post("/repos", json={"name": name}), 409, "ALREADY_EXISTS")
        published_error(c.post("/repos", json={"name": "bad name!"}), 400, "INVALID_REPO_NAME")
        published_error(c.post("/repos", json={"name": name + "-x", "read_only": "no"}),
                        400, "INVALID_INPUT")

        # List repos, as in the reference's curl.
        listed = c.get("/repos", params={"limit": 20, "sort": "updated_at", "direction": "desc"})
        items = ok(listed)
        assert set(listed.json()["result_info"]) >= CURSOR_RESULT_INFO
        assert [item["name"] for item in items] == [name]
        assert set(items[0]) >= REPO_INFO

        # Get a repo.
        got = ok(c.get(f"/repos/{name}"))
        assert set(got) >= REPO_WITH_REMOTE and got["id"] == created["id"]
        published_error(c.get("/repos/no-such-repo"), 404, "NOT_FOUND")

        # Create, list and revoke tokens.
        token = ok(c.post("/tokens", json={"repo": name, "scope": "read", "ttl": 3600}))
        assert set(token) >= CREATE_TOKEN_RESULT and token["scope"] == "read"
        published_error(c.post("/tokens", json={"repo": name, "ttl": 59}), 400, "INVALID_TTL")
        published_error(c.post("/tokens", json={"repo": name, "ttl": 31_536_001}), 400, "INVALID_TTL")
        published_error(c.post("/tokens", json={"repo": "no-such-repo"}), 404, "NOT_FOUND")
        tokens = c.get(f"/repos/{name}/tokens", params={"state": "all", "per_page": 30, "page": 1})
        assert set(tokens.json()["result_info"]) >= OFFSET_RESULT_INFO
        assert all(set(item) >= TOKEN_INFO for item in ok(tokens))
        assert ok(c.delete(f"/tokens/{token['id']}")) == {"id": token["id"]}

        # Fork a repo, as in the reference's curl.
        forked = ok(c.post(f"/repos/{name}/fork", json={
            "name": f"{name}-copy", "description": "Fork for testing", "read_only": False,
            "default_branch_only": True,
        }))
        assert set(forked) >= CREATE_REPO_RESULT | {"objects"}
        published_error(c.post(f"/repos/{name}/fork", json={"name": f"{name}-copy"}),
                        409, "ALREADY_EXISTS")
        published_error(c.post("/repos/no-such-repo/fork", json={"name": f"{name}-f"}),
                        404, "NOT_FOUND")

        # Import a public remote (the reference's curl, against a local git server).
        imported = ok(c.post(f"/repos/{name}-mirror/import", json={
            "url": f"{source.url}/upstream.git", "branch": "main", "depth": 100,
        }))
        assert set(imported) >= CREATE_REPO_RESULT

        # Delete a repo: 202 with its id.
        assert ok(c.delete(f"/repos/{name}-copy"), 202) == {"id": forked["id"]}
        published_error(c.get(f"/repos/{name}-copy"), 404, "NOT_FOUND")

    # The v1 base path acts on the token's account: the same repo through /client/v4.
    with import_server.client() as v4:
        assert ok(v4.get(import_server.ns_url(NAMESPACE) + f"/repos/{name}"))["id"] == created["id"]


def test_import_errors_carry_the_published_codes(import_server: Server, source: GitSource,
                                                 unique_name: str) -> None:
    with v1(import_server) as c:
        def refused(url: str, status: int, name: str) -> None:
            published_error(c.post(f"/repos/{unique_name}/import", json={"url": url}), status, name)

        refused(f"{source.url}/missing.git", 400, "NOT_FOUND")  # the remote resource is absent
        source.pages["/html.git/info/refs"] = (200, "text/html", b"<html>hi</html>")
        refused(f"{source.url}/html.git", 400, "INVALID_URL")
        # artifactd's own git routes want a repo token: the remote requires authentication.
        repo_name = f"{unique_name}-src"
        ok(c.post("/repos", json={"name": repo_name}))
        refused(f"{import_server.url}/git/{NAMESPACE}/{repo_name}.git", 400, "REMOTE_AUTH_REQUIRED")
        refused("http://127.0.0.1:1/nothing-listens.git", 400, "UPSTREAM_UNAVAILABLE")
        # Nothing was created by the refused imports.
        published_error(c.get(f"/repos/{unique_name}"), 404, "NOT_FOUND")


def test_import_in_progress(import_server: Server, source: GitSource, unique_name: str) -> None:
    source.hold("slow")
    try:
        with v1(import_server) as c:
            ok(c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/slow.git"}))
            error = published_error(c.get(f"/repos/{unique_name}/log"), 409, "IMPORT_IN_PROGRESS")
            assert error["retriable"] is True
            again = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/slow.git"})
            published_error(again, 409, "IMPORT_IN_PROGRESS")
    finally:
        source.release("slow")


def v4(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.ns_url(NAMESPACE),
                        headers={"Authorization": f"Bearer {server.token}"}, timeout=60)


def test_unknown_fields_are_ignored_and_types_still_checked(import_server: Server,
                                                            unique_name: str) -> None:
    with v4(import_server) as c:
        # A camel-cased or future field is ignored, as Cloudflare's v4 API ignores it.
        created = ok(c.post("/repos", json={"name": unique_name, "readOnly": True,
                                            "labels": {"team": "x"}}))
        assert ok(c.get(f"/repos/{unique_name}"))["read_only"] is False
        token = ok(c.post("/tokens", json={"repo": unique_name, "ttl": 600, "note": "ci"}))
        assert token["scope"] == "write"
        # A wrong JSON type is still an error, with a pointer, and creates nothing.
        error = published_error(c.post("/repos", json={"name": 7, "extra": 1}), 400, "INVALID_INPUT")
        assert error["source"]["pointer"] == "/name"
        error = published_error(c.post("/tokens", json={"repo": unique_name, "ttl": "600", "x": 1}),
                                400, "INVALID_INPUT")
        assert error["source"]["pointer"] == "/ttl"
        assert created["name"] == unique_name


def test_v1_base_auth(import_server: Server, unique_name: str) -> None:
    with httpx.Client(base_url=f"{import_server.url}/v1/api/namespaces/{NAMESPACE}") as anonymous:
        assert anonymous.get("/repos").status_code == 401
    with v1(import_server, import_server.read_token) as reader:
        assert reader.get("/repos").status_code == 200
        assert reader.post("/repos", json={"name": unique_name}).status_code == 403
    # A token of another account sees that account's namespace, not this one's.
    other = import_server.new_api_token(account="f" * 32)
    with v1(import_server) as mine, v1(import_server, other["token"]) as theirs:
        ok(mine.post("/repos", json={"name": unique_name}))
        published_error(theirs.get(f"/repos/{unique_name}"), 404, "NOT_FOUND")


def test_changelog_remote_form(import_server: Server, tmp_path: Path, unique_name: str) -> None:
    """``git clone https://x:${REPO_TOKEN}@<host>/<namespace>/<repo>.git`` (the changelog)."""
    with v4(import_server) as c:
        created = ok(c.post("/repos", json={"name": unique_name}))
    remote = f"{import_server.url}/{NAMESPACE}/{unique_name}.git"
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "a")
    git.run("push", basic_remote(remote, created["token"]), "main", cwd=tmp_path / "a")
    git.run("-c", bearer(created["token"]), "clone", "-q", remote, str(tmp_path / "b"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "b") == first
    # No token, or one of another repo: the same answers as on the /git/... form.
    refs = f"{remote}/info/refs?service=git-upload-pack"
    assert httpx.get(refs).status_code == 401
    other = f"{import_server.url}/{NAMESPACE}/{unique_name}-other.git/info/refs"
    r = httpx.get(other, params={"service": "git-upload-pack"},
                  headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 404
    # Any other two-segment path is still a JSON 404, not a git answer.
    r = httpx.get(f"{import_server.url}/{NAMESPACE}/{unique_name}")
    assert r.status_code == 404 and r.json()["success"] is False


# -- the SDK and the CLI: the binding's newer shapes and Cloudflare's variable names ----------


def cloudflare_env(server: Server) -> dict[str, str]:
    """Only the variables Cloudflare's docs export: no ARTIFACTD_*, no account id."""
    return {
        "ARTIFACTS_BASE_URL": f"{server.url}/v1/api/namespaces/{NAMESPACE}",
        "CLOUDFLARE_API_TOKEN": server.token,
    }


def test_sdk_binding_shapes_from_cloudflare_variables(
    import_server: Server, source: GitSource, unique_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in os.environ if k.startswith("ARTIFACTD_")]:
        monkeypatch.delenv(key)
    for key, value in cloudflare_env(import_server).items():
        monkeypatch.setenv(key, value)
    with Artifacts() as artifacts:
        assert artifacts.namespace == NAMESPACE and artifacts.account_id == ""
        created = artifacts.create(unique_name, set_default_branch="trunk")
        assert created.default_branch == "trunk"
        assert created.token_expires_at is not None
        assert created.token_expires_at == created.expires_at
        with pytest.raises(ValidationError):
            artifacts.create(unique_name + "-x", default_branch="a", set_default_branch="b")
        imported = artifacts.import_repo(
            source={"url": f"{source.url}/upstream.git", "branch": "main"},
            target={"name": f"{unique_name}-imp", "opts": {"readOnly": True,
                                                           "description": "mirror"}},
            wait=True, wait_timeout=60,
        )
        info = artifacts.info(imported.name)
        assert info.read_only is True and info.description == "mirror"
        with pytest.raises(ValidationError):
            artifacts.import_repo(f"{source.url}/upstream.git", "x",
                                  source={"url": f"{source.url}/upstream.git"}, target={"name": "x"})
        # `total` counts every matching repo, not only this page's.
        page = artifacts.list(limit=1, search=unique_name)
        assert len(page) == 1 and page.total == 2 and page.cursor is not None
        assert artifacts.list(search=unique_name).total == 2
        repo = artifacts.get(unique_name)
        repo.create_token("read", 3600)
        assert repo.list_tokens().total == 2
    # The same through the /client/v4 base: the v1 one acted on the token's account.
    with Artifacts(import_server.url, import_server.account_id, import_server.token,
                   NAMESPACE) as v4:
        assert v4.info(unique_name).default_branch == "trunk"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_sdk_from_cloudflare_variables(anyio_backend: str, import_server: Server, unique_name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ARTIFACTD_")]:
        monkeypatch.delenv(key)
    for key, value in cloudflare_env(import_server).items():
        monkeypatch.setenv(key, value)
    async with AsyncArtifacts() as artifacts:
        created = await artifacts.create(unique_name, set_default_branch="dev")
        assert created.default_branch == "dev" and created.token_expires_at is not None
        assert (await artifacts.list(search=unique_name)).total == 1


def test_published_in_progress_codes_are_retriable_without_the_field() -> None:
    # The hosted service sends the code alone; artifactd also sends "retriable": true.
    for code in (10302, 10303):
        response = httpx.Response(409, json={
            "result": None, "success": False, "messages": [],
            "errors": [{"code": code, "message": "still importing"}],
        })
        error = api_error(response, response.json())
        assert isinstance(error, Conflict) and error.retriable is True and error.code == code
    taken = httpx.Response(409, json={"result": None, "success": False, "messages": [],
                                      "errors": [{"code": 10201, "message": "exists"}]})
    assert api_error(taken, taken.json()).retriable is False  # type: ignore[attr-defined]


def test_cli_from_cloudflare_variables(import_server: Server, tmp_path: Path,
                                       unique_name: str) -> None:
    env = client_env(import_server, tmp_path / "home")
    for key in ("ARTIFACTD_URL", "ARTIFACTD_ACCOUNT_ID", "ARTIFACTD_API_TOKEN"):
        del env[key]
    env.update(cloudflare_env(import_server))
    created = run_cli(env, "repo", "create", unique_name, "--json")
    assert created.returncode == 0, created.stderr
    with v1(import_server) as c:
        assert ok(c.get(f"/repos/{unique_name}"))["name"] == unique_name
    # The artifactd variables win over Cloudflare's: a wrong fallback token is not used.
    env.update({"ARTIFACTD_URL": import_server.url, "ARTIFACTD_ACCOUNT_ID": import_server.account_id,
                "ARTIFACTD_API_TOKEN": import_server.token, "CLOUDFLARE_API_TOKEN": "artd_" + "0" * 40,
                "ARTIFACTD_NAMESPACE": NAMESPACE})
    listed = run_cli(env, "repo", "get", unique_name, "--json")
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize(("status", "name"), [("importing", "IMPORT_IN_PROGRESS"),
                                              ("forking", "FORK_IN_PROGRESS")])
def test_not_ready_repos_carry_the_published_codes(status: str, name: str) -> None:
    # A fork holds "forking" only inside its own request (hardlinks take milliseconds), so
    # the rule is checked where it lives rather than by racing a request against a fork.
    repo = RepoRow("0" * 32, "a" * 32, "default", "r", None, "main", False, None, status, None,
                   0, 0, 0, 0, 0, 0, None)
    with pytest.raises(DomainConflict) as raised:
        require_ready(repo)
    assert raised.value.code == PUBLISHED_ERRORS[name][0] and raised.value.retriable is True


def helper_request(remote: str) -> str:
    parts = urlsplit(remote)
    return f"protocol={parts.scheme}\nhost={parts.netloc}\npath={parts.path.lstrip('/')}\n\n"


def test_credential_helper_with_a_cloudflare_login(import_server: Server, tmp_path: Path,
                                                   unique_name: str) -> None:
    env = client_env(import_server, tmp_path / "home")
    for key in ("ARTIFACTD_URL", "ARTIFACTD_ACCOUNT_ID", "ARTIFACTD_API_TOKEN"):
        del env[key]
    env.update(cloudflare_env(import_server))
    with v4(import_server) as c:
        remote = ok(c.post("/repos", json={"name": unique_name}))["remote"]
    got = subprocess.run(["git-credential-artifactd", "get"], input=helper_request(remote), env=env,
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert "password=art_v1_" in got.stdout
    # A remote of another repo name, or of a foreign host, gets no answer.
    for other in (remote.replace(unique_name, unique_name + "-no"),
                  "https://github.com/cloudflare/workers-sdk.git"):
        quiet = subprocess.run(["git-credential-artifactd", "get"], input=helper_request(other),
                               env=env, capture_output=True, text=True, timeout=60)
        assert quiet.returncode == 0 and quiet.stdout == "", quiet.stderr


def test_credential_helper_claims_changelog_remotes_only_on_its_server() -> None:
    def wanted(host: str, path: str, server: str) -> object:
        return match({"protocol": "https", "host": host, "path": path}, "a" * 32, server)

    found = wanted("artifacts.example.com", "default/repo.git", "artifacts.example.com")
    assert found is not None and (found.namespace, found.repo) == ("default", "repo")  # type: ignore[attr-defined]
    assert wanted("github.com", "cloudflare/workers-sdk.git", "artifacts.example.com") is None
    assert wanted("artifacts.example.com", "default/repo", "artifacts.example.com") is None


def test_sdk_takes_account_and_namespace_from_a_v4_base_url(
    import_server: Server, unique_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ARTIFACTS_BASE_URL`` as the older docs (and the README) export it."""
    for key in [k for k in os.environ if k.startswith("ARTIFACTD_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("ARTIFACTS_BASE_URL", import_server.ns_url(NAMESPACE))
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", import_server.token)
    with Artifacts() as artifacts:
        assert artifacts.account_id == import_server.account_id
        assert artifacts.namespace == NAMESPACE and artifacts.base_url == import_server.url
        assert artifacts.create(unique_name).name == unique_name
    with v1(import_server) as c:
        assert ok(c.get(f"/repos/{unique_name}"))["name"] == unique_name
