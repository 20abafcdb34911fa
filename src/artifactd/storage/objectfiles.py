"""Write whole objects into a repo: as loose files, or as one pack and its index.

git's own rule for what a write arrives as (``transfer.unpackLimit``, 100 by default): a
few objects are written loose, many as one pack. REST commits follow it (``LOOSE_LIMIT``).
Loose files are what a stream of small commits to one repo wants: a pack per commit makes
every later lookup search one more index until maintenance repacks, which measured several
times the cost of the commit itself after a few hundred commits (docs/benchmarks.md); a large
commit as one pack is two files instead of thousands.

Loose objects are git's format: zlib at git's loose compression level (1), written to a
temporary file in the fan-out directory and renamed to their id (an object of that id is the
same bytes, so a concurrent writer of it is harmless). A pack is format v2 with an ``.idx``
v2, no deltas (maintenance repacks later), written to temporary files named as git's own
(``tmp_pack_*`` and ``tmp_idx_*``, no ``.pack`` or ``.idx`` suffix, so that a ``git repack``
listing the directory never takes one for a pack) and renamed into place, the ``.idx`` last:
a reader sees a pack only once its index is there, and never half a pack.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = {"commit": 1, "tree": 2, "blob": 3}
LOOSE_LIMIT = 100  # fewer objects than this are written loose (git's unpackLimit default)
LOOSE_LEVEL = 1  # git's core.looseCompression default
CHUNK = 1 << 20
_LARGE_OFFSET = 0x80000000


@dataclass(frozen=True)
class PendingObject:
    """An object to write: its id (20 bytes), kind, size, and content or a file holding it."""

    oid: bytes
    kind: str
    size: int
    data: bytes | None = None
    file: Path | None = None

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.file is not None
        with open(self.file, "rb") as source:
            while chunk := source.read(CHUNK):
                yield chunk


def object_id(kind: str, size: int, chunks: Iterator[bytes]) -> bytes:
    """git's object id: SHA-1 of ``<kind> <size>\\0`` and the content."""
    digest = hashlib.sha1(f"{kind} {size}\0".encode(), usedforsecurity=False)
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def entry_header(kind: int, size: int) -> bytes:
    """The object header of a pack entry: type and size, little-endian base-128."""
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


@contextlib.contextmanager
def _pack_temps(pack_dir: Path) -> Iterator[tuple[Path, Path]]:
    """Temporary paths for a pack and its index in ``pack_dir`` (see the module docstring);
    whichever is still there afterwards is removed."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    pack_tmp, idx_tmp = pack_dir / f"tmp_pack_{token}", pack_dir / f"tmp_idx_{token}"
    try:
        yield pack_tmp, idx_tmp
    finally:
        for leftover in (pack_tmp, idx_tmp):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _install_pack(pack_tmp: Path, idx_tmp: Path, checksum: bytes) -> None:
    """Rename a written pack and index into place, the index last."""
    name = f"pack-{checksum.hex()}"
    os.replace(pack_tmp, pack_tmp.parent / f"{name}.pack")
    os.replace(idx_tmp, idx_tmp.parent / f"{name}.idx")


def write_pack(pack_dir: Path, objects: list[PendingObject]) -> int:
    """Write ``objects`` (distinct ids) as ``pack-<checksum>.pack`` and ``.idx`` in
    ``pack_dir``; the bytes the two files hold."""
    with _pack_temps(pack_dir) as (pack_tmp, idx_tmp):
        index: list[tuple[bytes, int, int]] = []  # (id, crc32, offset)
        digest = hashlib.sha1(usedforsecurity=False)
        offset = 0
        with open(pack_tmp, "wb") as out:
            def emit(chunk: bytes) -> int:
                out.write(chunk)
                digest.update(chunk)
                return len(chunk)

            offset += emit(b"PACK" + struct.pack(">II", 2, len(objects)))
            for item in objects:
                start = offset
                head = entry_header(KINDS[item.kind], item.size)
                crc = zlib.crc32(head)
                offset += emit(head)
                deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION)
                for chunk in item.chunks():
                    packed = deflate.compress(chunk)
                    if packed:
                        crc = zlib.crc32(packed, crc)
                        offset += emit(packed)
                packed = deflate.flush()
                crc = zlib.crc32(packed, crc)
                offset += emit(packed)
                index.append((item.oid, crc, start))
            checksum = digest.digest()
            out.write(checksum)
        idx = _index(index, checksum)
        idx_tmp.write_bytes(idx)
        _install_pack(pack_tmp, idx_tmp, checksum)
        return offset + len(checksum) + len(idx)


def pack_bytes(objects: list[PendingObject]) -> tuple[bytes, list[tuple[bytes, int, int]]]:
    """``objects`` (distinct ids, contents in memory) as one pack with no deltas, and its
    index entries ((id, crc32, offset) each): a thin push's objects and bases, whole."""
    parts = [b"PACK" + struct.pack(">II", 2, len(objects))]
    offset = len(parts[0])
    entries: list[tuple[bytes, int, int]] = []
    for item in objects:
        assert item.data is not None
        packed = entry_header(KINDS[item.kind], item.size) + zlib.compress(item.data)
        entries.append((item.oid, zlib.crc32(packed), offset))
        parts.append(packed)
        offset += len(packed)
    body = b"".join(parts)
    return body + hashlib.sha1(body, usedforsecurity=False).digest(), entries


