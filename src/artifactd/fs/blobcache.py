"""The blob cache: ``blobs/ab/cdef...`` by object id, verified when written, LRU-bounded.

Reads are served from these files. A blob is written from the clone's object store (after a
fetch) through ``git cat-file --batch``, checked against its id (SHA-1 of ``blob <size>\\0``
and the bytes), and renamed into place, so a reader never sees half a file. When the total
passes ``limit`` bytes the least recently used files go (an open file stays readable).

Blobs received over HTTP (``put``) are addressed by the hash of their bytes, so they are
verified by construction. They are served from memory at once and written to disk behind,
by one writer thread: creating a file costs 0.2-2 ms on a busy disk, and a read must not
wait for the thousands of files of its batch to be created. At most ``MEMORY_BYTES`` wait
in memory; past that ``put`` waits for the writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from artifactd.fs.gitcmd import GIT, git_env

CHUNK = 1 << 20
MEMORY_BYTES = 64 << 20  # blobs received but not yet on disk
TOUCH = "touch:"  # a writer-queue item that refreshes a file's mtime (LRU order)

log = logging.getLogger("artifact_fs")


class BlobCache:
    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.lock = threading.Lock()
        self.written = threading.Condition(self.lock)
        self.pending: dict[str, bytes] = {}  # received, not yet on disk: served from here
        self.pending_bytes = 0
        self.writes: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.outstanding = 0  # queued items the writer has not finished
        self.used: OrderedDict[str, int] = OrderedDict()  # oid -> size, least recent first
        self.total = 0
        self.subdirs: set[str] = set()  # the ab/ folders known to exist
        self.touched: set[str] = set()  # read at least once by this process
        found = []
        for sub in folder.glob("??"):
            for item in sub.iterdir():
                if len(item.name) == 38 and not item.name.endswith(".tmp"):
                    st = item.stat()
                    found.append((st.st_mtime, sub.name + item.name, st.st_size))
        for _, oid, size in sorted(found):
            self.used[oid] = size
            self.total += size

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
        path = self.path(oid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            if known:
                self.forget(oid)
            return False
        with self.lock:
            if oid not in self.used:
                self.total += size
            self.used[oid] = size
            self.touched.add(oid)
        return True

    def fill_from_git(self, git_dir: Path, oids: Iterable[str]) -> list[str]:
        """Copy blobs that are in the clone's object store into the cache; returns those copied."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return []
        proc = subprocess.Popen([GIT, "--git-dir", str(git_dir), "cat-file", "--batch"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=git_env())
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
        self.evict(self.limit)
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
            if oid not in self.used:
                self.total += size
            self.used[oid] = size
            self.used.move_to_end(oid)
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
            size = self.used.pop(oid, None)
            if size is not None:
                self.total -= size

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
            oid = self.writes.get()
            try:
                self._write_one(oid)
            finally:
                with self.written:
                    self.outstanding -= 1
                    self.written.notify_all()

    def _write_one(self, oid: str) -> None:
        if oid.startswith(TOUCH):
            with contextlib.suppress(OSError):
                os.utime(self.path(oid.removeprefix(TOUCH)))
            return
        data = self.pending[oid]
        target = self.path(oid)
        try:
            if oid[:2] not in self.subdirs:
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.subdirs.add(oid[:2])
            tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        except OSError as exc:  # disk full, say: the blob is fetched again when read
            log.warning("cannot write blob %s to the cache: %s", oid, exc)
            stored = False
        else:
            stored = True
        with self.written:
            if stored:
                if oid not in self.used:
                    self.total += len(data)
                self.used[oid] = len(data)
                self.used.move_to_end(oid)
                self.touched.add(oid)  # just written: its mtime is fresh
            del self.pending[oid]
            self.pending_bytes -= len(data)
            self.written.notify_all()
        if self.total > self.limit:
            self.evict(self.limit)

    def flush(self) -> None:
        """Wait until every received blob is on disk (and every mtime refreshed)."""
        with self.written:
            while self.pending or self.outstanding:
                self.written.wait()

    def evict(self, limit: int) -> int:
        """Remove least recently used blobs until at most ``limit`` bytes remain; returns bytes freed."""
        freed = 0
        with self.lock:
            while self.total > limit and self.used:
                oid, size = self.used.popitem(last=False)
                with contextlib.suppress(FileNotFoundError):
                    self.path(oid).unlink()
                self.total -= size
                freed += size
        return freed


def _feed(stdin: object, oids: list[str]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stdin.write("".join(f"{oid}\n" for oid in oids).encode())  # type: ignore[attr-defined]
    with contextlib.suppress(BrokenPipeError):
        stdin.close()  # type: ignore[attr-defined]
