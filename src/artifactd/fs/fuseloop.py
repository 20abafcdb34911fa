"""pyfuse3's request loop, minus two trips through trio's scheduler per request.

pyfuse3 reads each FUSE request after ``async with read_lock: await
trio.lowlevel.wait_readable(fd)``: the lock's acquire is a checkpoint (a scheduler pass) and
``wait_readable`` registers the fd with epoll and parks the task until the next pass. During
a read-all that is most of a request's CPU (about 45 µs of the ~50 µs each OPEN and RELEASE
cost), though a request is usually already waiting. pyfuse3 finds trio through its module
attribute ``pyfuse3.trio`` (``pyfuse3.asyncio`` swaps it the same way), so the mount hands
it a view of trio in which the lock costs nothing and ``wait_readable`` returns at once when
``poll`` says a request is waiting. The slow path is trio's own, behind a real lock (trio
allows one waiter per fd). Between a ``poll`` and pyfuse3's read of the request there is no
await, so no other task can take that request first. Every ``FAIR_BUDGET`` requests in a
row, the loop waits the normal way, so the fetch tasks and the rest of the mount get their turn.
"""

from __future__ import annotations

import select
import types
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

FAIR_BUDGET = 16  # requests taken without a scheduler pass before yielding to other tasks


class _FreeLock:
    """pyfuse3's read lock: the gate below does the locking, on its slow path only."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class ReadGate:
    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.fd = -1
        self.poller = select.poll()
        self.in_a_row = 0
        self.closed = False  # pyfuse3.terminate() closed the fd's waiters: no task waits again
        self.fast = 0  # requests taken without a scheduler pass (a test checks the path is used)
        # Whether other tasks have work queued to start (the hydrator's batches): then the
        # next request waits the normal way, so a directory's batch queued by a RELEASE is in
        # flight before the next OPEN in it asks for its own blob in a fetch of its own.
        self.work_waiting: Callable[[], bool] = lambda: False

    def _waiting(self, fd: int) -> bool:
        if fd != self.fd:
            if self.fd >= 0:
                self.poller.unregister(self.fd)
            self.poller.register(fd, select.POLLIN)
            self.fd = fd
        return bool(self.poller.poll(0))

    async def wait_readable(self, fd: int) -> None:
        if self.closed:
            raise trio.ClosedResourceError("the FUSE session is closing")
        if self.in_a_row < FAIR_BUDGET and not self.work_waiting() and self._waiting(fd):
            self.in_a_row += 1
            self.fast += 1
            return
        self.in_a_row = 0
        while True:
            async with self.lock:
                # pyfuse3 checks for the end of the session under its own lock, which is now
                # free: a task that waited for this one must learn of it here, or it would
                # wait on the fd for ever (trio wakes only the waiter it finds at close).
                if self.closed:
                    raise trio.ClosedResourceError("the FUSE session is closing")
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    self.closed = True
                    raise
            if self._waiting(fd):  # not taken by a task on the fast path meanwhile
                return


class _Lowlevel(types.ModuleType):
    def __init__(self, gate: ReadGate) -> None:
        super().__init__("trio.lowlevel")
        self.wait_readable = gate.wait_readable

    def __getattr__(self, name: str) -> Any:
        return getattr(trio.lowlevel, name)


class _Trio(types.ModuleType):
    def __init__(self, gate: ReadGate) -> None:
        super().__init__("trio")
        self.lowlevel = _Lowlevel(gate)
        self.Lock = _FreeLock

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


def install() -> ReadGate:
    """Before ``pyfuse3.main()``: pyfuse3's loop takes waiting requests without a scheduler pass."""
    gate = ReadGate()
    setattr(pyfuse3, "trio", _Trio(gate))  # noqa: B010 (not in pyfuse3's stubs)
    return gate
