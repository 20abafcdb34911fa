"""The blocking SDK (``artifactd.Artifacts``) against a real server: every method, the errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import artifactd
from artifactd import (
    Artifacts,
    AuthenticationError,
    Commit,
    ConfigurationError,
    Conflict,
    ConnectError,
    CreateRepoResult,
    CreateTokenResult,
    ImportFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Repo,
    RepoInfo,
    Timeout,
    Tree,
    UnexpectedResponse,
    ValidationError,
    WaitTimeout,
    authenticated_remote,
    token_expires_at,
    token_secret,
)
from tests.clientutil import (
    closed_port_url,
    git_source,
    make_source_repo,
    proxy_502,
    push_files,
    silent_server,
)
from tests.conftest import IMPORT_SERVER_RATE
from tests.harness import Server

TOKEN = re.compile(r"art_v1_[0-9a-f]{40}\?expires=\d+")
EXPECTED_EXPORTS = {
    "__version__",
    # clients and repo handles
    "Artifacts", "AsyncArtifacts", "Repo", "AsyncRepo",
    # results
    "RepoInfo", "RepoPage", "CreateRepoResult", "CreateTokenResult", "TokenInfo", "TokenList",
    "Commit", "Person", "LogPage", "Tree", "TreeEntry",
    # errors
    "ArtifactsError", "APIError", "ValidationError", "AuthenticationError", "PermissionDenied",
    "NotFound", "Conflict", "PayloadTooLarge", "RateLimited", "ServerError", "UnexpectedResponse",
    "TransportError", "ConnectError", "Timeout", "ImportFailed", "WaitTimeout", "ConfigurationError",
    # retries
    "RetryPolicy", "Retrying",
    # helpers
    "token_secret", "token_expires_at", "authenticated_remote",
    # webhooks (docs/events.md)
    "verify_webhook", "WebhookVerificationError",
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Smart-HTTP base URL serving ``upstream.git`` (one commit with README.md)."""
    root = tmp_path_factory.mktemp("sources")
    make_source_repo(tmp_path_factory.mktemp("home"), root, "upstream", {"README.md": "upstream\n"})
    with git_source(root) as url:
        yield url


@pytest.fixture
def artifacts(sqlite_server: Server) -> Iterator[Artifacts]:
    with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
        yield client


def test_public_exports_are_exactly_the_sdk() -> None:
    assert set(artifactd.__all__) == EXPECTED_EXPORTS
    assert len(artifactd.__all__) == len(EXPECTED_EXPORTS)
    for name in artifactd.__all__:
        assert getattr(artifactd, name) is not None
    assert issubclass(artifactd.NotFound, artifactd.APIError)
    assert issubclass(artifactd.APIError, artifactd.ArtifactsError)
    assert issubclass(artifactd.ConnectError, artifactd.TransportError)


