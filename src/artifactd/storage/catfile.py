"""Object reads for the content routes: pooled ``git cat-file --batch-command`` processes.

Starting git costs a few milliseconds; a warm ``cat-file`` answers an ``info`` or
``contents`` round trip in tens of microseconds. So each hot repository keeps up to
``per_repo`` long-lived processes, handed out one request at a time (the batch protocol is
a strict request/response stream, so a process can never be shared by two requests at
once). The pool is bounded: past ``max_processes`` the least recently used idle processes
are closed, and a reaper closes processes idle for ``idle_seconds`` (which is also what
lets go of the open files of a repository that was deleted and moved to the trash).

A process that dies (killed, out of memory, its repository renamed away) surfaces as
``CatFileDied`` and is never handed out again; ``CatFilePool.run`` retries once on a fresh
process. A request cancelled in the middle of an exchange (client gone) leaves the
process's output half read, so such a process is discarded rather than returned.

A long-lived cat-file sees objects and refs written after it started: on a miss git
re-scans the pack directory, and refs are re-read from disk on every lookup.

Large blobs do not go through the pool: ``stream_blob`` starts a dedicated
``git cat-file blob`` and streams its output, so a slow download never holds a pooled
process and memory stays bounded whatever the blob size.

Processes are started from a worker thread with ``Popen`` (vfork and exec; see
``GitRunner.spawn_piped``), never by forking the server on the event loop: when reads fan
out over many repos, each miss costs the loop a thread hop instead of a fork of the whole
server. The pool is an LRU over repositories: a working set of thousands of repos shares
at most ``max_processes`` processes, the least recently used idle ones closed first.

Everything else here runs on the event loop of the worker process that created the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from artifactd.storage.gitrunner import GitRunner, PipedGit

# Replace refs would let a repo make `commit/<sha>` show other bytes than <sha> names, which
# breaks the immutability the object routes' strong ETags promise.
READ_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.useReplaceRefs", "false"),
    ("core.warnAmbiguousRefs", "false"),
)

_HEADER = re.compile(rb"([0-9a-f]{40}) (blob|tree|commit|tag) (\d+)\n")


class CatFileDied(Exception):
    """The cat-file process went away or broke the protocol."""


@dataclass(frozen=True)
class ObjectInfo:
    sha: str
    type: str
    size: int


# One answer per command: (info, contents); info is None when the name did not resolve.
Answer = tuple[ObjectInfo | None, bytes | None]


class CatFile:
    """One ``git cat-file --batch-command --buffer`` process for one repository."""

    def __init__(self, proc: PipedGit, key: Path):
        self.proc = proc
        self.key = key
        self.last_used = time.monotonic()
        self.broken = False

    @property
    def alive(self) -> bool:
        return not self.broken and self.proc.returncode is None

    async def batch(self, commands: Sequence[tuple[str, str]]) -> list[Answer]:
        """Send ``info``/``contents`` commands and read their answers, in one round trip.

        All commands are written before any answer is read; the transport buffers what the
        pipe does not take yet, so a large batch (a tree's entry sizes) cannot deadlock.
        """
        stdin, stdout = self.proc.stdin, self.proc.stdout
        if stdin is None or stdout is None:
            raise CatFileDied("cat-file has no pipes")
        payload = []
        for kind, name in commands:
            if kind not in ("info", "contents") or "\n" in name or "\0" in name:
                raise ValueError(f"bad cat-file command {kind!r} {name!r}")
            payload.append(f"{kind} {name}\n".encode())
        payload.append(b"flush\n")
        # Until every answer is read the stream position is unknown; if anything below
        # raises or is cancelled the process must not be reused.
        self.broken = True
        try:
            stdin.write(b"".join(payload))
            answers: list[Answer] = []
            for kind, _name in commands:
                line = await stdout.readline()
                if not line:
                    raise CatFileDied("cat-file exited")
                match = _HEADER.fullmatch(line)
                if match is None:  # "<name> missing" or "<name> ambiguous"
                    answers.append((None, None))
                    continue
                info = ObjectInfo(match[1].decode(), match[2].decode(), int(match[3]))
                if kind == "contents":
                    data = await stdout.readexactly(info.size + 1)
                    answers.append((info, data[:-1]))
                else:
                    answers.append((info, None))
            await stdin.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            raise CatFileDied(f"cat-file broke the protocol: {exc}") from exc
        except RuntimeError as exc:
            # uvloop refuses to write to a pipe whose process already died ("the handler
            # is closed"): the same situation as a broken pipe.
            raise CatFileDied(f"cat-file pipe is closed: {exc}") from exc
        self.broken = False
        self.last_used = time.monotonic()
        return answers

    def kill(self) -> None:
        self.broken = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.popen.kill()
        self.proc.close()  # our pipe ends; the exit watcher reaps the process


@dataclass
class _Slot:
    idle: list[CatFile] = field(default_factory=list)
    count: int = 0  # processes of this repo, idle or in use
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


# Sized for a working set of a few hundred repos (reads fanning out over one per agent):
# a pool smaller than the working set starts a process on nearly every read. An idle
# cat-file of a small repo is about 1 MB of private memory and two descriptors (its
# stderr goes to /dev/null), which ``http.protocol``'s descriptor budget counts.
MAX_PROCESSES = 256


class CatFilePool:
    def __init__(
        self, git: GitRunner, *, max_processes: int = MAX_PROCESSES, per_repo: int = 2,
        idle_seconds: float = 60.0,
    ):
        self.git = git
        self.max_processes = max(1, max_processes)
        self.per_repo = max(1, per_repo)
        self.idle_seconds = idle_seconds
        self._slots: OrderedDict[Path, _Slot] = OrderedDict()
        self._total = 0
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.spawned = 0  # processes started since creation (tests and benchmarks read it)

    @property
    def total(self) -> int:
        return self._total

    async def run(self, git_dir: Path, commands: Sequence[tuple[str, str]]) -> list[Answer]:
        """One exchange on a pooled process; a process found dead is replaced once."""
        for attempt in (1, 2):
            cat = await self._acquire(git_dir)
            try:
                return await cat.batch(commands)
            except CatFileDied:
                if attempt == 2:
                    raise
                # Its siblings most likely went the same way (the repo moved, an OOM kill):
                # drop them too, so the retry starts a fresh process.
                self.evict(git_dir)
            finally:
                self._release(cat)
        raise AssertionError("unreachable")

    async def _acquire(self, key: Path) -> CatFile:
        if self._closed:
            raise CatFileDied("pool is closed")
        self._ensure_reaper()
        while True:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = _Slot()
            self._slots.move_to_end(key)
            while slot.idle:
                cat = slot.idle.pop()
                if cat.alive:
                    return cat
                self._forget(slot, cat)
            if slot.count < self.per_repo:
                slot.count += 1
                self._total += 1
                try:
                    proc = await self.git.spawn_piped(
                        key, ["cat-file", "--batch-command", "--buffer"], config=READ_CONFIG,
                        stderr=False, off_loop=True,
                    )
                except BaseException:
                    slot.count -= 1
                    self._total -= 1
                    self._wake(slot)
                    raise
                self.spawned += 1
                self._trim(keep=key)
                return CatFile(proc, key)
            waiter = asyncio.get_running_loop().create_future()
            slot.waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    slot.waiters.remove(waiter)

    def _release(self, cat: CatFile) -> None:
        slot = self._slots.get(cat.key)
        if slot is None:  # cannot happen while a process is out, but never leak one
            cat.kill()
            return
        if cat.alive and not self._closed:
            slot.idle.append(cat)
        else:
            self._forget(slot, cat)
        self._wake(slot)

    def _forget(self, slot: _Slot, cat: CatFile) -> None:
        cat.kill()
        slot.count -= 1
        self._total -= 1

    @staticmethod
    def _wake(slot: _Slot) -> None:
        while slot.waiters:
            waiter = slot.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _drop_empty(self) -> None:
        for key in [k for k, s in self._slots.items() if s.count == 0 and not s.waiters]:
            del self._slots[key]

    def _trim(self, keep: Path) -> None:
        """Close least recently used idle processes until the pool is within its bound."""
        for key, slot in list(self._slots.items()):
            if self._total <= self.max_processes:
                break
            if key == keep:
                continue
            while slot.idle and self._total > self.max_processes:
                self._forget(slot, slot.idle.pop(0))
        self._drop_empty()

    def evict(self, git_dir: Path) -> None:
        """Close the idle processes of one repository (it was deleted or replaced)."""
        slot = self._slots.get(git_dir)
        if slot is not None:
            while slot.idle:
                self._forget(slot, slot.idle.pop())
            self._drop_empty()

    def reap(self, now: float | None = None) -> int:
        """Close processes idle for longer than ``idle_seconds``; returns how many."""
        cutoff = (time.monotonic() if now is None else now) - self.idle_seconds
        closed = 0
        for slot in self._slots.values():
            for cat in [c for c in slot.idle if c.last_used < cutoff or not c.alive]:
                slot.idle.remove(cat)
                self._forget(slot, cat)
                closed += 1
        self._drop_empty()
        return closed

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.idle_seconds / 4))
            self.reap()

    def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for slot in self._slots.values():
            while slot.idle:
                self._forget(slot, slot.idle.pop())
            for waiter in slot.waiters:
                if not waiter.done():
                    waiter.set_result(None)


async def stream_blob(
    git: GitRunner, git_dir: Path, sha: str, start: int, length: int, chunk: int = 1 << 16
) -> AsyncIterator[bytes]:
    """Yield ``length`` bytes of blob ``sha`` from offset ``start``, from a dedicated process.

    The process is killed as soon as the range is sent or the consumer goes away (the
    generator is closed), so neither a short range of a huge blob nor a disconnected client
    keeps git reading.
    """
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise ValueError("stream_blob needs a full object id")
    proc = await git.spawn_piped(
        git_dir, ["cat-file", "blob", sha], config=READ_CONFIG, stdin=False, stderr=False,
        off_loop=True, limit=chunk,
    )
    assert proc.stdout is not None
    try:
        skip = start
        while skip > 0:
            data = await proc.stdout.read(min(chunk, skip))
            if not data:
                raise CatFileDied("blob ended early")
            skip -= len(data)
        remaining = length
        while remaining > 0:
            data = await proc.stdout.read(min(chunk, remaining))
            if not data:
                raise CatFileDied("blob ended early")
            remaining -= len(data)
            yield data
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.kill()
        proc.close()
