"""WAL checkpoints for SQLite, off the request path.

SQLite's automatic checkpoint runs inside whichever commit pushes the WAL past
``wal_autocheckpoint`` pages, so one request in every few hundred pays for copying the WAL
into the database and its ``fsync``; for the server that request runs on the event loop.
The server instead raises the automatic threshold to a backstop (``BACKSTOP_PAGES``, used
only if this thread stops) and checkpoints from a thread of its own: ``PASSIVE`` mode never
waits for readers or writers, so it costs requests nothing but the I/O bandwidth.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine, text

log = logging.getLogger("artifactd.checkpointer")

BACKSTOP_PAGES = 20_000  # ~80 MB of WAL at 4 KiB pages before a commit checkpoints inline
INTERVAL_S = 1.0  # a second of writes at thousands of creates/s is a few MB of WAL


class WalCheckpointer:
    def __init__(self, engine: Engine, *, on_checkpoint: Callable[[], None] = lambda: None,
                 interval_s: float = INTERVAL_S):
        self._engine = engine
        self._on_checkpoint = on_checkpoint
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def checkpoint(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text("PRAGMA wal_checkpoint(PASSIVE)"))
        self._on_checkpoint()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.checkpoint()
            except Exception:  # a locked or busy database: the next round tries again
                log.warning("WAL checkpoint failed; retrying in %.1fs", self._interval, exc_info=True)
