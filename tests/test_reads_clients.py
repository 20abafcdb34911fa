"""The read helpers through the SDK (sync and async) and the CLI (`compare`, `archive`)."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from artifactd import Artifacts, AsyncArtifacts, NotFound
from artifactd.cli import main
from tests.clientutil import client_env, run_cli
from tests.harness import Server
from tests.test_reads import Family, family  # noqa: F401 - the shared module fixture

pytestmark = pytest.mark.usefixtures("family")


def test_sync_sdk(sqlite_server: Server, family: Family) -> None:  # noqa: F811
    with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
        child = client.get(family.child.name)
        found = child.compare(f"{family.parent.name}:main", "main")
        assert (found.ahead_by, found.behind_by, found.merge_base) == (2, 1, family.base)
        assert {f.path: f.status for f in found.files}["new.txt"] == "renamed"
        assert [c.subject for c in found.commits] == ["Agent work", "More agent work"]
        patch = child.compare_patch(f"{family.parent.name}:main", "main")
        assert "rename to new.txt" in patch.text and patch.truncated is False
        blame = child.blame("README.md")
        assert blame.line_commit(1).sha == family.base
        assert blame.line_commit(3).summary == "Agent work"
        page = child.walk_tree(family.child_head, limit=2)
        assert len(page) == 2 and page.has_more
        with tarfile.open(fileobj=io.BytesIO(child.archive("main")), mode="r:gz") as tar:
            assert "added.txt" in tar.getnames()


def test_sync_archive_to_a_file(sqlite_server: Server, family: Family, tmp_path: Path) -> None:  # noqa: F811
    with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as client:
        child = client.get(family.child.name)
        target = tmp_path / "out.tar.gz"
        size = child.archive_to(target, "main")
        assert size == target.stat().st_size > 0
        with tarfile.open(target, mode="r:gz") as tar:
            assert "image.bin" in tar.getnames()
        with pytest.raises(NotFound):
            child.archive_to(tmp_path / "missing.zip", "no-such-ref", "zip")
        assert not (tmp_path / "missing.zip").exists()


def test_async_sdk(sqlite_server: Server, family: Family, tmp_path: Path) -> None:  # noqa: F811
    async def go() -> None:
        async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id,
                                  sqlite_server.token) as client:
            child = await client.get(family.child.name)
            found = await child.compare(f"{family.parent.name}:main", "main")
            assert found.head.sha == family.child_head
            assert (await child.blame("new.txt")).ranges[0].original_path == "old.txt"
            page = await child.walk_tree(family.child_head)
            assert {f.path for f in page} >= {"src/lib/deep.py"} and not page.has_more
            assert await child.archive_to(tmp_path / "a.zip", family.base, "zip") > 0
            data = (tmp_path / "a.zip").read_bytes()
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                assert "old.txt" in archive.namelist()
    asyncio.run(go())


def test_cli_compare_and_archive(sqlite_server: Server, family: Family, tmp_path: Path) -> None:  # noqa: F811
    env = client_env(sqlite_server, tmp_path / "home")
    child, parent = family.child.name, family.parent.name
    summary = run_cli(env, "compare", child, f"{parent}:main", "main")
    assert summary.returncode == 0, summary.stderr
    assert "2 ahead, 1 behind" in summary.stderr + summary.stdout
    assert "old.txt -> new.txt" in summary.stdout
    as_json = json.loads(run_cli(env, "compare", child, f"{parent}:main", "main", "--json").stdout)
    assert as_json["merge_base"] == family.base
    patch = run_cli(env, "compare", child, f"{parent}:main", "main", "--patch")
    assert patch.stdout.startswith("diff --git")
    out = tmp_path / "a.zip"
    made = run_cli(env, "archive", child, "main", "--format", "zip", "-o", str(out))
    assert made.returncode == 0, made.stderr
    with zipfile.ZipFile(out) as archive:
        assert "image.bin" in archive.namelist()
    missing = run_cli(env, "compare", child, "nope-repo:main", "main")
    assert missing.returncode == 4 and "not found" in missing.stderr.lower()
    for command in ("compare", "archive"):
        result = CliRunner().invoke(main, [command, "--help"])
        assert "Examples:" in result.output and f"artifactd {command}" in result.output
