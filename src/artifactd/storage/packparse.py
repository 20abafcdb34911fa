"""Read a received pack in process: every object's type, id and content, deltas resolved.

What ``git index-pack`` does for a small push, in memory: check the header and the trailing
SHA-1, inflate each entry (zlib, in C), resolve ``OFS_DELTA`` and ``REF_DELTA`` entries
(including a thin pack's bases, which the repo holds: ``base_lookup`` reads them), and compute
each object's id. The result carries what an ``.idx`` needs (offset and CRC-32 of each entry)
and the objects themselves, for the checks that follow (``objcheck``) and, for a thin pack,
for writing the pack again whole.

Two kinds of failure, kept apart on purpose:

- ``BadPack``: the bytes are not a valid pack (truncated, a wrong checksum, an entry that does
  not inflate to its declared size, a delta whose base is nowhere). The caller lets C git
  answer such a push, so that the client reads git's own error and nothing changes;
- ``TooLarge``: a valid-looking pack beyond what is worth doing in memory (declared sizes past
  ``MAX_INFLATED``, more than the caller's object count): also left to git.

Pure: bytes in, objects out; no file is read or written here.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from artifactd import gitdelta

COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
OFS_DELTA, REF_DELTA = 6, 7
KIND_NAMES = {COMMIT: b"commit", TREE: b"tree", BLOB: b"blob", TAG: b"tag"}
HEADER = 12  # "PACK", version, object count
TRAILER = 20  # SHA-1 of everything before it
# Inflated bytes one received pack may declare in total: a 1 MiB pack of highly compressible
# data could otherwise ask for gigabytes of memory (zlib reaches about 1000:1).
MAX_INFLATED = 64 << 20
_FEED = 1 << 13  # compressed bytes handed to zlib at a time (bounds what ``unused_data`` copies)

# A base the repo holds: (kind, content), or None when it has no such object.
BaseLookup = Callable[[bytes], tuple[int, bytes] | None]


class BadPack(Exception):
    """Not a valid pack; the message says why, as index-pack would."""


class TooLarge(Exception):
    """More objects or inflated bytes than the in-process path takes."""


@dataclass
class Entry:
    offset: int  # where the entry's header starts in the pack
    end: int  # just past its compressed data
    crc: int  # CRC-32 of the entry's bytes (header and compressed data), for the .idx
    kind: int  # 1-4 once resolved (a delta's is its base's)
    data: bytes  # the object's content once resolved; a delta's instructions before
    oid: bytes = b""  # 20 bytes once resolved
    base_offset: int | None = None  # OFS_DELTA
    base_oid: bytes | None = None  # REF_DELTA

    @property
    def resolved(self) -> bool:
        return bool(self.oid)


@dataclass
class ReceivedPack:
    data: bytes  # the whole pack as received, trailer included
    entries: list[Entry]
    thin_bases: int  # REF_DELTA bases read from the repo (not in the pack)

    @property
    def checksum(self) -> bytes:
        return self.data[-TRAILER:]

    @property
    def thin(self) -> bool:
        return self.thin_bases > 0

    def by_oid(self) -> dict[bytes, Entry]:
        return {entry.oid: entry for entry in self.entries}


def object_id(kind: int, data: bytes) -> bytes:
    digest = hashlib.sha1(b"%s %d\0" % (KIND_NAMES[kind], len(data)), usedforsecurity=False)
    digest.update(data)
    return digest.digest()


def parse(data: bytes, base_lookup: BaseLookup, *, max_objects: int) -> ReceivedPack:
    """Every object of ``data`` (a whole pack), resolved; raises ``BadPack`` or ``TooLarge``."""
    if len(data) < HEADER + TRAILER or data[:4] != b"PACK":
        raise BadPack("pack signature mismatch" if len(data) >= 4 else
                      "eof before pack header was fully read")
    version, count = struct.unpack(">II", data[4:HEADER])
    if version not in (2, 3):
        raise BadPack(f"pack version {version} unsupported")
    if count > max_objects:
        raise TooLarge(f"{count} objects")
    if hashlib.sha1(memoryview(data)[:-TRAILER], usedforsecurity=False).digest() != data[-TRAILER:]:
        raise BadPack("pack is corrupted (SHA1 mismatch)")
    view = memoryview(data)
    limit = len(data) - TRAILER
    entries: list[Entry] = []
    at = HEADER
    inflated = 0
    for _ in range(count):
        entry, declared = _read_entry(view, at, limit)
        inflated += declared
        if inflated > MAX_INFLATED:
            raise TooLarge(f"more than {MAX_INFLATED} inflated bytes")
        entries.append(entry)
        at = entry.end
    if at != limit:
        raise BadPack("pack has junk at the end")
    thin = _resolve(entries, base_lookup)
    return ReceivedPack(data, entries, thin)


def _read_entry(view: memoryview, start: int, limit: int) -> tuple[Entry, int]:
    at = start
    try:
        byte = view[at]
        at += 1
        kind = (byte >> 4) & 7
        size = byte & 0x0F
        shift = 4
        while byte & 0x80:
            byte = view[at]
            at += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise BadPack(f"bad object header at offset {start}")
        base_offset = base_oid = None
        if kind == OFS_DELTA:
            byte = view[at]
            at += 1
            distance = byte & 0x7F
            while byte & 0x80:
                byte = view[at]
                at += 1
                distance = ((distance + 1) << 7) | (byte & 0x7F)
            if distance <= 0 or distance > start:
                raise BadPack(f"delta base offset is out of bound at offset {start}")
            base_offset = start - distance
        elif kind == REF_DELTA:
            base_oid = bytes(view[at:at + 20])
            at += 20
        elif kind not in KIND_NAMES:
            raise BadPack(f"unknown object type {kind} at offset {start}")
    except IndexError:
        raise BadPack(f"pack has bad object at offset {start}: eof") from None
    if at > limit:
        raise BadPack(f"pack has bad object at offset {start}: eof")
    content, end = _inflate(view, at, limit, size, start)
    crc = zlib.crc32(view[start:end])
    entry = Entry(start, end, crc, kind, content, base_offset=base_offset, base_oid=base_oid)
    if kind in KIND_NAMES:
        entry.oid = object_id(kind, content)
    return entry, size


def _inflate(view: memoryview, at: int, limit: int, size: int, start: int) -> tuple[bytes, int]:
    """``size`` bytes inflated from the zlib stream at ``at``, and where that stream ends."""
    inflater = zlib.decompressobj()
    out: list[bytes] = []
    got = 0
    fed = at
    try:
        while not inflater.eof:
            if fed >= limit:
                raise BadPack(f"pack has bad object at offset {start}: inflate returned -5")
            chunk = view[fed:min(limit, fed + _FEED)]
            fed += len(chunk)
            piece = inflater.decompress(chunk, size + 1 - got)
            got += len(piece)
            out.append(piece)
            if got > size or inflater.unconsumed_tail:
                raise BadPack(f"pack has bad object at offset {start}: inflate returned 1")
    except zlib.error as exc:
        raise BadPack(f"pack has bad object at offset {start}: {exc}") from None
    if got != size:
        raise BadPack(f"pack has bad object at offset {start}: inflate returned -5")
    return b"".join(out), fed - len(inflater.unused_data)


def _resolve(entries: list[Entry], base_lookup: BaseLookup) -> int:
    """Apply every delta (repeatedly: a base may come later in the pack, or be a delta);
    bases found neither in the pack nor by ``base_lookup`` fail it. Returns how many bases
    came from the repo."""
    by_offset = {entry.offset: entry for entry in entries}
    by_oid = {entry.oid: entry for entry in entries if entry.resolved}
    pending = [entry for entry in entries if not entry.resolved]
    outside: dict[bytes, tuple[int, bytes]] = {}
    missing: set[bytes] = set()
    while pending:
        waiting: list[Entry] = []
        for entry in pending:
            base: tuple[int, bytes] | None = None
            if entry.base_offset is not None:
                found = by_offset.get(entry.base_offset)
                if found is None:
                    raise BadPack(f"no delta base at offset {entry.base_offset}")
                if found.resolved:
                    base = (found.kind, found.data)
            else:
                assert entry.base_oid is not None
                known = by_oid.get(entry.base_oid)
                if known is not None:
                    base = (known.kind, known.data)
                elif entry.base_oid in outside:
                    base = outside[entry.base_oid]
            if base is None:
                waiting.append(entry)
                continue
            entry.kind, entry.data = base[0], apply_delta(base[1], entry.data)
            entry.oid = object_id(entry.kind, entry.data)
            by_oid[entry.oid] = entry
        if len(waiting) == len(pending):
            # No progress inside the pack: what is left needs bases from the repo (a base
            # the repo lacks may still be in the pack, behind a base the repo has).
            found_any = False
            for entry in waiting:
                wanted = entry.base_oid
                if wanted is None or wanted in outside or wanted in missing:
                    continue
                found_outside = base_lookup(wanted)
                if found_outside is None:
                    missing.add(wanted)
                    continue
                outside[wanted] = found_outside
                found_any = True
            if not found_any:
                raise BadPack("pack has unresolved deltas")
        pending = waiting
    return len(outside)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    """git's delta format (artifactd.gitdelta), its errors as this module's."""
    try:
        return gitdelta.apply_delta(base, delta, max_result=MAX_INFLATED)
    except gitdelta.DeltaTooLarge as exc:
        raise TooLarge(str(exc)) from None
    except gitdelta.DeltaError as exc:
        raise BadPack(str(exc)) from None
