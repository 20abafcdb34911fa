"""Events on PostgreSQL with two server workers (issue 14): each event goes out once per
subscription in the normal case, the pull queue reads every event once, and outbox seqs
become visible in order (a cursor never passes an event that commits later)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select, text

from artifactd.storage.db import make_engine, migrate
from artifactd.storage.metadata import MetadataStore, OutboxRow
from artifactd.storage.schema import event_outbox
from tests.harness import Postgres, Server, start_server
from tests.processes import kill_all
from tests.test_event_stream import Receiver, drain, subscribe, wait_for

CREATORS = 6
CREATES_EACH = 20


@pytest.fixture(scope="module")
def pg_workers(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("pg-workers"), args=("--workers", "2"),
                          database_url=postgres.new_database(),
                          extra_env={"ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"})
    yield server
    server.stop()


def _create_many(server: Server, prefix: str) -> set[str]:
    """Concurrent creates: both workers write outbox rows at the same time."""
    made: list[str] = []
    lock = threading.Lock()

    def creator(n: int) -> None:
        with httpx.Client(base_url=server.ns_url(), timeout=60,
                          headers={"Authorization": f"Bearer {server.token}"}) as c:
            for i in range(CREATES_EACH):
                name = f"{prefix}-{n}-{i}"
                r = c.post("/repos", json={"name": name})
                assert r.status_code == 200, r.text
                with lock:
                    made.append(name)

    threads = [threading.Thread(target=creator, args=(n,)) for n in range(CREATORS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return set(made)


def test_two_workers_deliver_each_event_once(pg_workers: Server, unique_name: str) -> None:
    server = pg_workers
    receiver = Receiver()
    try:
        hook = subscribe(server, source={"type": "artifacts", "namespace": "default"},
                         event_types=["cf.artifacts.repo.created"],
                         destination={"type": "webhook", "url": receiver.url})
        queue = subscribe(server, source={"type": "artifacts", "namespace": "default"},
                          event_types=["cf.artifacts.repo.created"], destination={"type": "queue"})
        made = _create_many(server, unique_name)

        def names() -> set[str]:
            return {e["source"]["repoName"] for e in receiver.events()}

        wait_for(lambda: made <= names(), 120)
        ids = Counter(e["id"] for e in receiver.events())
        duplicates = sum(n - 1 for n in ids.values())
        print(f"{len(made)} creates, {sum(ids.values())} deliveries, {duplicates} duplicates")
        assert duplicates == 0, ids.most_common(3)
        assert len(ids) == len(made)
        for headers, body in receiver.requests:
            assert headers["webhook-id"] == json.loads(body)["id"]
        # The pull queue: every event once, in outbox order, whichever worker answers.
        got = drain(server, queue["id"], len(made), wait=60)
        assert sorted(e["source"]["repoName"] for e in got) == sorted(made)
        assert len({e["id"] for e in got}) == len(got)
        assert {e["id"] for e in got} == set(ids)
        with httpx.Client(base_url=server.account_url, timeout=30,
                          headers={"Authorization": f"Bearer {server.token}"}) as c:
            log = c.get(f"/subscriptions/{hook['id']}/deliveries", params={"limit": 500}).json()
            delivered = [d for d in log["result"] if d["outcome"] == "delivered"]
            assert len(delivered) == len(made)
            for sub_id in (hook["id"], queue["id"]):
                assert c.delete(f"/subscriptions/{sub_id}").status_code == 200
    finally:
        receiver.stop()


def _outbox_row(name: str) -> OutboxRow:
    return OutboxRow(id=f"evt_{name}", account_id="a" * 32, type="cf.artifacts.repo.created",
                     namespace="default", repo_name=name, payload="{}", created_us=1)


def _lock_waiters(engine: Engine) -> int:
    """Backends of this database waiting on a lock, each time in a transaction of its own:
    PostgreSQL keeps one snapshot of pg_stat_activity for a whole transaction, so polling in
    one transaction would never see a wait that began after the first poll."""
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()")).scalar_one())


def test_outbox_seqs_become_visible_in_order(postgres: Postgres, tmp_path: Path) -> None:
    """Transaction 1 takes a seq and stays open; transaction 2 takes the next one. Were 2 to
    commit first, a reader would see seq N+1 without N and move its cursor past N, which
    then commits unseen: so 2 must wait for 1."""
    engine = make_engine(postgres.new_database())
    migrate(engine)
    store = MetadataStore(engine)
    finished = threading.Event()
    try:
        with engine.begin() as first:
            store._write_outbox(first, [_outbox_row("first")])

            def second() -> None:
                with engine.begin() as conn:
                    store._write_outbox(conn, [_outbox_row("second")])
                finished.set()

            # Polled once before the second transaction starts, as a loaded machine may do:
            # each poll must see pg_stat_activity afresh.
            assert _lock_waiters(engine) == 0
            thread = threading.Thread(target=second)
            thread.start()
            # Until the second transaction is waiting on a lock, or done.
            wait_for(lambda: finished.is_set() or _lock_waiters(engine), 60)
            with engine.connect() as watcher:
                visible = watcher.execute(select(func.count()).select_from(event_outbox)).scalar_one()
            assert not finished.is_set(), "the later seq committed before the earlier one"
            assert visible == 0
        thread.join(30)
        assert finished.is_set()
        with engine.connect() as conn:
            rows = conn.execute(select(event_outbox.c.seq, event_outbox.c.repo_name)
                                .order_by(event_outbox.c.seq)).all()
        assert [r.repo_name for r in rows] == ["first", "second"]
    finally:
        engine.dispose()


def _delivery_workers(data_dir: Path) -> list[int]:
    """pids of live delivery worker processes of ``data_dir`` (found from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
            alive = "State:\tZ" not in (proc / "status").read_text()
        except OSError:
            continue
        if b"artifactd.services.events.webhook_worker" in cmdline and str(data_dir).encode() in environ \
                and alive:
            found.append(int(proc.name))
    return found


def test_delivery_worker_reports_restarts_and_dies_with_the_server(tmp_path: Path) -> None:
    """Delivery runs in a worker process of its own: its counts reach the server's /metrics,
    it is started again when it dies, and it ends when the server is killed."""
    data_dir = tmp_path / "data"
    server = start_server(data_dir, extra_env={"ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1"})
    receiver = Receiver()
    try:
        subscribe(server, source={"type": "artifacts"}, event_types=["cf.artifacts.repo.created"],
                  destination={"type": "webhook", "url": receiver.url})
        with server.client() as c:
            assert c.post("/repos", json={"name": "first"}).status_code == 200
        wait_for(lambda: len(receiver.requests) == 1)
        delivered = 'artifactd_event_deliveries_total{outcome="delivered"}'
        wait_for(lambda: server.metric(delivered) >= 1)
        (worker,) = _delivery_workers(data_dir)
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: [pid for pid in _delivery_workers(data_dir) if pid != worker])
        with server.client() as c:
            assert c.post("/repos", json={"name": "second"}).status_code == 200
        wait_for(lambda: {json.loads(b)["source"]["repoName"] for _, b in receiver.requests}
                 >= {"first", "second"}, 60)
        (replacement,) = _delivery_workers(data_dir)
        assert server.process is not None
        server.process.kill()
        server.process.wait()
        wait_for(lambda: replacement not in _delivery_workers(data_dir))
    finally:
        kill_all(_delivery_workers(data_dir))
        server.stop()
        receiver.stop()
