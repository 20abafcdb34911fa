"""The writes through the SDK (sync and async) and the CLI (``artifactd commit``/``merge``)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from artifactd.client import Artifacts, AsyncArtifacts, Delete, Move, Put
from artifactd.client import Conflict as ConflictError
from tests.clientutil import client_env, run_cli
from tests.gitutil import Git
from tests.harness import Server
from tests.seed import clone, seeded


def _name(prefix: str) -> str:
    return f"{prefix}-{random.randrange(1 << 30)}"


def test_sync_sdk_writes(sqlite_server: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    repo_row, head = seeded(sqlite_server, git, tmp_path / "seed", _name("sdk"),
                            {"a.txt": "a\n", "b.txt": "b\n"})
    with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
        repo = client.get(repo_row.name)
        made = repo.commit_files("main", "SDK commit", [
            Put("bin.dat", b"\x00\x01"), Put("run.sh", "#!/bin/sh\n", "100755"),
            Delete("a.txt"), Move("b.txt", "c.txt")], expected_head=head,
            author={"name": "SDK", "email": "sdk@example.com"})
        assert made.parents == [head] and made.branch == "main"
        with pytest.raises(ConflictError):
            repo.commit_files("main", "stale", [Put("x", "x")], expected_head=head)
        branch = repo.create_branch("dev", "main")
        assert branch.target == made.sha
        assert [r.name for r in repo.list_refs("branches").refs] == ["dev", "main"]
        topic = repo.commit_files("dev", "on dev", [Put("dev.txt", "d")])
        dry = repo.merge("dev", dry_run=True)
        assert dry.mergeable and dry.sha is None and dry.fast_forward
        merged = repo.merge("dev", strategy="fast-forward")
        assert merged.sha == topic.sha
        note = repo.put_note(topic.sha, "prompt")
        assert repo.get_note(topic.sha).message == "prompt\n"
        assert repo.delete_note(topic.sha).note_sha == note.note_sha
        assert repo.delete_ref("dev").ref == "refs/heads/dev"
        moved = repo.move_ref("main", head, force=True, expected=topic.sha)
        assert moved.target == head
    work = clone(git, repo_row, tmp_path / "check")
    git.run("fsck", "--strict", cwd=work)
    assert git.out("rev-parse", "HEAD", cwd=work) == head


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_sdk_writes(sqlite_server: Server, tmp_path: Path, anyio_backend: str) -> None:
    git = Git(tmp_path / "home")
    repo_row, head = seeded(sqlite_server, git, tmp_path / "seed", _name("asdk"))
    async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id,
                              sqlite_server.token) as client:
        repo = await client.get(repo_row.name)
        made = await repo.commit_files("main", "async", [Put("x.txt", "x")])
        assert made.parents == [head]
        fork = _name("afork")
        await repo.fork(fork)
        forked = await client.get(fork)
        agent = await forked.commit_files("main", "agent", [Put("agent.txt", "agent")])
        await repo.commit_files("main", "base moves", [Put("y.txt", "y")])
        merged = await repo.merge(f"{fork}:main", message="take the agent's work")
        assert merged.mergeable and merged.sha
        refs = await repo.list_refs()
        assert [r.target for r in refs.refs if r.name == "main"] == [merged.sha]
        note = await repo.put_note(agent.sha, "from the agent", notes_ref="agents")
        assert (await repo.get_note(agent.sha, "agents")).notes_commit == note.notes_commit
        branch = await repo.create_branch("side", head)
        assert (await repo.move_ref("side", merged.sha)).target == merged.sha
        assert (await repo.delete_ref("side", expected=merged.sha)).name == "side"
        assert branch.name == "side"
        await repo.delete_note(agent.sha, "agents")
    work = clone(git, repo_row, tmp_path / "check")
    assert (work / "agent.txt").read_text() == "agent"


def test_cli_commit_and_merge(sqlite_server: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    repo_row, head = seeded(sqlite_server, git, tmp_path / "seed", _name("cli"),
                            {"README.md": "base\n", "old.txt": "old\n"})
    env = client_env(sqlite_server, tmp_path / "cli")
    (tmp_path / "report.md").write_bytes(b"# report\n")
    made = run_cli(env, "commit", repo_row.name, "-b", "topic", "--base", "main", "-m", "Report",
                   "--put", f"report.md={tmp_path / 'report.md'}", "--put-text", "t.txt=text",
                   "--delete", "old.txt", "--author", "CLI User <cli@example.com>", "--json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["branch"] == "topic" and result["parents"] == [head]
    piped = run_cli(env, "commit", repo_row.name, "-b", "main", "-m", "stdin",
                    "--put", "README.md=-", input="ours\n")
    assert piped.returncode == 0, piped.stderr
    conflict = run_cli(env, "commit", repo_row.name, "-b", "topic", "-m", "theirs",
                       "--put-text", "README.md=theirs")
    assert conflict.returncode == 0, conflict.stderr
    dry = run_cli(env, "merge", repo_row.name, "topic", "--dry-run", "--json")
    assert dry.returncode == 5, dry.stderr
    shown = json.loads(dry.stdout)
    assert shown["mergeable"] is False and [c["path"] for c in shown["conflicts"]] == ["README.md"]
    refused = run_cli(env, "merge", repo_row.name, "topic")
    assert refused.returncode == 5 and "README.md" in refused.stderr
    bad = run_cli(env, "commit", repo_row.name, "-b", "main", "-m", "x", "--put-text", "../x=1")
    assert bad.returncode == 2 and "path" in bad.stderr
    nothing = run_cli(env, "commit", repo_row.name, "-b", "main", "-m", "x")
    assert nothing.returncode == 2
    # Resolve by rewriting README on topic, then merge for real.
    run_cli(env, "commit", repo_row.name, "-b", "topic", "-m", "resolve",
            "--put-text", "README.md=ours\n")
    done = run_cli(env, "merge", repo_row.name, "topic", "-m", "Merge topic")
    assert done.returncode == 0, done.stderr
    sha = done.stdout.strip()
    work = clone(git, repo_row, tmp_path / "check")
    assert git.out("rev-parse", "HEAD", cwd=work) == sha
    assert git.out("log", "-1", "--format=%s", cwd=work) == "Merge topic"
    assert (work / "report.md").read_text() == "# report\n" and not (work / "old.txt").exists()
