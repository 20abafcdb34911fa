"""A short CPU slice for the worker's event loop, so that a request preempts bulk work (issue 12).

On a busy node the event loop thread (which answers GETs, token checks and other small
requests inline) shares the cores with work that runs for tens of milliseconds at a time: git
processes building or indexing packs, fork and import threads, the clients of a benchmark on
the same machine. Linux's fair scheduler (EEVDF, 6.6 and later) gives every task a slice
(1.4 ms here) and picks the runnable task with the earliest virtual deadline, a slice away from
when it became eligible. A GET whose thread wakes behind such work waits for it: on the 2-core
machine of docs/benchmarks.md that wait was most of a GET's p99 under pushes and forks.

Since Linux 6.12, ``sched_setattr``'s ``sched_runtime`` sets a task's own slice. The loop
thread asks for a short one (``loop_slice_us``, 100 µs by default, the kernel's minimum):
its deadline comes sooner, so on waking it is picked ahead of a task still in a long slice.
Its share of the CPU does not change (that is the nice value's, untouched), only how soon it
runs. ``SCHED_FLAG_RESET_ON_FORK`` keeps the short slice to this one thread: threads and
processes started from it afterwards (the thread pool, git) get the kernel's default again.

Best effort: on another architecture, an older kernel or a sandbox that forbids the call,
the loop keeps the default slice and one line says so.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import platform
import struct

log = logging.getLogger(__name__)

_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(platform.machine())
_SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}.get(platform.machine())
_SCHED_OTHER = 0
_SCHED_FLAG_RESET_ON_FORK = 0x01
# struct sched_attr, version 1 (56 bytes): size, policy, flags, nice, priority, runtime,
# deadline, period, util_min, util_max.
_ATTR = struct.Struct("IIQiIQQQII")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def shorten(slice_us: int) -> bool:
    """Give the calling thread a ``slice_us`` slice (0: leave the kernel's); True when set."""
    if slice_us <= 0:
        return False
    if _SCHED_SETATTR is None or not hasattr(os, "sched_getscheduler"):
        log.info("event loop slice left at the kernel's default: no sched_setattr here")
        return False
    if os.sched_getscheduler(0) != _SCHED_OTHER:
        return False  # an operator chose a policy (chrt): theirs stands
    attr = _ATTR.pack(_ATTR.size, _SCHED_OTHER, _SCHED_FLAG_RESET_ON_FORK,
                      os.getpriority(os.PRIO_PROCESS, 0), 0, slice_us * 1000, 0, 0, 0, 0)
    if _libc().syscall(_SCHED_SETATTR, 0, ctypes.create_string_buffer(attr), 0) != 0:
        code = ctypes.get_errno()
        log.info("event loop slice left at the kernel's default: %s",
                 errno.errorcode.get(code, str(code)))
        return False
    return True


def slice_ns(tid: int = 0) -> int | None:
    """The slice of thread ``tid`` (0: the caller) in nanoseconds, as the kernel reports it;
    None where it cannot be read."""
    if _SCHED_GETATTR is None:
        return None
    buffer = ctypes.create_string_buffer(_ATTR.size)
    if _libc().syscall(_SCHED_GETATTR, tid, buffer, _ATTR.size, 0) != 0:
        return None
    return int(_ATTR.unpack(buffer.raw)[5])
