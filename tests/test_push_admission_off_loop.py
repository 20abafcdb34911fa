"""A push's admission (a SQLite write transaction) never blocks the event loop (issue 12).

A SQLite writer that meets another one waits in SQLite's busy handler, which sleeps; when
admission ran inline, the event loop slept with it, and every request of the worker
(GETs included) waited for the other writer. Here the test holds SQLite's write lock while
a push reaches admission: the server must go on answering, and the push must complete once
the lock is released. Both paths are covered: a push git receives (its pre-receive hook asks
the server) and a small push the server receives in process.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Server, start_server


def _hook_waiting_for_answer(data_dir: Path) -> bool:
    """The server's pre-receive hook has sent the push's ref lines and is blocked reading
    the server's answer (so admission has started)."""
    hook = str(data_dir / "hooks" / "pre-receive")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            wchan = (proc / "wchan").read_text()
        except OSError:
            continue
        if hook in cmdline and "pipe_read" in wchan:
            return True
    return False


def _pending(push: subprocess.Popen[bytes], seconds: float) -> None:
    """The in-process push is still waiting after ``seconds`` (a small push takes well
    under a second here, so it is held at admission)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert push.poll() is None, push.communicate()
        time.sleep(0.05)


@pytest.mark.parametrize("in_process", [False, True], ids=["hook", "in-process"])
def test_requests_are_answered_while_a_push_waits_for_the_sqlite_lock(
    in_process: bool, tmp_path: Path, unique_name: str,
) -> None:
    server = start_server(tmp_path / "data", extra_env={
        "ARTIFACTD_GIT_IN_PROCESS_PUSH": "true" if in_process else "false"})
    try:
        _push_while_locked(server, tmp_path, unique_name, in_process)
    finally:
        server.stop()


def _push_while_locked(server: Server, tmp_path: Path, unique_name: str,
                       in_process: bool) -> None:
    repo = create_repo(server, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "w", {"notes.txt": "hello\n"})
    database = sqlite3.connect(server.data_dir / "artifactd.db", timeout=30,
                               isolation_level=None)
    push = None
    try:
        database.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as another writer holds it
        push = subprocess.Popen(
            ["git", "-c", bearer(repo.token), "push", "-q", repo.remote, "main"],
            cwd=tmp_path / "w", env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if in_process:
            _pending(push, 1.5)
        else:
            deadline = time.monotonic() + 30
            while not _hook_waiting_for_answer(server.data_dir):
                assert push.poll() is None, push.communicate()
                assert time.monotonic() < deadline, "the push never reached admission"
                time.sleep(0.02)
        for _ in range(5):
            answered = httpx.get(server.url + "/healthz", timeout=5)
            assert answered.status_code == 200
        assert push.poll() is None, "the push finished while SQLite's write lock was held"
    finally:
        database.execute("ROLLBACK")
        database.close()
    assert push is not None
    _out, err = push.communicate(timeout=60)
    assert push.returncode == 0, err
    assert repo.refs()["refs/heads/main"]
