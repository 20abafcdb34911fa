"""The blob cache: ``blobs/ab/cdef...`` by object id, verified when written, LRU-bounded.

Reads are served from these files. A blob is written from the clone's object store (after a
fetch) through ``git cat-file --batch``, checked against its id (SHA-1 of ``blob <size>\\0``
and the bytes), and renamed into place, so a reader never sees half a file. When the total
passes ``limit`` bytes the least recently used files go (an open file stays readable).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from artifactd.fs.gitcmd import GIT, git_env

CHUNK = 1 << 20


class BlobCache:
    def __init__(self, folder: Path, limit: int) -> None:
        self.folder = folder
        self.limit = limit
        self.lock = threading.Lock()
        self.used: OrderedDict[str, int] = OrderedDict()  # oid -> size, least recent first
        self.total = 0
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
        with self.lock:
            if oid in self.used:
                self.used.move_to_end(oid)
                return True
        return False

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

    def put(self, data: bytes) -> str | None:
        """Store one blob received from the remote; its id, or ``None`` if it is not a blob."""
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id
        target = self.path(oid)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        with self.lock:
            if oid not in self.used:
                self.total += len(data)
            self.used[oid] = len(data)
            self.used.move_to_end(oid)
        return oid

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
