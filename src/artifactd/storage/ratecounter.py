"""Fixed-window request counters shared by every server process.

Two implementations of one method, ``hit(key, window_start, window_end_us) -> count``:

- ``SharedMemoryCounter`` (SQLite deployments, one machine): a table of 65,536 slots in a
  memory-mapped file under the data dir, updated under an exclusive ``flock``. Every worker
  process maps the same file, so a limit holds across ``--workers N``. A hit costs a lock and
  a few memory reads (microseconds), not a database write.
- ``DatabaseCounter`` (PostgreSQL deployments, possibly several machines): an upsert into the
  ``rate_windows`` table, atomic in the database.

Slots hold (key hash, window start, count). A key's slot is found by linear probing from its
hash; a slot whose window has passed is free for reuse. If all probed slots are busy in the
current window (more than 65,536 distinct keys active at once), the hit is allowed and
reported as 0: failing open beats refusing traffic for an accounting limit.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from artifactd.storage.schema import rate_windows

SLOTS = 65_536
PROBES = 32
_SLOT = struct.Struct("<QqI4x")  # key hash, window start (us), count


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


class DatabaseCounter:
    def __init__(self, engine: Engine):
        self.engine = engine

    def hit(self, key: str, window_start: int) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(rate_windows)
                .where(rate_windows.c.key == key, rate_windows.c.window_start == window_start)
                .values(count=rate_windows.c.count + 1)
                .returning(rate_windows.c.count)
            ).first()
            if result is not None:
                return int(result[0])
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(rate_windows).values(key=key, window_start=window_start, count=1))
                # Old windows of this key are no longer needed.
                conn.execute(delete(rate_windows).where(
                    rate_windows.c.key == key, rate_windows.c.window_start < window_start))
            return 1
        except IntegrityError:
            return self.hit(key, window_start)

    def current(self, key: str, window_start: int) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(select(rate_windows.c.count).where(
                rate_windows.c.key == key, rate_windows.c.window_start == window_start)).scalar()
        return int(value or 0)

    def close(self) -> None:
        pass
