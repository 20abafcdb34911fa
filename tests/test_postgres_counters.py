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
