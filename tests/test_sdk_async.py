"""The async SDK (``artifactd.AsyncArtifacts``) against a real server: every method, the errors.

The same operations as ``test_sdk_sync.py``, awaited; both clients build their requests in
``artifactd.client._core``, so these tests watch the async I/O path and its handle.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from artifactd import (
    AsyncArtifacts,
    AsyncRepo,
    AuthenticationError,
    Conflict,
    ConnectError,
    ImportFailed,
    NotFound,
    PermissionDenied,
    Timeout,
    UnexpectedResponse,
    ValidationError,
)
from tests.clientutil import (
    closed_port_url,
    git_source,
    make_source_repo,
    proxy_502,
    push_files,
    silent_server,
)
from tests.harness import Server

pytestmark = pytest.mark.anyio
TOKEN = re.compile(r"art_v1_[0-9a-f]{40}\?expires=\d+")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("sources")
    make_source_repo(tmp_path_factory.mktemp("home"), root, "upstream", {"README.md": "upstream\n"})
    with git_source(root) as url:
        yield url


@pytest.fixture
async def artifacts(sqlite_server: Server) -> AsyncIterator[AsyncArtifacts]:
    async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
        yield client


async def test_environment_and_repr(sqlite_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARTIFACTD_URL", sqlite_server.url)
    monkeypatch.setenv("ARTIFACTD_ACCOUNT_ID", sqlite_server.account_id)
    monkeypatch.setenv("ARTIFACTD_API_TOKEN", sqlite_server.token)
    monkeypatch.delenv("ARTIFACTD_NAMESPACE", raising=False)
    async with AsyncArtifacts() as client:
        assert client.namespace == "default" and client.base_url == sqlite_server.url
        assert sqlite_server.token not in repr(client)
        assert (await client.list(limit=1)).per_page == 1


async def test_create_get_list_iterate_delete(artifacts: AsyncArtifacts, unique_name: str) -> None:
    created = await artifacts.create(unique_name, description="d", default_branch="trunk", read_only=True)
    assert TOKEN.fullmatch(created.token) and created.token not in repr(created)
    assert created.default_branch == "trunk"
    repo = await artifacts.get(unique_name)
    assert isinstance(repo, AsyncRepo)
    assert (repo.id, repo.remote, repo.read_only, repo.status) == (created.id, created.remote, True, "ready")
    assert (await artifacts.info(unique_name)).description == "d"
    for i in range(2):
        await artifacts.create(f"{unique_name}-{i}")
    page = await artifacts.list(limit=2, search=unique_name, sort="name", direction="asc")
    assert [r.name for r in page] == [unique_name, f"{unique_name}-0"] and page.cursor
    names = [r.name async for r in artifacts.iter_repos(search=unique_name, sort="name",
                                                          direction="asc", page_size=1)]
    assert names == [unique_name, f"{unique_name}-0", f"{unique_name}-1"]
    assert await artifacts.delete(unique_name) is True
    assert await artifacts.delete(unique_name) is False
    with pytest.raises(NotFound) as missing:
        await artifacts.get(unique_name)
    assert missing.value.code == 10200


async def test_tokens(artifacts: AsyncArtifacts, unique_name: str) -> None:
    await artifacts.create(unique_name)
    repo = await artifacts.get(unique_name)
    minted = await repo.create_token("read", 3600)
    assert minted.scope == "read" and TOKEN.fullmatch(minted.plaintext)
    listed = await repo.list_tokens()
    assert listed.total == 2 and minted.id in {t.id for t in listed}
    assert await repo.revoke_token(minted.plaintext) is True
    assert await repo.revoke_token(minted.id) is False
    other = await repo.create_token()
    assert other.scope == "write"
    assert await artifacts.revoke_token(other.id) is True
    assert await artifacts.revoke_token(other.id) is False
    assert {t.state for t in (await repo.list_tokens(state="revoked")).tokens} == {"revoked"}


async def test_with_namespace(artifacts: AsyncArtifacts, unique_name: str) -> None:
    other = artifacts.with_namespace("sdk-async-other")
    created = await other.create(unique_name)
    assert created.namespace == "sdk-async-other"
    await other.aclose()  # a view does not close its parent's connections
    assert (await artifacts.with_namespace("sdk-async-other").get(unique_name)).id == created.id


async def test_content_and_fork(artifacts: AsyncArtifacts, unique_name: str, tmp_path: Path) -> None:
    created = await artifacts.create(unique_name)
    sha = push_files(tmp_path, created.remote, created.token, {"README.md": "async\n", "d/x.txt": "x\n"})
    repo = await artifacts.get(unique_name)
    assert [c.sha for c in await repo.log(limit=5)] == [sha]
    commit = await repo.commit(sha)
    tree = await repo.tree(commit.tree)
    assert sorted(e.name for e in tree) == ["README.md", "d"]
    assert await repo.blob(tree["README.md"].sha) == b"async\n"
    assert await repo.file("d/x.txt", ref="main") == b"x\n"
    assert await repo.raw("main", "README.md") == b"async\n"
    forked = await repo.fork(unique_name + "-fork", default_branch_only=True)
    assert forked.objects and TOKEN.fullmatch(forked.token)
    assert await (await artifacts.get(forked.name)).file("README.md") == b"async\n"


async def test_import(import_server: Server, source: str, unique_name: str, tmp_path: Path) -> None:
    async with AsyncArtifacts(import_server.url, import_server.account_id, import_server.token) as client:
        await client.import_repo(f"{source}/upstream.git", unique_name, wait=True, wait_timeout=60)
        assert await (await client.get(unique_name)).file("README.md") == b"upstream\n"
        started = await client.import_repo(f"{source}/upstream.git", unique_name + "-nowait")
        assert started.name == unique_name + "-nowait"
        make_source_repo(tmp_path / "home", tmp_path / "root", "broken", {"a": "a\n"})
        with git_source(tmp_path / "root", fail_fetch=True) as url, pytest.raises(ImportFailed):
            await client.import_repo(f"{url}/broken.git", unique_name + "-bad", wait=True,
                                     wait_timeout=60)


async def test_errors(sqlite_server: Server, artifacts: AsyncArtifacts, unique_name: str) -> None:
    async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id, "artd_" + "0" * 40) as bad:
        with pytest.raises(AuthenticationError):
            await bad.list()
    async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id,
                              sqlite_server.read_token) as reader:
        with pytest.raises(PermissionDenied):
            await reader.create(unique_name)
    await artifacts.create(unique_name)
    with pytest.raises(Conflict) as taken:
        await artifacts.create(unique_name)
    assert taken.value.code == 10201
    with pytest.raises(ValidationError):
        await artifacts.list(limit=1000)
    async with AsyncArtifacts(closed_port_url(), "a" * 32, "artd_" + "1" * 40) as down:
        with pytest.raises(ConnectError, match="connection refused"):
            await down.list()
    with proxy_502() as url:
        async with AsyncArtifacts(url, "a" * 32, "artd_" + "1" * 40) as proxied:
            with pytest.raises(UnexpectedResponse, match="502 Bad Gateway"):
                await proxied.get("x")
    with silent_server() as url:
        async with AsyncArtifacts(url, "a" * 32, "artd_" + "1" * 40, timeout=0.3) as slow:
            with pytest.raises(Timeout):
                await slow.list()
