"""Blobs by id over one protocol-v2 ``fetch`` request, without starting git.

A read miss through ``git fetch`` costs a git process, a pack written to disk, an
``index-pack`` and a ``cat-file`` to read it back. Here the request a lazy fetch would send
(``want`` lines, ``filter blob:none``, ``done``) goes over a kept-alive HTTP connection and
the pack in the answer is decoded in memory: whole objects and deltas (``ofs-delta`` and
``ref-delta`` against objects of the same pack). Each blob is checked against its id by the
cache. Anything unexpected raises ``PackError`` and the caller falls back to ``git fetch``.
"""

from __future__ import annotations

import struct
import zlib

from artifactd import gitdelta
from artifactd.fs.wire import Remote

OBJ_BLOB, OBJ_OFS_DELTA, OBJ_REF_DELTA = 3, 6, 7
WINDOW = 1 << 16


class PackError(RuntimeError):
    pass


def _pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


def request_body(oids: list[str], filtered: bool = True) -> bytes:
    """A lazy fetch of ``oids``; ``filtered=False`` for a commit wanted with all it holds."""
    return (_pkt("command=fetch\n") + _pkt("agent=git/artifact-fs\n") + _pkt("object-format=sha1\n")
            + b"0001" + _pkt("no-progress\n") + _pkt("ofs-delta\n")
            + b"".join(_pkt(f"want {oid}\n") for oid in oids)
            + (_pkt("filter blob:none\n") if filtered else b"") + _pkt("done\n") + b"0000")


def pack_of(response: bytes) -> bytes:
    """The pack bytes of a v2 fetch response (side-band 1 after ``packfile``)."""
    at, in_pack, chunks = 0, False, []
    while at + 4 <= len(response):
        length = int(response[at:at + 4], 16)
        if length < 4:
            at += 4
            continue
        payload = response[at + 4:at + length]
        at += length
        if not in_pack:
            in_pack = payload.rstrip(b"\n") == b"packfile"
            continue
        band = payload[:1]
        if band == b"\x01":
            chunks.append(payload[1:])
        elif band == b"\x03":
            raise PackError(payload[1:].decode(errors="replace").strip())
    if not in_pack:
        raise PackError("no packfile section in the response")
    return b"".join(chunks)


def apply_delta(base: bytes, delta: bytes) -> bytes:
    try:
        return gitdelta.apply_delta(base, delta)
    except gitdelta.DeltaError as exc:
        raise PackError(str(exc)) from None


def parse_pack(pack: bytes) -> list[bytes]:
    """The blobs of a pack, deltas resolved (their ids are the cache's to check)."""
    return [data for kind, data in parse_objects(pack) if kind == OBJ_BLOB]


def parse_objects(pack: bytes) -> list[tuple[int, bytes]]:
    """Every object of a pack as (type, bytes), deltas resolved (ref-deltas against blobs)."""
    if pack[:4] != b"PACK" or len(pack) < 32:
        raise PackError("not a pack")
    version, count = struct.unpack(">II", pack[4:12])
    if version not in (2, 3):
        raise PackError(f"pack version {version}")
    view = memoryview(pack)
    at = 12
    by_offset: dict[int, tuple[int, bytes]] = {}
    pending_ref: list[tuple[int, bytes, bytes]] = []
    for _ in range(count):
        start = at
        byte = pack[at]
        at += 1
        kind, shift = (byte >> 4) & 7, 4
        while byte & 0x80:
            byte = pack[at]
            at += 1
            shift += 7
        base_offset = -1
        base_id = b""
        if kind == OBJ_OFS_DELTA:
            byte = pack[at]
            at += 1
            back = byte & 0x7F
            while byte & 0x80:
                byte = pack[at]
                at += 1
                back = ((back + 1) << 7) | (byte & 0x7F)
            base_offset = start - back
        elif kind == OBJ_REF_DELTA:
            base_id = pack[at:at + 20]
            at += 20
        stream = zlib.decompressobj()
        parts = []
        while not stream.eof:
            window = view[at:at + WINDOW]
            if not window:
                raise PackError("truncated pack")
            parts.append(stream.decompress(window))
            at += len(window)
        at -= len(stream.unused_data)
        data = b"".join(parts)
        if kind == OBJ_OFS_DELTA:
            base_kind, base = by_offset[base_offset]
            by_offset[start] = (base_kind, apply_delta(base, data))
        elif kind == OBJ_REF_DELTA:
            pending_ref.append((start, base_id, data))
        else:
            by_offset[start] = (kind, data)
    if pending_ref:
        import hashlib

        by_id = {hashlib.sha1(b"%s %d\0" % (b"blob", len(d)) + d).digest(): d  # noqa: S324 - git ids
                 for k, d in by_offset.values() if k == OBJ_BLOB}
        for start, base_id, data in pending_ref:
            if base_id not in by_id:
                raise PackError("ref-delta base not in the pack")
            by_offset[start] = (OBJ_BLOB, apply_delta(by_id[base_id], data))
    return list(by_offset.values())


