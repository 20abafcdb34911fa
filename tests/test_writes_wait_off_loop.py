"""A write that would wait for SQLite's writer lock waits in a thread, not on the loop (issue 12).

On SQLite, control-plane writes (a repo create) run inline on the event loop: cheaper than a
thread hop when nothing else writes. But when another writer holds the writer lock (a fork's
create in a worker thread, the other worker's write, the analytics recorder), an inline
create waited for it on the loop, and every GET of the worker waited too: the GET p99 while
pushes and forks run. Here the test holds the writer lock (storage/writerlock.py) as the
other worker would: the server must go on answering while the create waits, and the create
must complete once the lock is released.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import httpx

from tests.harness import Server


def _waits_for_a_file_lock(pid: int) -> bool:
    """A thread of process ``pid`` sleeps in the kernel waiting for a ``flock``."""
    for wchan in Path(f"/proc/{pid}/task").glob("*/wchan"):
        try:
            if "lock_inode_wait" in wchan.read_text():
                return True
        except OSError:
            continue
    return False


def test_a_create_waits_for_the_writer_lock_without_holding_the_loop(
    sqlite_server: Server, unique_name: str,
) -> None:
    lock_path = sqlite_server.data_dir / "artifactd.db.writer-lock"
    assert lock_path.exists()  # the server made it: the test holds the real lock
    answers: list[httpx.Response] = []
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process writing, as a second worker would

        def create() -> None:
            with sqlite_server.client() as c:
                answers.append(c.post("/repos", json={"name": unique_name}))

        creator = threading.Thread(target=create, daemon=True)
        creator.start()
        assert sqlite_server.process is not None
        deadline = time.monotonic() + 30
        while not _waits_for_a_file_lock(sqlite_server.process.pid):
            assert creator.is_alive(), answers
            assert time.monotonic() < deadline, "the create never reached the writer lock"
            time.sleep(0.02)
        for _ in range(5):
            answered = httpx.get(sqlite_server.url + "/healthz", timeout=5)
            assert answered.status_code == 200
        assert not answers, "the create finished while the writer lock was held"
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    creator.join(timeout=60)
    assert answers and answers[0].status_code == 200, answers and answers[0].text
    with sqlite_server.client() as c:
        assert c.get(f"/repos/{unique_name}").status_code == 200
