"""SQLite's WAL is checkpointed by the server's background thread, not inside commits."""

from __future__ import annotations

import time

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
