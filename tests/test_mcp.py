"""The MCP server at /mcp, driven by the official SDK's own client over streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.gitutil import Git, Repo, create_repo
from tests.harness import Server
from tests.seed import push
from tests.test_fork import fork, fsck_clone


async def _call(server: Server, token: str, calls: list[tuple[str, dict[str, Any]]]
                ) -> tuple[list[str], list[tuple[bool, Any]]]:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http, \
            streamable_http_client(f"{server.url}/mcp", http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = sorted(t.name for t in (await session.list_tools()).tools)
            results = []
            for name, args in calls:
                out = await session.call_tool(name, args)
                text = "".join(getattr(c, "text", "") for c in out.content)
                payload: Any = out.structured_content if out.structured_content is not None else text
                if not out.is_error and out.structured_content is None:
                    payload = json.loads(text)
                results.append((bool(out.is_error), payload if not out.is_error else text))
            return tools, results


def call(server: Server, token: str, *calls: tuple[str, dict[str, Any]]
         ) -> tuple[list[str], list[tuple[bool, Any]]]:
    return asyncio.run(_call(server, token, list(calls)))


@pytest.fixture(scope="module")
def pair(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, Repo, str]:
    root = tmp_path_factory.mktemp("mcp")
    git = Git(root / "home")
    work = root / "work"
    parent = create_repo(sqlite_server, f"mcp-parent-{random.randrange(1 << 30)}")
    base = git.new_work(work, {"README.md": "# MCP\n", "src/app.py": "print(1)\n"})
    git.run("notes", "add", "-m", "prompt: write the app", base, cwd=work)
    push(git, parent, work, "HEAD:refs/heads/main", "refs/notes/commits:refs/notes/commits")
    child = fork(sqlite_server, parent.name, f"{parent.name}-agent")
    git.commit_files(work, {"src/app.py": "print(2)\n"}, "Agent change")
    push(git, child, work, "HEAD:refs/heads/main")
    return parent, child, base


def test_tools_with_an_api_token(sqlite_server: Server, pair: tuple[Repo, Repo, str]) -> None:
    parent, child, base = pair
    fork_name = f"{parent.name}-via-mcp"
    tools, results = call(
        sqlite_server, sqlite_server.token,
        ("read_file", {"repo": parent.name, "path": "src/app.py"}),
        ("list_tree", {"repo": parent.name, "recursive": True}),
        ("list_tree", {"repo": parent.name, "path": "src"}),
        ("log", {"repo": child.name, "limit": 5}),
        ("compare", {"repo": child.name, "base": f"{parent.name}:main", "head": "main",
                     "patch": True}),
        ("read_notes", {"repo": parent.name, "commit": base}),
        ("read_notes", {"repo": child.name, "commit": "main", "notes_ref": "prompts"}),
        ("fork", {"repo": parent.name, "name": fork_name}),
        ("mint_read_token", {"repo": parent.name, "ttl": 120}),
        ("read_file", {"repo": parent.name, "path": "../etc/passwd"}),
        ("read_file", {"repo": "no-such-repo", "path": "README.md"}),
        ("mint_read_token", {"repo": parent.name, "ttl": 86400}),
    )
    assert tools == ["commit_files", "compare", "create_branch", "fork", "list_tree", "log",
                     "merge", "mint_read_token", "read_file", "read_notes", "write_notes"]
    ok = [r for failed, r in results if not failed]
    assert [failed for failed, _ in results] == [False] * 9 + [True] * 3
    assert ok[0]["content"] == "print(1)\n" and ok[0]["encoding"] == "utf-8"
    assert {e["path"] for e in ok[1]["entries"]} == {"README.md", "src/app.py"}
    assert [e["name"] for e in ok[2]["entries"]] == ["app.py"]
    assert ok[3]["commits"][0]["message"].strip() == "Agent change"
    assert ok[3]["commits"][1]["sha"] == base and ok[3]["has_more"] is False
    assert ok[4]["ahead_by"] == 1 and ok[4]["merge_base"] == base
    assert [f["path"] for f in ok[4]["files"]] == ["src/app.py"]
    assert "-print(1)\n+print(2)" in ok[4]["patch"]
    assert ok[5]["content"].strip() == "prompt: write the app"
    assert ok[6]["content"] is None
    assert ok[7]["name"] == fork_name and ok[7]["token"]
    minted = ok[8]["token"]
    # The minted token reads over git's smart HTTP and the MCP server, and nothing else.
    refs = httpx.get(f"{parent.remote}/info/refs?service=git-upload-pack",
                     headers={"Authorization": f"Bearer {minted}"})
    assert refs.status_code == 200
    # Neither the caller's token nor the minted one reaches the server's log.
    logged = sqlite_server.log_path.read_text(errors="replace")
    assert "/mcp" in logged  # the access log is there
    assert minted.split("?")[0] not in logged and sqlite_server.token not in logged
    assert "Invalid path" in results[9][1]
    assert "must be between 60 and 3600" in results[11][1]
    assert "not found" in results[10][1].lower()


def test_repo_token_limits_tools_to_its_repo_and_scope(
    sqlite_server: Server, pair: tuple[Repo, Repo, str]
) -> None:
    parent, child, _ = pair
    read_token = parent.mint("read")["plaintext"]
    _, results = call(
        sqlite_server, read_token,
        ("read_file", {"repo": parent.name, "path": "README.md"}),
        ("read_file", {"repo": child.name, "path": "README.md"}),
        ("compare", {"repo": parent.name, "base": "main", "head": f"{child.name}:main"}),
        ("fork", {"repo": parent.name, "name": f"{parent.name}-nope"}),
        ("mint_read_token", {"repo": parent.name, "ttl": 60}),
    )
    assert [failed for failed, _ in results] == [False, True, True, True, False]
    assert results[0][1]["content"] == "# MCP\n"
    # Another repo is just missing to a repo token, even the fork of its own repo.
    assert "not found" in results[1][1].lower() and "not found" in results[2][1].lower()
    with sqlite_server.client() as c:
        assert c.get(f"/repos/{parent.name}-nope").status_code == 404


def test_read_api_token_runs_read_tools_only(sqlite_server: Server,
                                             pair: tuple[Repo, Repo, str]) -> None:
    parent, _, _ = pair
    _, results = call(
        sqlite_server, sqlite_server.read_token,
        ("read_file", {"repo": parent.name, "path": "README.md"}),
        ("fork", {"repo": parent.name, "name": f"{parent.name}-read-fork"}),
        ("mint_read_token", {"repo": parent.name}),
        ("read_file", {"repo": parent.name, "path": "README.md", "namespace": "no-such-ns"}),
    )
    assert [failed for failed, _ in results] == [False, True, True, True]
    assert "Artifacts > Edit" in results[1][1] and "Artifacts > Edit" in results[2][1]


def test_unauthenticated_and_bad_tokens_are_refused(sqlite_server: Server, tmp_path: Path) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer art_v1_" + "0" * 40},
                    {"Authorization": "Bearer artd_" + "0" * 40}):
        r = httpx.post(f"{sqlite_server.url}/mcp", json=body, headers={
            **headers, "Accept": "application/json, text/event-stream"})
        assert r.status_code == 401, r.text
        assert r.json()["success"] is False


def _tool_error(text: str) -> str:
    """The error as the server wrote it, without the SDK's "Error executing tool x: "."""
    return text.split(": ", 1)[1] if text.startswith("Error executing tool ") else text