def test_configuration_from_environment(sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTD_URL", sqlite_server.url + "/client/v4/")
    monkeypatch.setenv("ARTIFACTD_ACCOUNT_ID", sqlite_server.account_id)
    monkeypatch.setenv("ARTIFACTD_API_TOKEN", sqlite_server.token)
    monkeypatch.setenv("ARTIFACTD_NAMESPACE", "env-ns")
    with Artifacts() as client:
        assert client.base_url == sqlite_server.url  # a URL ending in /client/v4 is accepted
        assert client.namespace == "env-ns"
        assert client.account_id == sqlite_server.account_id
        assert sqlite_server.token not in repr(client)
        assert client.list().repos == []
    with Artifacts(namespace="other") as client:
        assert client.namespace == "other"


def test_missing_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ARTIFACTD_URL", "ARTIFACTD_ACCOUNT_ID", "ARTIFACTD_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as info:
        Artifacts(base_url="http://127.0.0.1:1")
    assert "account_id (or ARTIFACTD_ACCOUNT_ID)" in str(info.value)
    assert "api_token (or ARTIFACTD_API_TOKEN)" in str(info.value)
    for bad in ("ftp://example.com", "http://[bad", "http://host:notaport", "localhost:8787"):
        with pytest.raises(ConfigurationError, match="base URL must look like"):
            Artifacts(bad, "a" * 32, "artd_x")
    with_userinfo = Artifacts("http://user:secret@127.0.0.1:1", "a" * 32, "artd_x")
    assert "secret" not in repr(with_userinfo)
    with_userinfo.close()


def test_create_get_info_delete(artifacts: Artifacts, unique_name: str) -> None:
    created = artifacts.create(
        unique_name, description="Repository for automation experiments", read_only=False,
        default_branch="main",
    )
    assert isinstance(created, CreateRepoResult)
    assert created.name == unique_name and created.namespace == "default"
    assert created.default_branch == "main"
    assert created.remote.endswith(f"/git/{artifacts.account_id}/default/{unique_name}.git")
    assert TOKEN.fullmatch(created.token)
    assert created.token not in repr(created)
    assert created.expires_at is not None and created.expires_at > datetime.now(UTC)
    assert created.objects is None

    repo = artifacts.get(unique_name)
    assert isinstance(repo, Repo) and isinstance(repo, RepoInfo)
    assert (repo.id, repo.name, repo.remote, repo.default_branch) == (
        created.id, unique_name, created.remote, "main")
    assert repo.description == "Repository for automation experiments"
    assert repo.status == "ready" and repo.read_only is False and repo.last_push_at is None
    assert repo.created_at is not None and repo.created_at.tzinfo is not None
    assert repo.to_json()["name"] == unique_name

    info = artifacts.info(unique_name)
    assert info.id == created.id and info.status == "ready"

    assert artifacts.delete(unique_name) is True
    assert artifacts.delete(unique_name) is False
    with pytest.raises(NotFound) as missing:
        artifacts.get(unique_name)
    assert missing.value.code == 10200 and missing.value.status == 404
    assert "not found" in str(missing.value) and "(code 10200)" in str(missing.value)


def test_list_pages_and_iterate(artifacts: Artifacts, unique_name: str) -> None:
    names = [f"{unique_name}-{i}" for i in range(3)]
    for name in names:
        artifacts.create(name)
    first = artifacts.list(limit=2, search=unique_name, sort="name", direction="asc")
    assert [r.name for r in first] == names[:2] and len(first) == 2
    assert all(r.status == "ready" for r in first.repos)
    assert first.cursor is not None and first.per_page == 2
    second = artifacts.list(limit=2, cursor=first.cursor, search=unique_name, sort="name",
                            direction="asc")
    assert [r.name for r in second] == names[2:] and second.cursor is None
    everything = list(artifacts.iter_repos(search=unique_name, sort="name", direction="asc", page_size=1))
    assert [r.name for r in everything] == names


def test_tokens_create_list_revoke(artifacts: Artifacts, unique_name: str) -> None:
    artifacts.create(unique_name)
    repo = artifacts.get(unique_name)
    minted = repo.create_token("read", 3600)
    assert isinstance(minted, CreateTokenResult)
    assert minted.scope == "read" and TOKEN.fullmatch(minted.plaintext)
    assert minted.plaintext not in repr(minted)
    assert minted.secret == token_secret(minted.plaintext)
    assert minted.expires_at is not None
    assert abs((minted.expires_at - datetime.now(UTC)).total_seconds() - 3600) < 60
    default = repo.create_token()
    assert default.scope == "write"

    listed = repo.list_tokens()
    assert listed.total == 3 and len(listed) == 3  # the create token, read, write
    assert {t.id for t in listed} >= {minted.id, default.id}
    assert all(t.state == "active" for t in listed.tokens)
    assert repo.list_tokens(per_page=1, page=2).tokens[0].id in {t.id for t in listed}

    assert repo.revoke_token(minted.plaintext) is True  # by plaintext
    assert repo.revoke_token(minted.plaintext) is False  # already revoked
    assert repo.revoke_token(default.id) is True  # by id
    assert repo.revoke_token("0123456789abcdef") is False  # unknown id
    assert repo.revoke_token("art_v1_" + "0" * 40) is False  # unknown plaintext
    states = {t.id: t.state for t in repo.list_tokens(state="all")}
    assert states[minted.id] == "revoked" and states[default.id] == "revoked"

    third = repo.create_token("write", 120)
    assert artifacts.revoke_token(third.id) is True  # the namespace-level REST route, by id
    assert artifacts.revoke_token(third.id) is False


def test_revoke_token_is_scoped_to_the_repo(artifacts: Artifacts, unique_name: str) -> None:
    artifacts.create(unique_name + "-a")
    artifacts.create(unique_name + "-b")
    a, b = artifacts.get(unique_name + "-a"), artifacts.get(unique_name + "-b")
    token = a.create_token("read", 600)
    assert b.revoke_token(token.plaintext) is False
    assert b.revoke_token(token.id) is False
    assert a.list_tokens().total == 2


def test_with_namespace_shares_the_connection(artifacts: Artifacts, unique_name: str) -> None:
    other = artifacts.with_namespace("sdk-other")
    created = other.create(unique_name)
    assert created.namespace == "sdk-other" and "/sdk-other/" in created.remote
    assert other.get(unique_name).namespace == "sdk-other"
    with pytest.raises(NotFound):
        artifacts.get(unique_name)
    other.close()  # a view leaves the connections to its parent
    assert artifacts.list(limit=1) is not None


def test_content_reads(artifacts: Artifacts, unique_name: str, tmp_path: Path) -> None:
    created = artifacts.create(unique_name)
    sha = push_files(tmp_path, created.remote, created.token,
                     {"README.md": "# hello\n", "src/app.py": "print('hi')\n"}, "First commit")
    repo = artifacts.get(unique_name)
    page = repo.log()
    assert [c.sha for c in page] == [sha] and page.has_more is False
    commit = repo.commit(sha)
    assert isinstance(commit, Commit) and commit.subject == "First commit"
    assert commit.author.name == "Test Author" and commit.parents == []
    tree = repo.tree(commit.tree)
    assert isinstance(tree, Tree)
    assert {e.name: e.type for e in tree} == {"README.md": "blob", "src": "tree"}
    assert repo.blob(tree["README.md"].sha) == b"# hello\n"
    assert repo.file("src/app.py") == b"print('hi')\n"
    assert repo.file("README.md", ref="main") == b"# hello\n"
    assert repo.raw("main", "src/app.py") == b"print('hi')\n"
    with pytest.raises(NotFound) as missing:
        repo.file("nope.txt")
    assert missing.value.code == 10200


def test_fork(artifacts: Artifacts, unique_name: str, tmp_path: Path) -> None:
    created = artifacts.create(unique_name)
    push_files(tmp_path, created.remote, created.token, {"README.md": "baseline\n"})
    baseline = artifacts.get(unique_name)
    forked = baseline.fork(unique_name + "-fork", description="Fork for testing",
                           default_branch_only=True, read_only=False)
    assert isinstance(forked, CreateRepoResult)
    assert forked.name == unique_name + "-fork" and TOKEN.fullmatch(forked.token)
    assert forked.objects is not None and forked.objects > 0
    copy = artifacts.get(forked.name)
    assert copy.file("README.md") == b"baseline\n"
    with pytest.raises(Conflict):
        baseline.fork(forked.name)


def test_api_errors_are_typed(sqlite_server: Server, artifacts: Artifacts, unique_name: str) -> None:
    bad = Artifacts(sqlite_server.url, sqlite_server.account_id, "artd_" + "0" * 40)
    with bad, pytest.raises(AuthenticationError) as auth:
        bad.list()
    assert auth.value.code == 11011 and auth.value.status == 401
    assert "artd_" + "0" * 40 not in str(auth.value)

    reader = Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.read_token)
    with reader, pytest.raises(PermissionDenied) as denied:
        reader.create(unique_name)
    assert denied.value.code == 11012

    artifacts.create(unique_name)
    with pytest.raises(Conflict) as taken:
        artifacts.create(unique_name)
    assert taken.value.code == 10201 and taken.value.retriable is False

    with pytest.raises(ValidationError) as invalid:
        artifacts.create("not a valid name!")
    assert invalid.value.status == 400 and invalid.value.pointer == "/name"

    repo = artifacts.get(unique_name)
    with pytest.raises(ValidationError) as ttl:
        repo.create_token("read", 10)
    assert ttl.value.pointer == "/ttl" and ttl.value.status == 400
    with pytest.raises(ValidationError) as typed:  # caught by the SDK before sending
        repo.create_token("read", "60")  # type: ignore[arg-type]
    assert typed.value.status is None and typed.value.pointer == "/ttl"
    with pytest.raises(PayloadTooLarge) as large:  # over the server's max_body_bytes (1 MiB)
        artifacts.create(unique_name + "-big", description="x" * (2 << 20))
    assert large.value.status == 413 and large.value.code == 11005


