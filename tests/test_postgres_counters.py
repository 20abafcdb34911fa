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
    """Each writer adds to a shard of its namespace's repo count that no other open
    transaction holds, or to a new one: with 25 transactions open at once, for repo ids
    that all used to pick the same one of 32 shards, none waits for another's commit (which
    serialised creates behind one another's WAL flush). The count stays exact, and later
    writers reuse the shards instead of adding rows."""
    import zlib
    from contextlib import ExitStack

    from sqlalchemy import text

    from artifactd.storage.db import make_engine, migrate
    from artifactd.storage.metadata import MetadataStore

    same_shard = [i for i in (f"{n:032x}" for n in range(5000))
                  if zlib.crc32(i.encode()) % 32 == 0][:25]
    engine = make_engine(postgres.new_database())
    try:
        migrate(engine)
        store = MetadataStore(engine)
        store.ensure_namespace("acct", "ns", 1)
        with ExitStack() as open_transactions:
            for repo_id in same_shard:
                conn = open_transactions.enter_context(engine.begin())
                conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                store._add_to_namespace(conn, "acct", "ns", 1, repo_id)  # no lock wait
        assert store.count_repos("acct", "ns") == 25
        with engine.connect() as conn:
            shards = conn.execute(text("SELECT count(*) FROM namespace_repo_counts")).scalar_one()
        for repo_id in same_shard[:10]:
            with engine.begin() as conn:
                store._add_to_namespace(conn, "acct", "ns", -1, repo_id)
        assert store.count_repos("acct", "ns") == 15
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM namespace_repo_counts")).scalar_one() == shards
    finally:
        engine.dispose()


def test_a_create_is_one_statement_and_a_conflict_changes_nothing(postgres: Postgres) -> None:
    """A create on PostgreSQL (namespace, repo, count shard, token, event) is one statement
    in autocommit, sent on a held psycopg connection (storage/pglookups.py ``write``), not
    through SQLAlchemy; a duplicate name answers REPO_EXISTS and leaves no row of its own.
    The statements are counted from PostgreSQL's own log (``log_statement = all`` on this
    test's database only)."""
    import re

    from sqlalchemy import event, text

    from artifactd.errors import Code, Conflict
    from artifactd.services.access.repo_tokens import new_repo_token
    from artifactd.storage.db import make_engine, migrate
    from artifactd.storage.metadata import MetadataStore, OutboxRow, RepoRow

    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET log_statement = 'all'")
    server_log = postgres.dir / "pg.log"
    engine = make_engine(url)
    migrate(engine)
    store = MetadataStore(engine)
    through_sqlalchemy: list[str] = []
    try:

        def create(repo_id: str) -> None:
            repo = RepoRow(id=repo_id, account_id="acct", namespace="ns", name="same",
                           description=None, default_branch="main", read_only=False,
                           source=None, status="ready", status_reason=None, created_us=1,
                           updated_us=1, last_push_us=0, size_bytes=0, maintained_us=0,
                           pushes_since_maintenance=0, import_spec=None)
            token, secret_hash, _ = new_repo_token(repo_id, "write", 3600, 1)
            outbox = [OutboxRow(id=f"evt_{repo_id}", account_id="acct",
                                type="cf.artifacts.repo.created", namespace="ns",
                                repo_name="same", payload="{}", created_us=1)]
            store.create_repo(repo, token, secret_hash, outbox)

        event.listen(engine, "before_cursor_execute",
                     lambda _c, _cur, statement, *_: through_sqlalchemy.append(statement))
        logged_before = server_log.stat().st_size
        create("a" * 32)
        with server_log.open("rb") as log:
            log.seek(logged_before)
            logged = log.read().decode("utf-8", "replace")
        statements = re.findall(r"LOG:  (?:statement|execute [^:]*): (.*)", logged)
        assert len(statements) == 1 and statements[0].startswith("WITH ns AS"), logged
        assert through_sqlalchemy == []
        with pytest.raises(Conflict) as refused:
            create("b" * 32)
        assert refused.value.code == Code.REPO_EXISTS
        with engine.connect() as conn:
            for table in ("repos", "repo_tokens", "event_outbox", "namespaces"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 1, table
        assert store.count_repos("acct", "ns") == 1
    finally:
        store.close()
        engine.dispose()


def test_a_create_survives_its_held_connection_dying(pg_server: tuple[Server, str]) -> None:
    """A create's held connection (storage/pglookups.py ``write``) that died since its last
    use is retried once on a fresh connection, so a create right after the database cut
    every connection succeeds (through SQLAlchemy's pool it answered 503); the repo exists
    once. (Routes through SQLAlchemy's pool, such as the list, may still answer one 503
    while the pool finds its connections dead: storage/db.py.)"""
    server, url = pg_server
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(headers=headers) as client:
        for n in range(3):
            assert client.post(server.ns_url("survive") + "/repos",
                               json={"name": f"warm-{n}"}).status_code == 200
            assert _terminate_server_connections(url) >= 1
            made = client.post(server.ns_url("survive") + "/repos", json={"name": f"after-{n}"})
            assert made.status_code == 200, made.text
    with psycopg.connect(url) as conn:
        names = [row[0] for row in conn.execute(
            "SELECT name FROM repos WHERE namespace = 'survive' ORDER BY name").fetchall()]
    assert names == sorted([f"after-{n}" for n in range(3)] + [f"warm-{n}" for n in range(3)])
