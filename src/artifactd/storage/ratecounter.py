"""Fixed-window request counters shared by every server process.

Two implementations of one method, ``hit(key, window_start, window_end_us) -> count``:

- ``SharedMemoryCounter`` (SQLite deployments, one machine): a table of 65,536 slots in a
  memory-mapped file under the data dir, updated under an exclusive ``flock``. Every worker
  process maps the same file, so a limit holds across ``--workers N``. A hit costs a lock and
  a few memory reads (microseconds), not a database write.
- ``DatabaseCounter`` (PostgreSQL deployments, possibly several machines): counts in memory,
  merged into the ``rate_windows`` table by batched upserts off the request path, so a
  request writes no shared row (a bounded over-admission across processes; see the class).

Slots hold (key hash, window start, count). A key's slot is found by linear probing from its
hash; a slot whose window has passed is free for reuse. If all probed slots are busy in the
current window (more than 65,536 distinct keys active at once), the hit is allowed and
reported as 0: failing open beats refusing traffic for an accounting limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from artifactd.storage.schema import rate_windows

log = logging.getLogger("artifactd.ratecounter")

SLOTS = 65_536
PROBES = 32
_SLOT = struct.Struct("<QqI4x")  # key hash, window start (us), count
FLUSH_INTERVAL_S = 0.1  # how stale one process's view of the other processes' hits may be
FLUSH_EVERY = 50  # pending hits of one key that are flushed at once, not at the interval


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


class SharedMemoryCounter:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        size = SLOTS * _SLOT.size
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)
        self._map = mmap.mmap(self._fd, size)

    def hit(self, key: str, window_start: int) -> int:
        wanted = _key_hash(key)
        home = wanted % SLOTS
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            free = None
            for probe in range(PROBES):
                offset = ((home + probe) % SLOTS) * _SLOT.size
                slot_key, slot_window, count = _SLOT.unpack_from(self._map, offset)
                if slot_key == wanted:
                    count = count + 1 if slot_window == window_start else 1
                    _SLOT.pack_into(self._map, offset, wanted, window_start, count)
                    return count
                if free is None and (slot_key == 0 or slot_window < window_start):
                    free = offset
            if free is None:
                return 0
            _SLOT.pack_into(self._map, free, wanted, window_start, 1)
            return 1
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


@dataclass
class _Window:
    start: int
    synced: int = 0  # the key's count in the database when this process last flushed
    pending: int = 0  # this process's hits not yet added to the database
    inflight: int = 0  # hits being added by a flush now (in no count until it returns)


class DatabaseCounter:
    """Per-process counts, merged in the database in batches (PostgreSQL, many nodes).

    A hit is counted in memory (no database round trip on the request path); a flusher
    thread adds every key's pending hits to its ``rate_windows`` row every
    ``FLUSH_INTERVAL_S`` in one upsert, and learns the key's total across all processes from
    it. A key with ``FLUSH_EVERY`` pending hits is flushed at once. Within one process the
    count is exact; across P processes a window can admit at most about
    P x (the hits one process takes in one flush interval, and never more than FLUSH_EVERY)
    over the limit, which is the documented error bound (docs/operations.md).
    """

    def __init__(self, engine: Engine, *, flush_interval_s: float = FLUSH_INTERVAL_S):
        self.engine = engine
        self._flush_interval = flush_interval_s
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hit(self, key: str, window_start: int) -> int:
        with self._lock:
            window = self._windows.get(key)
            if window is None or window.start != window_start:
                window = self._windows[key] = _Window(window_start)
            window.pending += 1
            count = window.synced + window.inflight + window.pending
            flush_now = window.pending >= FLUSH_EVERY
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rate-flusher", daemon=True)
                self._thread.start()
        if flush_now:
            self.flush()
        return count

    def flush(self) -> None:
        """Add every pending hit to the database and learn each key's total."""
        with self._lock:
            batch = {key: (w.start, w.pending) for key, w in self._windows.items() if w.pending}
            for key, (_start, n) in batch.items():
                self._windows[key].pending = 0
                self._windows[key].inflight += n
            # Keys idle for a whole window are forgotten (their rows stay until they roll).
            now_start = max((w.start for w in self._windows.values()), default=0)
            for key in [k for k, w in self._windows.items() if not w.pending and k not in batch
                        and w.start < now_start]:
                del self._windows[key]
        if not batch:
            return
        rows = [{"key": key, "window_start": start, "count": n} for key, (start, n) in batch.items()]
        insert = pg_insert(rate_windows).values(rows)
        statement = insert.on_conflict_do_update(
            index_elements=[rate_windows.c.key, rate_windows.c.window_start],
            set_={"count": rate_windows.c.count + insert.excluded.count},
        ).returning(rate_windows.c.key, rate_windows.c.count)
        try:
            with self.engine.begin() as conn:
                totals = {key: int(count) for key, count in conn.execute(statement)}
                # A key's older windows are no longer needed once it counts in a new one.
                for key, (start, _n) in batch.items():
                    if totals.get(key) == batch[key][1]:  # first hits of this window anywhere
                        conn.execute(delete(rate_windows).where(
                            rate_windows.c.key == key, rate_windows.c.window_start < start))
        except Exception:
            # The database is unreachable: keep the hits to add next time.
            with self._lock:
                for key, (start, n) in batch.items():
                    window = self._windows.get(key)
                    if window is not None and window.start == start:
                        window.inflight -= n
                        window.pending += n
            raise
        with self._lock:
            for key, (start, n) in batch.items():
                window = self._windows.get(key)
                if window is not None and window.start == start:
                    window.inflight -= n
                    # The total includes this batch (no longer in flight); a total
                    # lower than what we already counted is an older answer: keep ours.
                    window.synced = max(window.synced + n, totals.get(key, 0))

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self.flush()
            except Exception:
                log.warning("rate counter flush failed; retrying", exc_info=True)

    def current(self, key: str, window_start: int) -> int:
        """The key's count across every process, as of the last flushes."""
        self.flush()
        with self.engine.connect() as conn:
            value = conn.execute(select(rate_windows.c.count).where(
                rate_windows.c.key == key, rate_windows.c.window_start == window_start)).scalar()
        return int(value or 0)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.flush()
