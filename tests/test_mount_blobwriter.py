"""The blob cache's disk writer: a child process of the mount (``fs/blobwriter.py``).

Real processes and a real folder: the mount's cache hands blobs to the writer process, the
mount writes them itself when that process is gone, the process ends with the mount, and
the writer refuses a frame whose id could name a path outside the folder.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from artifactd.fs import blobwriter
from artifactd.fs.blobcache import BlobCache


def oid_of(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def gone(pid: int, deadline: float = 30.0) -> bool:
    """Whether ``pid`` has exited (a zombie counts: it runs no more), waiting up to ``deadline``."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def test_blobs_are_written_by_the_writer_process_and_served_from_memory_until_then(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs", 1 << 30)
    blobs = [b"blob %d\n" % i * (i + 1) for i in range(500)]
    oids = [cache.put(data) for data in blobs]
    assert all(cache.has(oid) for oid in oids)  # from memory, or from disk: never missing
    cache.flush()
    assert cache.child is not None and cache.child.proc.poll() is None  # a process of its own
    assert cache.child.proc.pid != os.getpid()
    for oid, data in zip(oids, blobs, strict=True):
        assert oid == oid_of(data)
        assert cache.path(oid).read_bytes() == data
        assert cache.memory(oid) is None  # on disk now: out of memory
    assert cache.pending_bytes == 0
    assert not list((tmp_path / "blobs").rglob("*.tmp"))
    cache.touched.clear()  # a first hit again: the writer process refreshes the mtime
    os.utime(cache.path(oids[0]), (1, 1))
    assert cache.has(oids[0])
    cache.flush()
    assert cache.path(oids[0]).stat().st_mtime > 1
    writer = cache.child.proc
    cache.close()
    assert writer.returncode == 0


def test_when_the_writer_process_is_killed_the_mount_writes_the_blobs_itself(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs", 1 << 30)
    first = cache.put(b"first\n")
    cache.flush()
    assert cache.child is not None
    child = cache.child.proc
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    later = [cache.put(b"later %d\n" % i) for i in range(200)]
    cache.flush()  # nothing is lost: every blob reaches the disk
    assert cache.path(first).read_bytes() == b"first\n"
    for i, oid in enumerate(later):
        assert cache.path(oid).read_bytes() == b"later %d\n" % i
    assert cache.child is None and not cache.use_child
    cache.close()


def test_the_writer_process_ends_with_the_mount_process(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        from pathlib import Path
        from artifactd.fs.blobcache import BlobCache
        cache = BlobCache(Path({str(tmp_path / "blobs")!r}), 1 << 30)
        cache.put(b"x\\n")
        cache.flush()
        print(cache.child.proc.pid, flush=True)
        sys.stdin.read()
    """)
    mount = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert mount.stdout is not None
    writer = int(mount.stdout.readline())
    assert not gone(writer, deadline=0)
    mount.send_signal(signal.SIGKILL)  # no clean-up of its own: the pipe's end of file does it
    mount.wait(timeout=30)
    assert gone(writer)


def test_the_writer_refuses_an_id_that_is_not_an_object_id_and_writes_nothing_outside(tmp_path: Path) -> None:
    folder = tmp_path / "blobs"
    folder.mkdir()
    good = b"hello\n"
    frames = (b"W ../../escaped/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 3\nabc"
              + b"W %s %d\n%s" % (oid_of(good).encode(), len(good), good)
              + b"T ../../escaped\n"
              + b"W " + b"A" * 40 + b" 1\nz")
    result = subprocess.run([sys.executable, "-I", "-S", blobwriter.__file__, str(folder)], input=frames,
                            capture_output=True, timeout=60, check=True)
    assert result.stdout == b"01t0"  # refused, written, touched (nothing), refused
    assert (folder / oid_of(good)[:2] / oid_of(good)[2:]).read_bytes() == good
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        f"blobs/{oid_of(good)[:2]}/{oid_of(good)[2:]}"]


def test_a_fetchs_pack_is_decoded_verified_and_written_by_the_writer_process(tmp_path: Path) -> None:
    from artifactd.services.git.blob_fetch import pack  # the server's answer to a batch

    cache = BlobCache(tmp_path / "blobs", 1 << 30)
    blobs = [b"# file %d\n" % i + b"value = %d\n" % i * 20 for i in range(3000)]
    written = cache.put_pack(pack(blobs))
    assert written == {oid_of(data): len(data) for data in blobs}
    for data in blobs:  # on disk when put_pack returns, and known to the cache
        assert cache.path(oid_of(data)).read_bytes() == data
        assert cache.known(oid_of(data))
    assert cache.put_pack(b"PACK not a pack at all, but long enough to be read as one") is None
    assert cache.put_pack(pack([b"after a bad pack\n"])) == {oid_of(b"after a bad pack\n"): 17}
    assert cache.child is not None and cache.child.proc.poll() is None  # still the same process
    cache.close()
    assert cache.put_pack(pack([b"x\n"])) is None  # no writer process: the caller decodes it
