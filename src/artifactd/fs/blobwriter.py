"""The blob cache's disk writer, a child process of the mount: ``python -I -S blobwriter.py FOLDER``.

Creating a cache file costs four system calls (open, write, close, rename). Made by a thread
of the mount process, each of them gives up and takes back the interpreter lock, and the
FUSE loop of the same process waits for that lock behind them on every request: writing
the 10k blobs of a read-all cost the reads more time than the blobs' fetch. Here they run
in a process of their own (the other core, no shared lock); the mount only pipes bytes.

Standard library only, run without ``site`` (a start-up of milliseconds). It reads frames
from stdin::

    W <oid> <size>\\n<size bytes>     write the blob (to a temporary name, renamed into place)
    T <oid>\\n                        refresh the file's mtime (the cache's LRU order)
    P <size>\\n<size bytes>           a fetch's pack: decode it, write each of its blobs

and answers each frame, in order, on stdout: one byte for ``W`` (``1`` written, ``0`` not:
the error goes to stderr) and ``T`` (``t``); for ``P``, ``p<count>\\n`` and a line
``<oid> <size>`` for each blob written (``p-1\\n``: not a pack it can read, the mount
decodes it itself). A ``W`` blob's id is the hash of its bytes, checked by the mount before
it is sent; a ``P`` blob's id is computed here from its bytes. An id that is not 40 hex
digits is refused, so no frame can name a path outside the folder. Decoding a batch of
thousands of blobs here, not in the mount, also keeps the interpreter lock of the mount's
FUSE loop free. It exits at the end of its input: when the mount process ends, whichever
way, its pipe closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import zlib
from pathlib import Path

OID = re.compile(rb"[0-9a-f]{40}")
READ = 1 << 20


def write_blob(folder: str, oid: str, data: memoryview, subdirs: set[str]) -> None:
    target = os.path.join(folder, oid[:2], oid[2:])
    if oid[:2] not in subdirs:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        subdirs.add(oid[:2])
    # No fsync: the file is named by the hash of its bytes, and a blob lost in a crash is
    # fetched again. The rename makes it whole or absent.
    tmp = f"{target}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    os.rename(tmp, target)


def write_pack(folder: str, pack: bytes, subdirs: set[str]) -> bytes:
    """The answer to a ``P`` frame: the pack's blobs written, each named by its hash."""
    from artifactd.fs.fetchpack import PackError, parse_pack  # the mount's own decoder

    try:
        blobs = parse_pack(pack)
    except (PackError, zlib.error, KeyError, IndexError, ValueError, TypeError) as exc:
        print(f"artifact-fs: blob writer: cannot decode a pack: {exc}", file=sys.stderr)
        return b"p-1\n"
    lines = []
    for data in blobs:
        oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's object id
        try:
            write_blob(folder, oid, memoryview(data), subdirs)
        except OSError as exc:  # disk full, say: the blob is fetched again when read
            print(f"artifact-fs: cannot write blob {oid} to the cache: {exc}", file=sys.stderr)
            continue
        lines.append(b"%s %d\n" % (oid.encode(), len(data)))
    return b"p%d\n" % len(lines) + b"".join(lines)


def serve(folder: str, source: int, sink: int) -> None:
    buffer = bytearray()
    subdirs: set[str] = set()
    while True:
        chunk = os.read(source, READ)
        if not chunk:
            return
        buffer += chunk
        answers = bytearray()
        at = 0
        while True:
            end = buffer.find(b"\n", at)
            if end < 0:
                break
            header = bytes(buffer[at:end]).split(b" ")
            if header[0] == b"T" and len(header) == 2:
                if OID.fullmatch(header[1]):
                    oid = header[1].decode()
                    with contextlib.suppress(OSError):  # evicted meanwhile: nothing to refresh
                        os.utime(os.path.join(folder, oid[:2], oid[2:]))
                answers += b"t"
                at = end + 1
                continue
            if header[0] == b"P" and len(header) == 2 and header[1].isdigit():
                size = int(header[1])
                if len(buffer) < end + 1 + size:
                    break  # the rest of this pack is still on its way
                answers += write_pack(folder, bytes(buffer[end + 1:end + 1 + size]), subdirs)
                at = end + 1 + size
                continue
            if header[0] != b"W" or len(header) != 3 or not header[2].isdigit():
                print(f"artifact-fs: blob writer: bad frame {bytes(header[0][:8])!r}", file=sys.stderr)
                return  # the mount writes the unanswered blobs itself
            size = int(header[2])
            if len(buffer) < end + 1 + size:
                break  # the rest of this blob is still on its way
            ok = b"0"
            if OID.fullmatch(header[1]):
                try:
                    data = memoryview(buffer)[end + 1:end + 1 + size]
                    write_blob(folder, header[1].decode(), data, subdirs)
                    ok = b"1"
                except OSError as exc:  # disk full, say: the blob is fetched again when read
                    print(f"artifact-fs: cannot write blob {header[1].decode()} to the cache: {exc}",
                          file=sys.stderr)
            data = memoryview(b"")  # the buffer is resized below: no view of it may remain
            answers += ok
            at = end + 1 + size
        del buffer[:at]
        view = memoryview(answers)
        while view:
            view = view[os.write(sink, view):]


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: blobwriter.py FOLDER", file=sys.stderr)
        return 2
    # Run without site: the package this file is in is found next to it (for its decoder).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        serve(sys.argv[1], sys.stdin.fileno(), sys.stdout.fileno())
    except BrokenPipeError:  # the mount is gone
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
