"""Upgrading a data dir made by an older release: the new server migrates it and serves it all.

The fixture (``tests/fixtures/datadir-<release>.tar.gz``, made by
``tests/fixtures/build_upgrade_fixture.py`` with that release's code) holds API tokens, three
repos in two namespaces, a long-lived repo token, a revoked one and a pushed commit; its
``-postgres`` twin adds the release's PostgreSQL database as a ``pg_dump``. When a
release changes the schema, add its fixture to ``FIXTURES``: every older one must still open.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from artifactd.storage.db import head_revision
from tests.gitutil import Git, basic_remote
from tests.harness import Postgres, Server, artifactd_cmd, free_port

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# (release, database): a fixture per release that changed the schema, on both databases.
RELEASES = [("196a928", "sqlite"), ("196a928", "postgres")]


def load_dump(url: str, dump: str) -> None:
    """Load a ``pg_dump --inserts`` file; psql's own meta-commands (``\\restrict``) are skipped."""
    import psycopg

    statements = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statements.encode())


def schema_revision(url: str | None, data: Path) -> str | None:
    if url is None:
        with sqlite3.connect(data / "artifactd.db") as db:
            return str(db.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None


@pytest.fixture(scope="module", params=RELEASES, ids=["-".join(p) for p in RELEASES])
def upgraded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Server, dict[str, Any], str | None]]:
    release, database = request.param
    root = tmp_path_factory.mktemp(f"upgrade-{release}-{database}")
    suffix = "-postgres" if database == "postgres" else ""
    with tarfile.open(FIXTURES / f"datadir-{release}{suffix}.tar.gz") as archive:
        archive.extractall(root, filter="data")
    manifest = json.loads((root / "fixture.json").read_text())
    data = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    url = None
    if database == "postgres":
        postgres: Postgres = request.getfixturevalue("postgres")
        url = postgres.new_database()
        load_dump(url, (root / "database.sql").read_text())
        env["ARTIFACTD_DATABASE_URL"] = url
    before = schema_revision(url, data)
    server = Server(data_dir=data, port=free_port(), env=env, account_id=manifest["account_id"],
                    token=manifest["edit_token"], read_token=manifest["read_token"])
    server.start()  # the new code: migrates at start, then serves
    yield server, manifest, before
    server.stop()


def test_the_fixture_is_from_an_older_schema_or_the_same(upgraded: tuple[Server, dict[str, Any], str | None]) -> None:
    _server, _manifest, before = upgraded
    assert before is not None
    assert before <= head_revision()


def test_migrate_finds_the_upgraded_data_dir_at_head(upgraded: tuple[Server, dict[str, Any], str | None]) -> None:
    server, _manifest, _before = upgraded
    result = subprocess.run([*artifactd_cmd(), "migrate", "--json", "--data-dir", str(server.data_dir)],
                            env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"before": head_revision(), "after": head_revision(), "changed": False}


def test_old_api_tokens_and_repos(upgraded: tuple[Server, dict[str, Any], str | None]) -> None:
    server, manifest, _before = upgraded
    for token in (manifest["edit_token"], manifest["read_token"]):
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            for namespace, names in manifest["repos"].items():
                page = c.get(server.ns_url(namespace) + "/repos")
                assert page.status_code == 200, page.text
                assert sorted(r["name"] for r in page.json()["result"]) == sorted(names)
    listed = server.admin("api-token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 2


def test_old_repo_tokens_keep_their_state(upgraded: tuple[Server, dict[str, Any], str | None]) -> None:
    server, manifest, _before = upgraded
    with server.client() as c:
        active = c.get("/repos/alpha/tokens").json()["result"]
        revoked = c.get("/repos/alpha/tokens", params={"state": "revoked"}).json()["result"]
    expires = int(manifest["repo_token"].split("?expires=")[1])
    if expires > time.time():
        assert manifest["repo_token_id"] in {t["id"] for t in active}
    assert manifest["revoked_token_id"] in {t["id"] for t in revoked}


def test_the_pushed_commit_clones_and_accepts_a_new_push(
    upgraded: tuple[Server, dict[str, Any], str | None], tmp_path: Path,
) -> None:
    server, manifest, _before = upgraded
    with server.client() as c:
        remote = c.get("/repos/alpha").json()["result"]["remote"]
        fresh = c.post("/tokens", json={"repo": "alpha", "scope": "write", "ttl": 3600}).json()["result"]
    git = Git(tmp_path / "home")
    tokens = [fresh["plaintext"]]
    if int(manifest["repo_token"].split("?expires=")[1]) > time.time():
        tokens.append(manifest["repo_token"])  # the token minted by the older release
    for i, token in enumerate(tokens):
        clone = tmp_path / f"clone{i}"
        git.run("clone", "-q", basic_remote(remote, token), str(clone))
        assert git.out("rev-parse", "HEAD", cwd=clone) == manifest["head"]
        assert (clone / "README.md").read_text() == manifest["readme"]
    clone = tmp_path / "clone0"
    new_head = git.commit_files(clone, {"after-upgrade.txt": "written by the new release\n"}, "After upgrade")
    git.run("push", "-q", "origin", "main", cwd=clone)
    with server.client() as c:
        log = c.get("/repos/alpha/log").json()["result"]
    assert [entry["sha"] for entry in log][:2] == [new_head, manifest["head"]]