def test_connection_refused() -> None:
    url = closed_port_url()
    with Artifacts(url, "a" * 32, "artd_" + "1" * 40) as client, pytest.raises(ConnectError) as info:
        client.list()
    assert "connection refused" in str(info.value) and url in str(info.value)
    assert info.value.__cause__ is not None


def test_non_envelope_body() -> None:
    with proxy_502() as url, Artifacts(url, "a" * 32, "artd_" + "1" * 40) as client:
        with pytest.raises(UnexpectedResponse) as info:
            client.create("x")
        assert info.value.status == 502 and info.value.code is None
        assert "502 Bad Gateway" in str(info.value) and "text/html" in str(info.value)
        with pytest.raises(UnexpectedResponse):
            client.delete("x")


def test_timeout() -> None:
    with silent_server() as url, Artifacts(url, "a" * 32, "artd_" + "1" * 40, timeout=0.3) as client, \
            pytest.raises(Timeout) as info:
        client.list()
    assert "within 0.3 s" in str(info.value)


def test_helpers() -> None:
    token = "art_v1_0123456789abcdef0123456789abcdef01234567?expires=1760000000"
    assert token_secret(token) == "art_v1_0123456789abcdef0123456789abcdef01234567"
    assert token_expires_at(token) == datetime.fromtimestamp(1760000000, tz=UTC)
    assert token_expires_at("art_v1_x") is None
    remote = "https://acct.artifacts.example.net/git/default/starter-repo.git"
    assert authenticated_remote(remote, token) == (
        "https://x:art_v1_0123456789abcdef0123456789abcdef01234567"
        "@acct.artifacts.example.net/git/default/starter-repo.git"
    )
    # The spec's shell form: "https://x:${SECRET}@${REMOTE#https://}"
    assert authenticated_remote("http://127.0.0.1:8787/git/a/b/c.git", token).startswith("http://x:art_v1_")
    with pytest.raises(ValueError):
        authenticated_remote("git@example.com:repo.git", token)