def write_received_pack(pack_dir: Path, data: bytes, entries: list[tuple[bytes, int, int]]) -> int:
    """Keep a received pack (``data``, its trailer included) as it came, with an ``.idx`` of
    ``entries`` ((id, crc32, offset) each), named and installed as ``write_pack`` does (what
    ``git index-pack`` leaves for a pack that needed no fixing); the bytes the two files hold."""
    checksum = data[-20:]
    with _pack_temps(pack_dir) as (pack_tmp, idx_tmp):
        pack_tmp.write_bytes(data)
        idx = _index(entries, checksum)
        idx_tmp.write_bytes(idx)
        _install_pack(pack_tmp, idx_tmp, checksum)
        return len(data) + len(idx)


def _index(entries: list[tuple[bytes, int, int]], pack_checksum: bytes) -> bytes:
    """``.idx`` version 2: fan-out table, sorted ids, CRC-32s, offsets (large ones in the
    64-bit table), the pack's checksum and the index's own."""
    entries = sorted(entries)
    fanout = [0] * 256
    for oid, _, _ in entries:
        fanout[oid[0]] += 1
    running = 0
    for i in range(256):
        running += fanout[i]
        fanout[i] = running
    small: list[int] = []
    large: list[int] = []
    for _, _, offset in entries:
        if offset < _LARGE_OFFSET:
            small.append(offset)
        else:
            small.append(_LARGE_OFFSET | len(large))
            large.append(offset)
    parts = [b"\xfftOc", struct.pack(">I", 2), struct.pack(">256I", *fanout),
             b"".join(oid for oid, _, _ in entries),
             b"".join(struct.pack(">I", crc & 0xFFFFFFFF) for _, crc, _ in entries),
             b"".join(struct.pack(">I", value) for value in small),
             b"".join(struct.pack(">Q", value) for value in large), pack_checksum]
    body = b"".join(parts)
    return body + hashlib.sha1(body, usedforsecurity=False).digest()


def write_loose(objects_dir: Path, objects: list[PendingObject]) -> int:
    """Write each object as a loose file; the bytes written."""
    total = 0
    for item in objects:
        name = item.oid.hex()
        fanout = objects_dir / name[:2]
        fanout.mkdir(exist_ok=True)
        target = fanout / name[2:]
        temporary = fanout / f"tmp_obj_{secrets.token_hex(6)}"
        try:
            deflate = zlib.compressobj(LOOSE_LEVEL)
            with open(temporary, "wb") as out:
                out.write(deflate.compress(f"{item.kind} {item.size}\0".encode()))
                for chunk in item.chunks():
                    out.write(deflate.compress(chunk))
                out.write(deflate.flush())
                total += out.tell()
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
    return total


def write_objects(objects_dir: Path, objects: list[PendingObject]) -> int:
    """Loose below ``LOOSE_LIMIT`` objects, else one pack; the bytes written."""
    if len(objects) < LOOSE_LIMIT:
        return write_loose(objects_dir, objects)
    return write_pack(objects_dir / "pack", objects)