POST_HEADERS = {"Content-Type": "application/x-git-upload-pack-request",
                "Accept": "application/x-git-upload-pack-result", "Git-Protocol": "version=2"}


def fetch(remote: Remote, oids: list[str], filtered: bool = True) -> list[bytes]:
    return parse_pack(fetch_pack(remote, oids, filtered))


def fetch_pack(remote: Remote, oids: list[str], filtered: bool = True) -> bytes:
    """The pack of a v2 fetch of ``oids``, not decoded (``PackError`` for anything else)."""
    status, body = remote.request("POST", "/git-upload-pack", request_body(oids, filtered), POST_HEADERS)
    if status != 200:
        raise PackError(f"HTTP {status}")
    return pack_of(body)


def answer(status: int, body: bytes) -> list[bytes]:
    """The objects of a fetch's HTTP answer (``PackError`` for anything but a pack)."""
    if status != 200:
        raise PackError(f"HTTP {status}")
    return parse_pack(pack_of(body))


def ls_refs_body(*refs: str) -> bytes:
    """A v2 ``ls-refs`` request for the refs starting with any of ``refs``."""
    return (_pkt("command=ls-refs\n") + _pkt("agent=git/artifact-fs\n") + _pkt("object-format=sha1\n")
            + b"0001" + b"".join(_pkt(f"ref-prefix {ref}\n") for ref in refs) + b"0000")


def ls_ref(remote: Remote, ref: str) -> str | None:
    """The object id ``ref`` points at on the remote (one v2 ``ls-refs``), or ``None``."""
    return ls_refs(remote, ref).get(ref)


def ls_refs(remote: Remote, *refs: str) -> dict[str, str]:
    """The object ids of those of ``refs`` the remote has, by name: one v2 ``ls-refs``."""
    status, answer = remote.request("POST", "/git-upload-pack", ls_refs_body(*refs), POST_HEADERS)
    if status != 200:
        raise PackError(f"HTTP {status}")
    listed = parse_ls_refs(answer)
    if listed is None:
        raise PackError("not an ls-refs answer")
    return {name: oid for name, oid in listed.items() if name in refs}


def parse_ls_refs(answer: bytes) -> dict[str, str] | None:
    """Ref name -> object id of an ``ls-refs`` answer (``OID NAME[ ATTRIBUTES]`` lines, a
    flush), or ``None`` for anything else: only a well-formed answer may say a ref is
    missing."""
    found: dict[str, str] = {}
    at = 0
    while at + 4 <= len(answer):
        try:
            length = int(answer[at:at + 4], 16)
        except ValueError:
            return None
        if length == 0:
            return found if at + 4 == len(answer) else None
        if length < 4 or at + length > len(answer):
            return None
        oid, _, rest = answer[at + 4:at + length].rstrip(b"\n").partition(b" ")
        if len(oid) != 40 or not rest or any(c not in b"0123456789abcdef" for c in oid):
            return None
        found[rest.split(b" ")[0].decode(errors="replace")] = oid.decode("ascii")
        at += length
    return None
