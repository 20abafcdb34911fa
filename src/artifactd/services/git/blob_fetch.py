"""Partial-clone hydration without starting git: protocol-v2 fetches of a few small blobs.

A ``--filter=blob:none`` clone (ArtifactFS, or any lazy clone reading a file) fetches each
missing blob with a request of its own: ``want <blob>``, ``done``, no haves. upload-pack
answers with a one-object pack, but starting upload-pack and then its pack-objects costs
4-5 ms, most of the server's share of such a request. Here exactly that request shape is
answered from the worker's in-process object reader (libgit2, alternates included) as a
pack with the blobs stored whole, which is what upload-pack sends for
objects that have no delta base on the client.

The shape is checked strictly, including the clone's ``filter`` line, which every lazy
fetch repeats and ordinary clones lack. Anything else goes to upload-pack unchanged, so git
keeps deciding every other case and producing its own errors: haves, shallow and deepen
options, ``include-tag`` (a tag pointing at a blob would have to come too), filters other
than the blob and tree ones partial clones use, server options, a want that is not a blob
or not in the repo, more than ``MAX_WANTS`` objects or more than ``MAX_BYTES`` of them.
Batches are what ArtifactFS sends (thousands of blobs, several MiB): a pack of more than
``INLINE_BYTES`` is compressed on a worker thread (zlib releases the GIL), at level 1,
since on the links these fetches take, time matters more than a few bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import zlib
from pathlib import Path

from artifactd.observability import GIT_BLOB_FETCHES
from artifactd.services.backend import Backend
from artifactd.services.git.pktline import FLUSH, PktError, encode, encode_line, parse_length
from artifactd.services.reads import content
from artifactd.storage.objectfiles import entry_header
from artifactd.storage.objectreader import ReadFailed

MAX_REQUEST = 256 << 10  # a request larger than this is not a hydration fetch
MAX_WANTS = 4096
MAX_BYTES = 16 << 20  # total uncompressed blob bytes served without git
INLINE_BYTES = 256 << 10  # packs up to this size are built on the event loop
LEVEL = 1
SIDEBAND_DATA_MAX = 65515  # LARGE_PACKET_MAX (65520) less the length and the band byte

_WANT = re.compile(rb"want ([0-9a-f]{40})")
_CAPABILITIES = re.compile(rb"agent=[\x21-\x7e]{1,200}|object-format=sha1")
_ARGUMENTS = frozenset({b"thin-pack", b"no-progress", b"ofs-delta", b"done"})
# The filters a partial clone records and repeats on every lazy fetch. A filter never drops
# an object that is asked for by name, so with only blobs wanted they all mean "send these".
_FILTER = re.compile(rb"filter (blob:none|blob:limit=\d{1,12}[kmg]?|tree:\d{1,6})")
_OBJ_BLOB = 3
DELIM = b"0001"


def packets(request: bytes) -> list[bytes | None] | None:
    """The request's pkt-lines (``None`` for a delimiter, ``b""`` for a flush), or ``None``."""
    found: list[bytes | None] = []
    at = 0
    try:
        while at < len(request):
            header = request[at:at + 4]
            if header == DELIM:
                found.append(None)
                at += 4
                continue
            length = parse_length(header)
            if length == 0:
                found.append(b"")
                at += 4
                continue
            if length < 4 or at + length > len(request):
                return None
            found.append(request[at + 4:at + length].removesuffix(b"\n"))
            at += length
    except PktError:
        return None
    return found


def wanted_blobs(request: bytes) -> list[str] | None:
    """The object ids of a hydration fetch, in request order and deduplicated; else ``None``."""
    parts = packets(request)
    if not parts or parts[0] != b"command=fetch" or parts[-1] != b"":
        return None
    try:
        delim = parts.index(None)
    except ValueError:
        return None
    capabilities, arguments = parts[1:delim], parts[delim + 1:-1]
    if not all(p is not None and _CAPABILITIES.fullmatch(p) for p in capabilities):
        return None
    wants: dict[str, None] = {}
    filters = 0
    for packet in arguments:
        if packet is None or packet == b"":
            return None  # a second delimiter or flush: not the one-section request we serve
        if packet in _ARGUMENTS:
            continue
        if _FILTER.fullmatch(packet):
            filters += 1  # git refuses two filter lines; so let it answer that request
            if filters > 1:
                return None
            continue
        match = _WANT.fullmatch(packet)
        if match is None:
            return None
        wants[match[1].decode()] = None
    # A lazy fetch always repeats its clone's filter. Requiring it keeps ordinary clones (the
    # same want/done shape, but for commits) from paying an object lookup before upload-pack.
    if filters != 1 or b"done" not in arguments or not wants or len(wants) > MAX_WANTS:
        return None
    return list(wants)


def pack(blobs: list[bytes]) -> bytes:
    """A version-2 packfile holding ``blobs`` whole (no deltas), with its SHA-1 trailer."""
    parts = [b"PACK", struct.pack(">II", 2, len(blobs))]
    for data in blobs:
        parts += (entry_header(_OBJ_BLOB, len(data)), zlib.compress(data, LEVEL))
    body = b"".join(parts)
    return body + hashlib.sha1(body, usedforsecurity=False).digest()


def response(packfile: bytes) -> bytes:
    """The fetch response: a ``packfile`` section, the pack on side band 1, a flush."""
    out = [encode_line("packfile")]
    for at in range(0, len(packfile), SIDEBAND_DATA_MAX):
        out.append(encode(b"\x01" + packfile[at:at + SIDEBAND_DATA_MAX]))
    out.append(FLUSH)
    return b"".join(out)


async def serve(backend: Backend, git_dir: Path, request: bytes) -> bytes | None:
    """The whole response to ``request`` if it is a hydration fetch we answer; else ``None``."""
    wants = wanted_blobs(request)
    if wants is None:
        return None
    pool = content.pool(backend)
    try:
        infos = await pool.run(git_dir, [("info", sha) for sha in wants])
        if any(info is None or info.type != "blob" for info, _ in infos):
            return None
        if sum(info.size for info, _ in infos if info is not None) > MAX_BYTES:
            return None
        answers = await pool.run(git_dir, [("contents", sha) for sha in wants])
    except ReadFailed:
        return None  # upload-pack will say what is wrong with the repository
    blobs = [data for _, data in answers if data is not None]
    if len(blobs) != len(wants):
        return None  # gone between the two round trips (pruned): let git answer
    GIT_BLOB_FETCHES.inc()
    if sum(len(data) for data in blobs) <= INLINE_BYTES:
        return response(pack(blobs))
    return await asyncio.to_thread(lambda: response(pack(blobs)))
