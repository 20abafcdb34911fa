"""Reads first: the mount's background bulk requests wait while a read is on the wire.

Right after a mount, the bulk ``object-info`` load (``sizes.py``) sends a few requests at
once to the same server that has to answer the first read's fetch. On a loopback server
with two cores, a read arriving behind those requests waited three to four times its own
round trip (19 ms against 4 ms, measured). So a read's network work (its urgent fetch,
the sizes a ``stat`` waits for) is counted here, and each bulk request first waits until
no read has been on the wire for ``QUIET`` seconds, but never longer than ``LONGEST``, so
that a mount read without a pause still gets its sizes and its index.
"""

from __future__ import annotations

import time

QUIET = 0.02
LONGEST = 0.25
POLL = 0.002


class ReadActivity:
    """Updated on the FUSE event loop, waited on by the bulk load's worker threads."""

    def __init__(self) -> None:
        self.active = 0
        self.last = 0.0  # monotonic time the last read's request ended

    def touch(self) -> None:
        """As if a read had just ended: the mount's first ``ls`` and read come right after
        it is mounted, so the bulk load starts ``QUIET`` after that unless they do."""
        self.last = time.monotonic()

    def begin(self) -> None:
        self.active += 1

    def end(self) -> None:
        self.active -= 1
        self.last = time.monotonic()

    def busy(self) -> bool:
        return self.active > 0 or time.monotonic() - self.last < QUIET

    def wait_quiet(self) -> None:
        """Block (a worker thread, never the event loop) until reads are quiet, at most ``LONGEST``."""
        deadline = time.monotonic() + LONGEST
        while self.busy() and time.monotonic() < deadline:
            time.sleep(POLL)
