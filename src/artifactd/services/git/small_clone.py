"""A protocol-v2 clone of a small repo answered in process: ``ls-refs`` and the ``fetch``.

A clone is three requests: the capability advertisement (served from memory, see
``git_rpc``), ``ls-refs``, and a ``fetch`` of the ref tips with no haves. For the small repos
agents make (a few commits, a few files), starting ``upload-pack`` twice and its
``pack-objects`` once is most of the server's cost of the clone; libgit2 reads the refs and
the few objects in tens of microseconds each. So both requests are answered from the worker's
object reader when they have exactly the shape a clone (or a fresh fetch) sends:

- ``ls-refs`` with the arguments git sends (``peel``, ``symrefs``, ``unborn``,
  ``ref-prefix``), answered as ``ls-refs.c`` does: ``HEAD`` first (``unborn HEAD`` when its
  branch does not exist yet and the client asked for that), then every matching ref sorted
  by name, ``symref-target:`` and ``peeled:`` attributes, a flush;
- ``fetch`` of wants that are all ref tips (what the same repo's ``ls-refs`` names), with
  no haves, ``shallow``/``deepen``, ``filter``, ``want-ref``, ``wait-for-done``,
  ``sideband-all``, ``packfile-uris`` or server options; ``thin-pack``, ``ofs-delta``,
  ``no-progress`` and ``include-tag`` are honoured (the first two only allow what we never
  use, deltas; ``include-tag`` adds the annotated tags under ``refs/tags/`` whose object is
  sent, as pack-objects does). The answer is upload-pack's for that request: a ``packfile``
  section holding every reachable object whole on side band 1, then a flush.

Anything else, a repo larger than ``MAX_OBJECTS`` objects or ``MAX_BYTES`` of object data
(or ``SMALL_REPO_BYTES`` on disk), a shallow repo, a symbolic ref other than ``HEAD``, a ref
to a missing object, or a read that fails, goes to upload-pack unchanged, so git keeps
deciding (and producing the errors of) every other case. Protocol v0/v1 clones also go to
git. ``artifactd_git_in_process_total{command}`` counts the requests answered here.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pygit2

from artifactd.observability import GIT_IN_PROCESS
from artifactd.services.backend import Backend
from artifactd.services.git.blob_fetch import INLINE_BYTES, packets, response
from artifactd.services.git.pktline import FLUSH, encode_line
from artifactd.services.reads import content
from artifactd.storage import clonesource
from artifactd.storage.objectfiles import entry_header
from artifactd.storage.objectreader import ReadFailed

MAX_REQUEST = 256 << 10  # a larger request is not a small clone's
SMALL_REPO_BYTES = 1 << 20  # repos larger than this on disk go to git without a walk
MAX_OBJECTS = 2000
MAX_BYTES = 4 << 20  # uncompressed object bytes
MAX_PREFIXES = 1024  # git ignores prefixes past 65,536; far fewer are left to it anyway
LEVEL = 1

_CAPABILITIES = re.compile(rb"agent=[\x21-\x7e]{1,200}|object-format=sha1")
_WANT = re.compile(rb"want ([0-9a-f]{40})")
_FETCH_FLAGS = frozenset({b"thin-pack", b"no-progress", b"ofs-delta", b"include-tag", b"done"})
_LS_REFS_FLAGS = frozenset({b"peel", b"symrefs", b"unborn"})


def _sections(request: bytes, command: bytes) -> tuple[list[bytes], list[bytes]] | None:
    """The capability and argument lines of a one-command v2 request, if it is ``command``
    with only the capabilities we answer for; else ``None``."""
    parts = packets(request)
    if not parts or parts[0] != b"command=" + command or parts[-1] != b"":
        return None
    body = parts[1:-1]
    if b"" in body:
        return None  # a flush inside: more than one request
    if None in body:
        delim = body.index(None)
        capabilities, arguments = body[:delim], body[delim + 1:]
    else:
        capabilities, arguments = body, []
    if None in arguments or not all(
        c is not None and _CAPABILITIES.fullmatch(c) for c in capabilities
    ):
        return None
    return [c for c in capabilities if c is not None], [a for a in arguments if a is not None]


@dataclass(frozen=True)
class LsRefs:
    peel: bool
    symrefs: bool
    unborn: bool
    prefixes: tuple[str, ...]


def parse_ls_refs(request: bytes) -> LsRefs | None:
    sections = _sections(request, b"ls-refs")
    if sections is None:
        return None
    flags: set[bytes] = set()
    prefixes: list[str] = []
    for argument in sections[1]:
        if argument in _LS_REFS_FLAGS:
            flags.add(argument)
        elif argument.startswith(b"ref-prefix ") and len(argument) > len(b"ref-prefix "):
            try:
                prefixes.append(argument[len(b"ref-prefix "):].decode("utf-8"))
            except UnicodeDecodeError:
                return None
        else:
            return None
    if len(prefixes) > MAX_PREFIXES:
        return None
    return LsRefs(b"peel" in flags, b"symrefs" in flags, b"unborn" in flags, tuple(prefixes))


@dataclass(frozen=True)
class Fetch:
    wants: tuple[str, ...]  # deduplicated, in request order
    include_tag: bool


def parse_fetch(request: bytes) -> Fetch | None:
    sections = _sections(request, b"fetch")
    if sections is None:
        return None
    wants: dict[str, None] = {}
    include_tag = False
    for argument in sections[1]:
        if argument in _FETCH_FLAGS:
            include_tag = include_tag or argument == b"include-tag"
            continue
        match = _WANT.fullmatch(argument)
        if match is None:
            return None
        wants[match[1].decode()] = None
    if not wants:
        return None
    return Fetch(tuple(wants), include_tag)


def ls_refs_answer(refs: clonesource.Refs, request: LsRefs) -> bytes:
    """``upload-pack``'s answer to ``request`` for a repo with ``refs`` (ls-refs.c)."""

    def wanted(name: str) -> bool:
        return not request.prefixes or any(name.startswith(p) for p in request.prefixes)

    def line(oid: str | None, name: str, target: str | None, peeled: str | None) -> bytes:
        text = f"{oid} {name}" if oid is not None else f"unborn {name}"
        if request.symrefs and target is not None:
            text += f" symref-target:{target}"
        if request.peel and oid is not None and peeled is not None:
            text += f" peeled:{peeled}"
        return encode_line(text)

    out: list[bytes] = []
    if wanted("HEAD") and (refs.head_oid is not None or (
            request.unborn and request.symrefs and refs.head_target is not None)):
        out.append(line(refs.head_oid, "HEAD", refs.head_target, refs.head_peeled))
    out += [line(ref.oid, ref.name, None, ref.peeled) for ref in refs.refs if wanted(ref.name)]
    out.append(FLUSH)
    return b"".join(out)


