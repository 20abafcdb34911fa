"""A queue for SQLite's one writer, shared by the processes of ``--workers N``.

SQLite lets one connection write at a time; a writer that finds the database locked waits
in SQLite's busy handler, which polls with sleeps of 1 to 100 ms. With two workers, a create
inline on one process's event loop waited for those sleeps whenever the other process was
writing, and ``--workers 2`` made fewer creates/s than one. The hot writers (create and
delete, the analytics recorder) first take an exclusive ``flock`` on a file beside the
database: the kernel wakes the next waiter the moment the holder releases it. SQLite's own
lock still guarantees correctness; this lock only orders the waiters, so a writer that does
not take it (a rare path) is merely slower, never wrong.

Each ``WriterLock`` opens its own descriptor, so two of them exclude each other even inside
one process. Holders never nest one inside another (that would wait on itself).

Threads of one process share a ``WriterLock``'s descriptor, and a ``flock`` belongs to the
descriptor, not the thread: a second thread's ``flock`` would succeed at once and go on to
meet the first in SQLite's busy handler (an inline create on the event loop meeting a
fork's or a push's write in a worker thread, and the loop sleeping). A thread lock in front
of the ``flock`` queues the threads too; the same thread may re-enter (one ``flock``).

``busy`` also asks the kernel whether anyone holds SQLite's own write lock, for writers
that do not take the ``flock`` (``artifactd`` CLI commands writing straight to the database,
an operator's ``sqlite3`` shell): in WAL mode that lock is a POSIX byte-range lock on byte
120 of the ``-shm`` file (SQLite's ``WAL_WRITE_LOCK``), and an open-file-description
``F_OFD_GETLK`` tests it without taking anything. The ``-shm`` descriptor used for the test
is opened once per process and never closed: closing any descriptor of a file drops every
POSIX lock the process holds on it, SQLite's included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine

from artifactd.storage.db import sqlite_path

# SQLite's WAL write lock: byte 120 of the -shm file (WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK).
_WAL_WRITE_LOCK_BYTE = 120
# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start, off_t l_len,
# pid_t l_pid (and padding to 32 bytes).
_FLOCK = "hhqqi4x"
_shm_fds: dict[str, tuple[int, int]] = {}  # -shm path -> (descriptor, inode); never closed
_shm_lock = threading.Lock()


def sqlite_write_locked(database: Path) -> bool:
    """Whether some connection (any process, this one included) holds the WAL database's
    write lock now. False when it cannot tell (no ``-shm`` yet, no OFD locks)."""
    shm = str(database) + "-shm"
    if not hasattr(fcntl, "F_OFD_GETLK") or struct.calcsize(_FLOCK) != 32:
        return False
    try:
        inode = os.stat(shm).st_ino
    except OSError:
        return False
    with _shm_lock:
        known = _shm_fds.get(shm)
        if known is None or known[1] != inode:  # first use, or SQLite made a new -shm
            try:
                fd = os.open(shm, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                return False
            known = _shm_fds[shm] = (fd, os.fstat(fd).st_ino)
    query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _WAL_WRITE_LOCK_BYTE, 1, 0)
    try:
        answer = fcntl.fcntl(known[0], fcntl.F_OFD_GETLK, query)
    except OSError:
        return False
    return bool(struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK)


class WriterLock:
    def __init__(self, engine: Engine):
        self._fd: int | None = None
        self._database: Path | None = None
        self._threads = threading.RLock()
        self._depth = 0  # how many times the holding thread entered
        path = sqlite_path(engine.url)
        if path is not None:
            self._database = path
            self._fd = os.open(path.with_name(path.name + ".writer-lock"),
                               os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def busy(self) -> bool:
        """Whether a writer holds the lock now (another thread of this process, or another
        process): an event loop about to write inline goes to a thread instead of waiting
        here with every request it serves. A hint: the holder may change a moment later."""
        if self._fd is None:
            return False
        if not self._threads.acquire(blocking=False):
            return True
        try:
            if self._depth:  # this thread holds it: entering again does not wait
                return False
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            # Writers that skip the flock (CLI commands, an operator's sqlite3 shell).
            return self._database is not None and sqlite_write_locked(self._database)
        finally:
            self._threads.release()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._fd is None:  # PostgreSQL, or SQLite in memory
            yield
            return
        with self._threads:
            self._depth += 1
            try:
                if self._depth == 1:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    if self._depth == 1:
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                self._depth -= 1
