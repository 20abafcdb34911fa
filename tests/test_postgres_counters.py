"""PostgreSQL without a write per request: batched rate counters, no ping per checkout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from artifactd.storage.db import IDLE_PING_S
from tests.harness import Postgres, Server, start_server

LIMIT = 20


@pytest.fixture(scope="module")
def pg_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    url = postgres.new_database()
    server = start_server(tmp_path_factory.mktemp("pg-counters"), database_url=url,
                          extra_env={"ARTIFACTD_RATE_LIMIT_CONTROL": f"{LIMIT}/1h"})
    yield server, url
    server.stop()


def stored_count(url: str, key: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT coalesce(sum(count), 0) FROM rate_windows WHERE key = %s",
                           (key,)).fetchone()
    return int(row[0]) if row else 0


def test_one_process_counts_exactly_and_flushes_every_hit(pg_server: tuple[Server, str]) -> None:
    server, url = pg_server
    headers = {"Authorization": f"Bearer {server.token}"}
    statuses = [httpx.get(server.ns_url("exact") + "/repos", headers=headers).status_code
                for _ in range(LIMIT + 10)]
    assert statuses == [200] * LIMIT + [429] * 10
    # The database learns every hit (429s included) off the request path, shortly after.
    key = f"control:{server.account_id}:exact"
    deadline = time.monotonic() + 10
    while stored_count(url, key) < LIMIT + 10:
        assert time.monotonic() < deadline, stored_count(url, key)
        time.sleep(0.1)
    assert stored_count(url, key) == LIMIT + 10


def test_dead_idle_connections_are_replaced(pg_server: tuple[Server, str]) -> None:
    server, url = pg_server
    headers = {"Authorization": f"Bearer {server.token}"}
    assert httpx.get(server.ns_url("alive") + "/repos", headers=headers).status_code == 200
    database = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
    assert killed and killed[0] >= 1
    time.sleep(IDLE_PING_S + 0.5)  # the pool's connections are now idle long enough to be checked
    statuses = [httpx.get(server.ns_url("alive") + "/repos", headers=headers).status_code
                for _ in range(5)]
    assert statuses == [200] * 5


def _terminate_server_connections(url: str) -> int:
    database = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (database,)).fetchone()
    return int(killed[0]) if killed else 0


def test_lookups_retry_once_on_a_fresh_connection_after_the_backend_dies(
    pg_server: tuple[Server, str],
) -> None:
    """The hot lookups (storage/pglookups.py) hold connections without pinging them: one
    that died between two requests is dropped and the lookup runs again on a new one, at
    once (no idle time needed, unlike the pool's check above)."""
    server, url = pg_server
    headers = {"Authorization": f"Bearer {server.token}"}
    created = httpx.post(server.ns_url("retry") + "/repos", headers=headers, json={"name": "kept"})
    assert created.status_code == 200, created.text
    for _round in range(3):
        with httpx.Client(headers=headers) as client:
            assert client.get(server.ns_url("retry") + "/repos/kept").status_code == 200
            assert _terminate_server_connections(url) >= 1
            # The token and the repo lookups each meet a dead held connection first.
            response = client.get(server.ns_url("retry") + "/repos/kept")
            assert response.status_code == 200, response.text
            assert response.json()["result"]["name"] == "kept"


def test_lookups_answer_503_while_the_database_is_unreachable(postgres: Postgres) -> None:
    """Both tries failing is the database being down: the retriable 503, not a 500."""
    from sqlalchemy import bindparam, select
    from sqlalchemy.exc import OperationalError

    from artifactd.storage.db import make_engine
    from artifactd.storage.pglookups import PgLookups
    from artifactd.storage.schema import api_tokens

    engine = make_engine("postgresql://postgres@127.0.0.1:1/nowhere")
    lookups = PgLookups(engine)
    lookup = lookups.lookup(select(api_tokens).where(api_tokens.c.secret_hash == bindparam("h")))
    with pytest.raises(OperationalError):
        lookups.first(lookup, {"h": "x"})
    lookups.close()
    engine.dispose()


def test_concurrent_creates_in_one_namespace_do_not_queue_on_one_row(postgres: Postgres) -> None:
    """A create adds to one shard of its namespace's repo count, picked by repo id: a second
    create's count update must not wait for the first create's commit (it did when the
    count was one ``namespaces`` row, which serialised every create of a namespace behind
    the previous one's WAL flush). The count stays exact."""
    import zlib

    from sqlalchemy import text

    from artifactd.storage.db import make_engine, migrate
    from artifactd.storage.metadata import REPO_COUNT_SHARDS, MetadataStore

    engine = make_engine(postgres.new_database())
    try:
        migrate(engine)
        store = MetadataStore(engine)
        store.ensure_namespace("acct", "ns", 1)
        first = "a" * 32
        second = next(f"{i:032x}" for i in range(1000) if zlib.crc32(f"{i:032x}".encode())
                      % REPO_COUNT_SHARDS != zlib.crc32(first.encode()) % REPO_COUNT_SHARDS)
        with engine.begin() as holding:
            store._add_to_namespace(holding, "acct", "ns", 1, first)
            with engine.begin() as other:
                other.execute(text("SET LOCAL lock_timeout = '5s'"))
                store._add_to_namespace(other, "acct", "ns", 1, second)  # no lock wait
        assert store.count_repos("acct", "ns") == 2
    finally:
        engine.dispose()