def pack(objects: list[tuple[bytes, int, bytes]]) -> bytes:
    """A version-2 packfile holding ``objects`` whole, with its SHA-1 trailer."""
    parts = [b"PACK", struct.pack(">II", 2, len(objects))]
    for _oid, kind, data in objects:
        parts += (entry_header(kind, len(data)), zlib.compress(data, LEVEL))
    body = b"".join(parts)
    return body + hashlib.sha1(body, usedforsecurity=False).digest()


def _clone_objects(repo: pygit2.Repository, fetch: Fetch) -> list[tuple[bytes, int, bytes]]:
    refs = clonesource.list_refs(repo)
    tips = {ref.oid for ref in refs.refs}
    if refs.head_oid is not None:
        tips.add(refs.head_oid)
    if not set(fetch.wants) <= tips:
        raise clonesource.Unusual("a want that is not a ref tip")
    wants = list(fetch.wants)
    objects = clonesource.reachable(repo, wants, max_objects=MAX_OBJECTS, max_bytes=MAX_BYTES)
    if fetch.include_tag:
        sent = {raw.hex() for raw, _, _ in objects}
        extra = [ref.oid for ref in refs.refs if ref.name.startswith("refs/tags/")
                 and ref.peeled is not None and ref.peeled in sent and ref.oid not in sent]
        if extra:
            objects = clonesource.reachable(repo, wants + extra, max_objects=MAX_OBJECTS,
                                            max_bytes=MAX_BYTES)
    return objects


_GIVE_UP = (clonesource.TooLarge, clonesource.Unusual, ReadFailed, pygit2.GitError, KeyError,
            ValueError, OSError)


def _eligible(backend: Backend, git_dir: Path, size_bytes: int) -> bool:
    return (backend.settings.git_in_process_clone and size_bytes <= SMALL_REPO_BYTES
            and not (git_dir / "shallow").exists())


async def serve(backend: Backend, git_dir: Path, size_bytes: int, request: bytes,
                ) -> tuple[bytes, bool] | None:
    """The whole response to ``request`` and whether it carries a pack, if it is a small
    clone's ``ls-refs`` or ``fetch`` that we answer; else ``None`` (upload-pack answers it)."""
    if len(request) > MAX_REQUEST or not _eligible(backend, git_dir, size_bytes):
        return None
    reader = content.pool(backend)
    listing = parse_ls_refs(request)
    if listing is not None:
        try:
            refs = reader.use(git_dir, clonesource.list_refs)
        except _GIVE_UP:
            return None
        GIT_IN_PROCESS.labels("ls-refs").inc()
        return ls_refs_answer(refs, listing), False
    fetch = parse_fetch(request)
    if fetch is None:
        return None
    try:
        objects = reader.use(git_dir, lambda repo: _clone_objects(repo, fetch))
    except _GIVE_UP:
        return None
    GIT_IN_PROCESS.labels("fetch").inc()
    if sum(len(data) for _, _, data in objects) <= INLINE_BYTES:
        return response(pack(objects)), True
    return await asyncio.to_thread(lambda: response(pack(objects))), True