def test_exception_messages_never_carry_tokens() -> None:
    from artifactd import APIError
    secret = "art_v1_0123456789abcdef0123456789abcdef01234567?expires=1760000000"
    error = APIError(f"bad token {secret} and artd_{'ab' * 20}", code=1, status=400)
    assert "0123456789abcdef" not in str(error) and "abab" not in repr(error)


def test_import_repo_and_wait(import_server: Server, source: str, unique_name: str) -> None:
    with Artifacts(import_server.url, import_server.account_id, import_server.token) as client:
        started = client.import_repo(f"{source}/upstream.git", unique_name + "-bg", branch="main")
        assert isinstance(started, CreateRepoResult) and TOKEN.fullmatch(started.token)
        assert client.info(unique_name + "-bg").status in ("importing", "ready")

        imported = client.import_repo(f"{source}/upstream.git", unique_name, depth=1, read_only=True,
                                      description="mirror", wait=True, wait_timeout=60)
        assert imported.name == unique_name and imported.default_branch == "main"
        repo = client.get(unique_name)
        assert repo.status == "ready" and repo.read_only is True and repo.description == "mirror"
        assert repo.source is not None and "upstream" in repo.source
        assert repo.file("README.md") == b"upstream\n"


def test_import_failure_is_reported(import_server: Server, tmp_path: Path, unique_name: str) -> None:
    make_source_repo(tmp_path / "home", tmp_path / "root", "broken", {"a.txt": "a\n"})
    with git_source(tmp_path / "root", fail_fetch=True) as url, \
            Artifacts(import_server.url, import_server.account_id, import_server.token) as client:
        with pytest.raises(ImportFailed) as failed:
            client.import_repo(f"{url}/broken.git", unique_name, wait=True, wait_timeout=60)
        assert failed.value.name == unique_name and failed.value.reason
        assert client.info(unique_name).status == "failed"
        with pytest.raises(Conflict) as not_ready:  # get() refuses a repo that is not ready
            client.get(unique_name)
        assert not_ready.value.code == 11034 and not_ready.value.retriable is False


def test_import_refused_url(artifacts: Artifacts, unique_name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        artifacts.import_repo("file:///etc", unique_name)
    assert refused.value.code == 11090 and refused.value.pointer == "/url"


def test_wait_timeout_leaves_the_import_running(import_server: Server, tmp_path: Path,
                                                unique_name: str) -> None:
    make_source_repo(tmp_path / "home", tmp_path / "root", "slow", {"a.txt": "a\n"})
    with git_source(tmp_path / "root", delay=3) as url, \
            Artifacts(import_server.url, import_server.account_id, import_server.token) as client:
        with pytest.raises(WaitTimeout) as waited:
            client.import_repo(f"{url}/slow.git", unique_name, wait=True, wait_timeout=0.5)
        assert "still importing after 0.5 s" in str(waited.value)
        with pytest.raises(Conflict) as busy:
            client.get(unique_name)
        assert busy.value.retriable is True and busy.value.code == 10302
        assert busy.value.status is None  # said by the SDK, from the repo's status
        with pytest.raises(Conflict) as again:  # said by the server
            client.import_repo(f"{url}/slow.git", unique_name)
        assert again.value.status == 409 and again.value.retriable is True


def test_rate_limited(import_server: Server, unique_name: str) -> None:
    with Artifacts(import_server.url, import_server.account_id, import_server.token,
                   namespace=unique_name) as client, pytest.raises(RateLimited) as limited:
        # The limit is per namespace and fixed window; twice the limit crosses it even if a
        # window boundary falls in between.
        for _ in range(2 * IMPORT_SERVER_RATE + 1):
            client.list(limit=1)
    assert limited.value.status == 429 and limited.value.code == 11060
    assert isinstance(limited.value.retry_after, int) and limited.value.retry_after > 0
