"""Events on PostgreSQL with two server workers (issue 14): each event goes out once per
subscription in the normal case, the pull queue reads every event once, and outbox
readers never move a cursor past an event that commits later."""

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
from sqlalchemy import Engine, select, text

from artifactd.storage.db import make_engine, migrate
from artifactd.storage.eventstore import EventStore, SubscriptionRow
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


def _subscription(account_id: str) -> SubscriptionRow:
    return SubscriptionRow(
        id="sub_order", account_id=account_id, name="order", source_type="artifacts",
        namespace="default", repo_name=None, event_types='["cf.artifacts.repo.created"]',
        destination="queue", url=None, secret=None, state="active", paused_reason=None,
        cursor_seq=0, failures=0, first_failure_us=0, next_attempt_us=0, claimed_by=None,
        claimed_until_us=0, created_us=1, updated_us=1)


class _CursorReader:
    """What every outbox reader does: take the events after its cursor, move the cursor to
    the last one taken."""

    def __init__(self, engine: Engine) -> None:
        self.events = EventStore(engine)
        self.sub = _subscription("a" * 32)
        self.cursor = self.events.newest_seq()
        self.seen: list[str] = []

    def read(self) -> list[str]:
        rows = self.events.events_after(self.sub, self.cursor, 100)
        if rows:
            self.cursor = rows[-1].seq
        self.seen += [r.repo_name for r in rows]
        return [r.repo_name for r in rows]


def test_a_cursor_never_passes_an_event_that_commits_later(postgres: Postgres) -> None:
    """Writers run concurrently and commit in any order (no lock held through the commit,
    which serialised every create's WAL flush), yet a reader's cursor never moves past an
    event that becomes visible later: neither when the earlier writer commits last, nor
    when a writer that began first writes its event last and commits while a later one is
    still open (which defeats ordering by a sequence read below the snapshot's xmin)."""
    engine = make_engine(postgres.new_database())
    migrate(engine)
    store = MetadataStore(engine)
    reader = _CursorReader(engine)
    try:
        with engine.connect() as one, engine.connect() as two:
            # The earlier writer commits last. A writer that waits for it would wait until
            # lock_timeout and fail the test.
            one.begin()
            two.begin()
            two.execute(text("SET LOCAL lock_timeout = '10s'"))
            store._write_outbox(one, [_outbox_row("a1")])
            store._write_outbox(two, [_outbox_row("a2")])
            two.commit()
            assert reader.read() == []  # a2 is committed, but a1 may still commit below it
            one.commit()
            # (An older transaction of another test's server can hold the horizon a moment.)
            wait_for(lambda: (reader.read(), len(reader.seen) >= 2)[1], 30)
            assert reader.seen == ["a1", "a2"]

            # The writer that began first (its transaction has an id) writes its event after
            # a later writer wrote its own, and commits while that one is still open.
            one.begin()
            two.begin()
            one.execute(text("SELECT pg_current_xact_id()"))
            two.execute(text("SELECT pg_current_xact_id()"))
            store._write_outbox(two, [_outbox_row("b2")])
            store._write_outbox(one, [_outbox_row("b1")])
            one.commit()
            reader.read()
            two.commit()
            wait_for(lambda: (reader.read(), len(reader.seen) >= 4)[1], 30)
        assert sorted(reader.seen) == ["a1", "a2", "b1", "b2"]
        assert reader.seen[:2] == ["a1", "a2"]
        with engine.connect() as conn:
            seqs = dict(conn.execute(select(event_outbox.c.repo_name, event_outbox.c.seq)).all())
        assert [seqs[name] for name in reader.seen] == sorted(seqs.values())
    finally:
        engine.dispose()


def test_outbox_writers_do_not_wait_for_each_other(postgres: Postgres) -> None:
    """Two transactions writing events at the same time both commit without waiting: a
    lock held until commit would make each create wait for the previous one's WAL flush."""
    engine = make_engine(postgres.new_database())
    migrate(engine)
    store = MetadataStore(engine)
    try:
        with engine.connect() as one, engine.connect() as two:
            one.begin()
            two.begin()
            store._write_outbox(one, [_outbox_row("first")])
            two.execute(text("SET LOCAL lock_timeout = '10s'"))
            store._write_outbox(two, [_outbox_row("second"), _outbox_row("third")])
            two.commit()
            one.commit()
        with engine.connect() as conn:
            rows = conn.execute(select(event_outbox.c.repo_name)
                                .order_by(event_outbox.c.seq)).scalars().all()
        assert rows == ["first", "second", "third"]
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
