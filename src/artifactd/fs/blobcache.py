"""The blob cache: ``blobs/ab/cdef...`` by object id, verified when written, LRU-bounded.

Reads are served from these files. A blob is written from the clone's object store (after a
fetch) through ``git cat-file --batch``, checked against its id (SHA-1 of ``blob <size>\\0``
and the bytes), and renamed into place, so a reader never sees half a file. The folder is
the host's (``hostcache``), shared by every mount: when the bytes on disk, as all its
writers count them, pass ``limit``, the least recently used files of any mount go (an open
file stays readable; a mount that opens an evicted blob fetches it again).

Blobs received over HTTP (``put``) are addressed by the hash of their bytes, so they are
verified by construction. They are served from memory at once and written to disk behind,
by one writer thread: creating a file costs 0.2-2 ms on a busy disk, and a read must not
wait for the thousands of files of its batch to be created. At most ``MEMORY_BYTES`` wait
in memory; past that ``put`` waits for the writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path

from artifactd.fs.children import die_with_parent
from artifactd.fs.gitcmd import GIT, git_env
from artifactd.fs.hostcache import Usage, scan

CHUNK = 1 << 20
MEMORY_BYTES = 64 << 20  # blobs received but not yet on disk
TOUCH = "touch:"  # a writer-queue item that refreshes a file's mtime (LRU order)
PACK = "pack:"  # a writer-queue item: a fetch's pack for the writer process to decode
REPORT_BYTES = 4 << 20  # written bytes added to the host's count at least this often
REPORT_SECONDS = 1.0  # and when the writer is idle, at most this often (a locked file update each)
SEND_ITEMS = 4096  # queued items handed to the writer process in one pipe write, at most
EVICT_TO = 0.9  # past the limit, evict down to this share of it (not again at the next blob)

log = logging.getLogger("artifact_fs")


class BlobCache:
    def __init__(self, folder: Path, limit: int, use_child: bool = True) -> None:
        self.folder = folder
        # has() stats a path per blob on a thread that shares the interpreter lock with the FUSE
        # loop: a string join costs a quarter of building the Path (1 µs against 4.8 µs here)
        self.prefix = f"{folder}{os.sep}"
        self.limit = limit
        self.lock = threading.Lock()
        self.written = threading.Condition(self.lock)
        self.pending: dict[str, bytes] = {}  # received, not yet on disk: served from here
        self.pending_bytes = 0
        self.writes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.outstanding = 0  # queued items the writer has not finished
        # What this process knows is on disk, oid -> size; a blob another process wrote is
        # found by ``has`` on disk. The folder is not scanned at start: the host's cache
        # may hold millions of blobs, and a mount must not wait for them to be listed.
        self.used: OrderedDict[str, int] = OrderedDict()
        self.usage = Usage(folder)  # the bytes on disk, shared by every process (limit)
        self.unreported = 0  # bytes written by this process, not yet added to ``usage``
        self.reported_at = 0.0
        self.subdirs: set[str] = set()  # the ab/ folders known to exist
        # The writer process (``blobwriter``), started with the first write; ``sent`` are the
        # items it has not answered yet, in the order sent.
        self.use_child = use_child
        self.child: _Child | None = None
        self.sent: deque[str] = deque()
        self.packs: dict[str, _PackJob] = {}  # PACK items sent or queued, by item
        self.pack_numbers = itertools.count()
        self.touched: set[str] = set()  # read at least once by this process

    def path(self, oid: str) -> Path:
        return self.folder / oid[:2] / oid[2:]

    def has(self, oid: str) -> bool:
        """Whether ``oid`` is cached: in memory, in this index, or on disk (another mount or
        ``artifact-fs prefetch`` wrote it). The first hit in a process refreshes the file's
        mtime, which is the LRU order ``evict-cache`` and the next mount start read."""
        with self.lock:
            if oid in self.pending:
                return True
            if oid in self.used:
                self.used.move_to_end(oid)
                if oid in self.touched:
                    return True
                self.touched.add(oid)
                known = True
            else:
                known = False
        if known:  # refreshed by the writer thread: a read does not wait for a metadata write
            self._queue(TOUCH + oid)
            return True
        try:
            size = os.stat(f"{self.prefix}{oid[:2]}{os.sep}{oid[2:]}").st_size
        except FileNotFoundError:
            return False
        with self.lock:
            self.used[oid] = size
            self.touched.add(oid)
        self._queue(TOUCH + oid)  # another process wrote it: this read is its latest use
        return True

    def missing(self, oids: list[str]) -> list[str]:
        """Those of ``oids`` not cached (a file system call each: for a worker thread)."""
        return [oid for oid in oids if not self.has(oid)]

    def fill_from_git(self, git_dir: Path, oids: Iterable[str]) -> list[str]:
        """Copy blobs that are in the clone's object store into the cache; returns those copied."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return []
        proc = subprocess.Popen([GIT, "--git-dir", str(git_dir), "cat-file", "--batch"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=git_env(),
                                preexec_fn=die_with_parent())
        assert proc.stdin is not None and proc.stdout is not None
        feed = threading.Thread(target=_feed, args=(proc.stdin, wanted), daemon=True)
        feed.start()
        copied = []
        try:
            for _ in wanted:
                header = proc.stdout.readline().decode().split()
                if len(header) != 3:  # "<oid> missing"
                    continue
                oid, kind, size_text = header
                size = int(size_text)
                ok = self._write(oid, kind, size, proc.stdout)
                proc.stdout.read(1)  # the newline after the content
                if ok:
                    copied.append(oid)
        finally:
            proc.stdout.close()
            proc.wait()
            feed.join()
        self._report()
        return copied

    def _write(self, oid: str, kind: str, size: int, stream: object) -> bool:
        target = self.path(oid)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha1(f"{kind} {size}\0".encode())  # noqa: S324 - git's object id
        left = size
        with open(tmp, "wb") as out:
            while left:
                chunk = stream.read(min(CHUNK, left))  # type: ignore[attr-defined]
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        if left or kind != "blob" or digest.hexdigest() != oid:
            tmp.unlink(missing_ok=True)
            return False
        tmp.replace(target)
        with self.lock:
            self.used[oid] = size
            self.used.move_to_end(oid)
            self.unreported += size
        return True

    def put(self, data: bytes) -> str:
        """Keep one blob received from the remote; its id (the hash of its bytes)."""
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id
        with self.written:
            if oid in self.pending:
                return oid
            while self.pending_bytes > MEMORY_BYTES and self.pending:
                self.written.wait()
            self.pending[oid] = data
            self.pending_bytes += len(data)
        self._queue(oid)
        return oid

    def put_pack(self, pack: bytes) -> dict[str, int] | None:
        """Keep the blobs of a fetch's pack: decoded, named by their hashes and written by
        the writer process; {oid: size} of those written, when they are on disk. ``None``
        when there is no writer process (the caller decodes the pack itself)."""
        if not self.use_child:
            return None
        job = _PackJob(pack)
        with self.lock:
            item = f"{PACK}{next(self.pack_numbers)}"
            self.packs[item] = job
        self._queue(item)
        job.done.wait()
        return job.written

    def _queue(self, item: str) -> None:
        with self.written:
            self.outstanding += 1
        self._start_writer()
        self.writes.put(item)

    def _start_writer(self) -> None:
        if self.writer is None:
            self.writer = threading.Thread(target=self._write_behind, name="blob-writer", daemon=True)
            self.writer.start()

    def known(self, oid: str) -> bool:
        """Whether this process has ``oid`` cached (memory only: no file system call)."""
        with self.lock:
            return oid in self.pending or oid in self.used

    def forget(self, oid: str) -> None:
        """``oid``'s file is gone (``evict-cache`` from another process): not cached any more."""
        with self.lock:
            self.used.pop(oid, None)
            self.touched.discard(oid)

    def memory(self, oid: str) -> bytes | None:
        """The blob's bytes while they are still on their way to disk."""
        with self.lock:
            return self.pending.get(oid)

    def copy_to(self, oid: str, target: Path) -> None:
        """Write the blob's bytes to ``target`` (from memory while the write-behind has not
        reached it, else from its cache file)."""
        data = self.memory(oid)
        if data is not None:
            target.write_bytes(data)
        else:
            shutil.copyfile(self.path(oid), target)

    def size_of(self, oid: str) -> int:
        data = self.memory(oid)
        return len(data) if data is not None else os.stat(self.path(oid)).st_size

    def _write_behind(self) -> None:
        while True:
            items = [self.writes.get()]
            while len(items) < SEND_ITEMS:  # all that is queued goes in one pipe write
                try:
                    items.append(self.writes.get_nowait())
                except queue.Empty:
                    break
            if self._send(items):
                continue
            for item in items:  # no writer process: this thread writes them
                self._write_here(item)

    def _write_here(self, item: str) -> None:
        if item.startswith(PACK):  # no writer process: the caller decodes it itself
            self._pack_done(item, None)
            return
        try:
            self._write_one(item)
            idle = self.writes.empty() and time.monotonic() - self.reported_at > REPORT_SECONDS
            if idle or self.unreported >= REPORT_BYTES:
                self._report()
        except Exception as exc:  # the writer must live on: a blob not written is fetched again
            log.warning("blob cache: %s", exc)
        finally:
            with self.written:
                self.outstanding -= 1
                self.written.notify_all()

    def _send(self, items: list[str]) -> bool:
        """Hand ``items`` to the writer process (``blobwriter``); ``False`` if there is none."""
        child = self._child()
        if child is None:
            return False
        frames = []
        with self.lock:
            if self.child is not child:  # it died: its unanswered items are written here
                return False
            for item in items:
                if item.startswith(TOUCH):
                    frames.append(b"T %s\n" % item[len(TOUCH):].encode())
                elif item.startswith(PACK):
                    pack = self.packs[item].pack
                    frames.append(b"P %d\n" % len(pack))
                    frames.append(pack)
                else:
                    data = self.pending[item]
                    frames.append(b"W %s %d\n" % (item.encode(), len(data)))
                    frames.append(data)
            self.sent.extend(items)
        try:
            view = memoryview(b"".join(frames))
            while view:
                view = view[os.write(child.stdin_fd, view):]
        except OSError:  # it died: the answer reader gets its end of file and takes them back
            pass
        return True

    def _child(self) -> _Child | None:
        if self.child is None and self.use_child:
            try:
                self.child = _Child.start(self.folder)
            except OSError as exc:
                log.warning("blob cache: no writer process (%s): writing in the mount process", exc)
                self.use_child = False
                return None
            threading.Thread(target=self._answers, args=(self.child,), name="blob-writer-answers",
                             daemon=True).start()
        return self.child

    def _answers(self, child: _Child) -> None:
        """The writer process's answers, in the order of the items sent: one byte for a
        blob or a touch, a count line and the blobs written for a pack."""
        buffer = b""
        while True:
            try:
                chunk = os.read(child.stdout_fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            done = 0
            at = 0
            packs: list[tuple[str, dict[str, int] | None]] = []
            with self.written:
                while at < len(buffer):
                    if buffer[at] != ord("p"):
                        item = self.sent.popleft()
                        if buffer[at] != ord("t"):
                            self._done_writing(item, stored=buffer[at] == ord("1"))
                        at += 1
                        done += 1
                        continue
                    parsed = _pack_answer(buffer, at)
                    if parsed is None:
                        break  # the rest of this answer is still on its way
                    written, at = parsed
                    item = self.sent.popleft()
                    for oid, size in (written or {}).items():
                        self.used[oid] = size
                        self.used.move_to_end(oid)
                        self.touched.add(oid)
                        self.unreported += size
                    packs.append((item, written))
                buffer = buffer[at:]
                self.outstanding -= done
                self.written.notify_all()
                idle = not self.sent and self.writes.empty()
            for item, written in packs:
                self._pack_done(item, written)
            idle = idle and time.monotonic() - self.reported_at > REPORT_SECONDS
            if idle or self.unreported >= REPORT_BYTES:
                try:
                    self._report()
                except Exception as exc:
                    log.warning("blob cache: %s", exc)
        # The writer process is gone (killed, say): what it did not answer is written here,
        # and so is everything after it.
        with self.lock:
            self.child = None
            self.use_child = False
            unanswered = list(self.sent)
            self.sent.clear()
        child.close()
        with contextlib.suppress(OSError):
            child.proc.stdout.close()  # type: ignore[union-attr]
        if unanswered:
            log.warning("blob cache: the writer process ended; writing %d blobs here", len(unanswered))
        for item in unanswered:
            self._write_here(item)

    def _pack_done(self, item: str, written: dict[str, int] | None) -> None:
        with self.written:
            job = self.packs.pop(item)
            self.outstanding -= 1
            self.written.notify_all()
        job.written = written
        job.done.set()

    def _write_one(self, oid: str) -> None:
        if oid.startswith(TOUCH):
            with contextlib.suppress(OSError):
                os.utime(self.path(oid.removeprefix(TOUCH)))
            return
        data = self.pending[oid]
        target = os.path.join(self.folder, oid[:2], oid[2:])
        try:
            if oid[:2] not in self.subdirs:
                os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
                self.subdirs.add(oid[:2])
            # No fsync: the file is named by the hash of its bytes, checked when written,
            # and a blob lost in a crash is fetched again. The rename makes it whole or absent.
            tmp = f"{target}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.rename(tmp, target)
        except OSError as exc:  # disk full, say: the blob is fetched again when read
            log.warning("cannot write blob %s to the cache: %s", oid, exc)
            stored = False
        else:
            stored = True
        with self.written:
            self._done_writing(oid, stored)
            self.written.notify_all()

    def _done_writing(self, oid: str, stored: bool) -> None:
        """``oid`` is on disk (or failed to be): out of memory. Under ``self.lock``."""
        data = self.pending.pop(oid)
        if stored:
            self.used[oid] = len(data)
            self.used.move_to_end(oid)
            self.touched.add(oid)  # just written: its mtime is fresh
            self.unreported += len(data)
        self.pending_bytes -= len(data)

    def _report(self) -> None:
        """Add this process's new bytes to the host's count; past the limit, evict."""
        with self.lock:
            delta, self.unreported = self.unreported, 0
            self.reported_at = time.monotonic()
        if delta and self.usage.add(delta) > self.limit:
            self.evict(int(self.limit * EVICT_TO))

    def flush(self) -> None:
        """Wait until every received blob is on disk (and every mtime refreshed), and counted."""
        with self.written:
            while self.pending or self.outstanding:
                self.written.wait()
        self._report()

    def close(self) -> None:
        """Everything on disk, then the writer process ends (a later write is made here)."""
        self.flush()
        with self.lock:
            child, self.child, self.use_child = self.child, None, False
        if child is not None:
            child.close()

    def evict(self, limit: int) -> int:
        """Remove least recently used blobs of every mount until at most ``limit`` bytes
        remain on disk; returns bytes freed. Under the usage lock: one eviction at a time
        per host, and the count it leaves is the folder's, counted afresh."""
        freed = 0
        with self.usage.locked() as fd:
            found = sorted(scan(self.folder))
            total = sum(size for _, _, size in found)
            for _, oid, size in found:
                if total <= limit:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path(oid))
                self.forget(oid)
                total -= size
                freed += size
            Usage.write(fd, total)
        return freed


def _pack_answer(buffer: bytes, at: int) -> tuple[dict[str, int] | None, int] | None:
    """A pack's answer at ``at`` (``p<count>\\n`` and the blobs written) and where it ends,
    or ``None`` while it is incomplete; ``(None, end)`` when the writer could not decode it."""
    end = buffer.find(b"\n", at)
    if end < 0:
        return None
    count = int(buffer[at + 1:end])
    if count < 0:
        return None, end + 1
    written = {}
    for _ in range(count):
        line_end = buffer.find(b"\n", end + 1)
        if line_end < 0:
            return None
        oid, size = buffer[end + 1:line_end].split(b" ")
        written[oid.decode()] = int(size)
        end = line_end
    return written, end + 1


class _PackJob:
    def __init__(self, pack: bytes) -> None:
        self.pack = pack
        self.done = threading.Event()
        self.written: dict[str, int] | None = None


class _Child:
    """The writer process and the two ends of its pipes this process holds."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin_fd = proc.stdin.fileno()
        self.stdout_fd = proc.stdout.fileno()

    @classmethod
    def start(cls, folder: Path) -> _Child:
        # A fresh interpreter without site (-I -S): a start-up of milliseconds, and nothing
        # of this process (threads, FUSE) in it. It ends when its stdin closes.
        script = Path(__file__).with_name("blobwriter.py")
        # Started from the cache's long-lived write-behind thread (PR_SET_PDEATHSIG follows it).
        return cls(subprocess.Popen([sys.executable, "-I", "-S", str(script), str(folder)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                    preexec_fn=die_with_parent()))

    def close(self) -> None:
        """End the process: its input closes, and it exits once the frames before are done.
        Its output is closed by the thread reading it, at its end of file."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _feed(stdin: object, oids: list[str]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stdin.write("".join(f"{oid}\n" for oid in oids).encode())  # type: ignore[attr-defined]
    with contextlib.suppress(BrokenPipeError):
        stdin.close()  # type: ignore[attr-defined]
