"""SQLite's WAL is checkpointed by the server's background thread, not inside commits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.harness import Server


def test_wal_is_checkpointed_in_the_background(sqlite_server: Server) -> None:
    with sqlite_server.client() as c:
        for i in range(50):
            assert c.post("/repos", json={"name": f"wal-{i}-{time.time_ns()}"}).status_code == 200
    before = sqlite_server.metric("artifactd_sqlite_checkpoints_total")
    deadline = time.monotonic() + 30
    while sqlite_server.metric("artifactd_sqlite_checkpoints_total") < before + 2:
        assert time.monotonic() < deadline, "the background checkpointer never ran"
        time.sleep(0.2)


def test_creates_queue_on_the_writer_lock_shared_by_workers(sqlite_server: Server) -> None:
    """A create takes the ``flock`` beside the database that the processes of ``--workers N``
    queue on (storage/writerlock.py), and goes on the moment it is released."""
    import fcntl
    import os
    import threading

    statuses: list[int] = []
    fd = os.open(sqlite_server.data_dir / "artifactd.db.writer-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as another worker's writer would
        try:
            def create() -> None:
                with sqlite_server.client() as c:
                    statuses.append(c.post("/repos", json={"name": f"queued-{time.time_ns()}"}).status_code)

            waiter = threading.Thread(target=create)
            waiter.start()
            waiter.join(timeout=1.0)
            assert waiter.is_alive() and not statuses, "the create did not wait for the writer lock"
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        waiter.join(timeout=30)
        assert statuses == [200]
    finally:
        os.close(fd)


def test_threads_of_one_process_queue_on_the_writer_lock(tmp_path: Path) -> None:
    """A ``flock`` belongs to the descriptor that threads share: without a thread lock in
    front of it, a second thread got it at once (and met the first in SQLite's busy
    handler: an inline create on the event loop sleeping behind a fork's write)."""
    from sqlalchemy import create_engine

    from artifactd.storage.writerlock import WriterLock

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    lock = WriterLock(engine)
    holding, release = threading.Event(), threading.Event()
    entered: list[str] = []

    def first() -> None:
        with lock.held():
            entered.append("first")
            holding.set()
            release.wait(30)
            entered.append("first done")

    def second() -> None:
        with lock.held(), lock.held():  # the holder may re-enter
            entered.append("second")

    one = threading.Thread(target=first)
    one.start()
    assert holding.wait(30)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)  # bounded: it must still be waiting after this
    assert two.is_alive() and entered == ["first"]
    release.set()
    one.join(30)
    two.join(30)
    assert entered == ["first", "first done", "second"]
    engine.dispose()