def _put(path: str, content: str) -> dict[str, str]:
    return {"op": "put", "path": path, "content": content}


def test_agent_review_loop_with_write_tools(sqlite_server: Server, tmp_path: Path) -> None:
    """An agent forks the baseline, commits and notes its work with its fork's repo token,
    and the reviewer merges it back with an API token (dry run first), all over MCP."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    baseline = create_repo(sqlite_server, f"mcp-base-{random.randrange(1 << 30)}")
    start = git.new_work(work, {"README.md": "# base\n", "old.txt": "old\n", "c.txt": "c\n"})
    push(git, baseline, work, "HEAD:refs/heads/main")
    agent_name = f"{baseline.name}-agent"
    _, (forked,) = call(sqlite_server, sqlite_server.token,
                        ("fork", {"repo": baseline.name, "name": agent_name}))
    assert forked[0] is False
    agent_token = forked[1]["token"]  # the fork's write-scoped repo token

    _, results = call(
        sqlite_server, agent_token,
        ("commit_files", {"repo": agent_name, "branch": "main", "message": "Agent work",
                          "expected_head": start, "author": {"name": "Agent",
                                                              "email": "agent@example.com"},
                          "changes": [_put("src/new.py", "print('new')\n"),
                                      {"op": "delete", "path": "old.txt"},
                                      {"op": "move", "from": "c.txt", "path": "d/c.txt"},
                                      {"op": "put", "path": "bin.dat", "content": "AAEC/w==",
                                       "encoding": "base64"}]}),
        ("create_branch", {"repo": agent_name, "name": "review", "target": "main"}),
        ("write_notes", {"repo": agent_name, "commit": "main",
                         "content": "prompt: add new.py", "notes_ref": "prompts"}),
        ("read_notes", {"repo": agent_name, "commit": "review", "notes_ref": "prompts"}),
        # The fork's token reaches its own repo only: the baseline is just missing.
        ("commit_files", {"repo": baseline.name, "branch": "main", "message": "sneak",
                          "changes": [_put("x", "x")]}),
        ("merge", {"repo": baseline.name, "head": f"{agent_name}:main", "dry_run": True}),
    )
    assert [failed for failed, _ in results] == [False] * 4 + [True] * 2, results
    made = results[0][1]
    assert made["branch"] == "main" and made["parents"] == [start]
    assert results[1][1] == {"name": "review", "ref": "refs/heads/review", "kind": "branch",
                             "target": made["sha"], "object_type": "commit"}
    assert results[2][1]["notes_ref"] == "refs/notes/prompts"
    assert results[2][1]["commit"] == made["sha"]
    assert results[3][1]["content"].strip() == "prompt: add new.py"
    assert "not found" in results[4][1].lower() and "not found" in results[5][1].lower()

    _, results = call(
        sqlite_server, sqlite_server.token,
        ("merge", {"repo": baseline.name, "head": f"{agent_name}:main", "dry_run": True}),
        ("merge", {"repo": baseline.name, "head": f"{agent_name}:main",
                   "strategy": "fast-forward", "expected_head": start}),
    )
    assert [failed for failed, _ in results] == [False, False], results
    dry, real = results[0][1], results[1][1]
    assert dry["mergeable"] is True and dry["sha"] is None and dry["fast_forward"] is True
    assert real["sha"] == made["sha"]

    # The baseline, cloned with git, holds the agent's commit, whole and valid.
    refs = fsck_clone(git, baseline, tmp_path / "clone")
    assert refs["refs/remotes/origin/main"] == made["sha"]
    clone = tmp_path / "clone"
    assert git.out("log", "-1", "--format=%an <%ae>%n%s", cwd=clone) == (
        "Agent <agent@example.com>\nAgent work")
    files = git.out("ls-tree", "-r", "--name-only", "HEAD", cwd=clone).split()
    assert sorted(files) == ["README.md", "bin.dat", "d/c.txt", "src/new.py"]
    assert (clone / "bin.dat").read_bytes() == bytes([0, 1, 2, 255])
    assert git.out("show", "HEAD:d/c.txt", cwd=clone) == "c"
    baseline.fsck()


def test_write_tools_refuse_bad_input_and_read_tokens(sqlite_server: Server,
                                                      tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, f"mcp-bad-{random.randrange(1 << 30)}")
    head = git.new_work(work, {"a.txt": "base\n"})
    push(git, repo, work, "HEAD:refs/heads/main")
    git.run("checkout", "-q", "-b", "topic", cwd=work)
    git.commit_files(work, {"a.txt": "topic\n"}, "Topic")
    push(git, repo, work, "HEAD:refs/heads/topic")
    with sqlite_server.client() as c:
        read_only = c.post(f"/repos/{repo.name}/fork", json={"name": f"{repo.name}-ro",
                                                             "read_only": True})
        assert read_only.status_code == 200, read_only.text
    before = repo.refs()
    _, results = call(
        sqlite_server, sqlite_server.token,
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                          "changes": [_put("../etc/passwd", "x")]}),
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                          "changes": [{"op": "put", "path": "b", "content": "%%",
                                       "encoding": "base64"}]}),
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                          "expected_head": "main", "changes": [_put("b", "b")]}),
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                          "expected_head": "0" * 40, "changes": [_put("b", "b")]}),
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                          "changes": [{"op": "delete", "path": "missing.txt"}]}),
        ("commit_files", {"repo": f"{repo.name}-ro", "branch": "main", "message": "m",
                          "changes": [_put("b", "b")]}),
        ("create_branch", {"repo": repo.name, "name": "topic", "target": "main"}),
        ("write_notes", {"repo": repo.name, "commit": "f" * 40, "content": "n"}),
        # A main that moved on: the topic conflicts with it.
        ("commit_files", {"repo": repo.name, "branch": "main", "message": "Main moves",
                          "expected_head": head, "changes": [_put("a.txt", "main\n")]}),
        ("merge", {"repo": repo.name, "head": "topic", "dry_run": True}),
        ("merge", {"repo": repo.name, "head": "topic"}),
    )
    assert [failed for failed, _ in results] == [True] * 8 + [False] * 2 + [True], results
    texts = [_tool_error(text) if failed else "" for failed, text in results]
    assert "11205: Invalid path" in texts[0] and "(at /changes/0/path)" in texts[0]
    assert texts[1].startswith("12002:") and "(at /changes/0/content)" in texts[1]
    assert "(at /expected_head)" in texts[2]
    assert texts[3].startswith("12000:") and "(at /expected_head)" in texts[3]
    assert "(at /changes/0/path)" in texts[4]
    assert texts[5].startswith("11033:")
    assert "(at /name)" in texts[6]
    assert "(at /commit)" in texts[7]
    moved = results[8][1]["sha"]
    dry = results[9][1]
    assert dry["mergeable"] is False and [c["path"] for c in dry["conflicts"]] == ["a.txt"]
    assert "<<<<<<<" in dry["conflicts"][0]["hunks"][0]
    assert texts[10].startswith("12005:")
    conflicts = json.loads(texts[10].split("\n", 1)[1])["conflicts"]
    assert conflicts[0]["path"] == "a.txt"
    assert repo.refs() == {**before, "refs/heads/main": moved}  # nothing else written

    read_token = repo.mint("read")["plaintext"]
    for token in (read_token, sqlite_server.read_token):
        _, results = call(
            sqlite_server, token,
            ("commit_files", {"repo": repo.name, "branch": "main", "message": "m",
                              "changes": [_put("b", "b")]}),
            ("create_branch", {"repo": repo.name, "name": "new", "target": "main"}),
            ("merge", {"repo": repo.name, "head": "topic", "dry_run": True}),
            ("write_notes", {"repo": repo.name, "commit": moved, "content": "n"}),
        )
        assert [failed for failed, _ in results] == [True] * 4, results
        assert all(_tool_error(text).startswith("11012:") for _, text in results), results
    assert repo.refs() == {**before, "refs/heads/main": moved}
    repo.fsck()


def test_write_tools_are_push_events(sqlite_server: Server) -> None:
    """Writes over MCP are accounted as the REST writes are: the spec's pushes-by-repo
    analytics query counts the commit, the branch, the merge and the note (not the dry run)."""
    import time

    from tests.test_analytics import graphql, groups, spec_queries

    namespace = f"mcp-events-{random.randrange(1 << 30)}"
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    with httpx.Client(base_url=sqlite_server.ns_url(namespace), timeout=60, headers={
            "Authorization": f"Bearer {sqlite_server.token}"}) as c:
        assert c.post("/repos", json={"name": "w"}).status_code == 200
    at = {"repo": "w", "namespace": namespace}
    _, results = call(
        sqlite_server, sqlite_server.token,
        ("commit_files", {**at, "branch": "main", "message": "one", "changes": [_put("a", "a")]}),
        ("create_branch", {**at, "name": "side", "target": "main"}),
        ("commit_files", {**at, "branch": "side", "message": "two", "changes": [_put("b", "b")]}),
        ("merge", {**at, "head": "side", "dry_run": True}),
        ("merge", {**at, "head": "side", "strategy": "fast-forward"}),
        ("write_notes", {**at, "commit": "main", "content": "n"}),
    )
    assert [failed for failed, _ in results] == [False] * 6, results
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    query = spec_queries()["ArtifactsPushesByRepo"]
    variables = {"accountTag": sqlite_server.account_id, "datetimeStart": start,
                 "datetimeEnd": end}
    deadline = time.monotonic() + 30
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {g["dimensions"]["repository"]: g["count"]
                  for g in groups(graphql(sqlite_server, query, variables))}
        if counts.get(f"{namespace}/w") == 5:
            break
        time.sleep(0.2)
    assert counts.get(f"{namespace}/w") == 5, counts
