"""``writerlock.sqlite_write_locked``: SQLite's own WAL write lock seen from outside, for
writers that skip the server's ``flock`` (a CLI command, an operator's ``sqlite3`` shell)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from artifactd.storage.writerlock import sqlite_write_locked


def test_the_probe_sees_a_writer_of_this_and_of_another_process(tmp_path: Path) -> None:
    database = tmp_path / "probe.db"
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    assert not sqlite_write_locked(database)
    conn.execute("BEGIN IMMEDIATE")
    assert sqlite_write_locked(database)
    conn.execute("COMMIT")
    assert not sqlite_write_locked(database)
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()
    assert not sqlite_write_locked(database)  # a reader is not a writer
    reader.execute("COMMIT")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN IMMEDIATE'); print('held', flush=True); "
         "sys.stdin.read(); c.execute('ROLLBACK')", str(database)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert sqlite_write_locked(database)
        # This process's own connection still works: the probe took no lock and closed nothing.
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    finally:
        holder.communicate("", timeout=30)
    assert not sqlite_write_locked(database)
    conn.execute("BEGIN IMMEDIATE")  # and this process can still write
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("COMMIT")


def test_no_database_file_is_not_locked(tmp_path: Path) -> None:
    assert not sqlite_write_locked(tmp_path / "missing.db")
