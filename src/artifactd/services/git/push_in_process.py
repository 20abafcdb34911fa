"""A small push received in process: no git process at all (the ``local`` repo store).

An agent's push is a few objects in a pack of a few kilobytes. Through C git it cost five
processes (receive-pack, index-pack, the connectivity ``rev-list``, ``true`` for the
alternate refs, the ``pre-receive`` hook). Here, on the worker's event loop:

1. the request: the v0/v1 commands (already read by ``pktline.PushCommandReader``), the
   ``push-options`` section, the pack;
2. the pack, read in memory (``storage/packparse``: zlib in C, ``OFS_DELTA``/``REF_DELTA``
   resolved, a thin pack's bases read from the repo through the worker's libgit2 reader),
   every object checked to be plainly well formed (``storage/objcheck``, a strict subset of
   ``receive.fsckObjects``) and connectivity checked: every object the new tips reach is in
   the pack or already in the repo;
3. the same admission as ``pre-receive`` gives (``PushSession.admit``: repo and account
   storage limits, the push intent), under the repo's push lock;
4. the pack written into ``objects/pack`` as received (re-written whole when it was thin)
   with its ``.idx``, via temporary names and renames (``storage/objectfiles``);
5. the refs swapped on their old values under git's lock files (``storage/refswap``;
   ``atomic``: all or nothing);
6. the push recorded (``PushSession.record``: size, events, pushlog, the reader warmed) and
   receive-pack's report (``unpack ok``, ``ok``/``ng`` per ref), side-band framed when asked.

Anything else is given to C git, byte for byte as it arrived (``serve`` answers None before
anything changed): a request over ``MAX_BODY`` or ``MAX_OBJECTS``, capabilities or
commands this path does not know, shallow pushes, the ``s3`` store, a pack that is not
valid or an object that is not plainly fine (so the client reads git's own error and git's
fsck decides), tags, a branch set to a non-commit, the deletion of the current branch, a
pack larger than the storage limits allow. So every push either takes this path whole or
takes C git's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pygit2

from artifactd.observability import GIT_BYTES_RECEIVED, GIT_BYTES_SENT, GIT_PUSHES_IN_PROCESS
from artifactd.services.backend import Backend
from artifactd.services.git.git_access import AuthorizedGit
from artifactd.services.git.pktline import (
    FLUSH,
    SIDEBAND_DATA,
    SIDEBAND_PROGRESS,
    PktError,
    PushCommands,
    encode,
    parse_length,
)
from artifactd.services.git.push_guard import PushSession
from artifactd.services.reads import content
from artifactd.storage import objcheck, objectfiles, packparse, refswap
from artifactd.storage.objectreader import ReadFailed
from artifactd.storage.pushhooks import RefUpdate

log = logging.getLogger("artifactd.git")

# A request body (commands, options and pack) up to this size is read whole in memory and
# received here; an agent's push is a few kilobytes. Larger ones stream through C git.
MAX_BODY = 1 << 20
# Objects in one pack received here: each costs an inflate and a parse in Python.
MAX_OBJECTS = 4000
# What git clients ask for that this path answers as receive-pack does (``quiet``: it sends
# no progress anyway; ``ofs-delta``: it reads both delta kinds).
CAPABILITIES = frozenset(("report-status", "report-status-v2", "side-band-64k", "side-band",
                          "atomic", "delete-refs", "ofs-delta", "push-options", "quiet",
                          "object-format=sha1"))
CAPABILITY_PREFIXES = ("agent=", "session-id=")
HOOK_DECLINED = "pre-receive hook declined"
SIDEBAND_MAX = {"side-band-64k": 65515, "side-band": 995}  # payload bytes per band packet
KIND_NAMES = {kind: name.decode() for kind, name in packparse.KIND_NAMES.items()}


class GiveToGit(Exception):
    """This push is not for the in-process path; C git receives it (nothing changed yet)."""


@dataclass(frozen=True)
class Request:
    commands: PushCommands
    options: tuple[str, ...]
    pack: bytes | None  # None when every command is a deletion

    @property
    def updates(self) -> tuple[RefUpdate, ...]:
        return tuple(RefUpdate(u.old, u.new, u.ref) for u in self.commands.updates)


def eligible(backend: Backend, commands: PushCommands) -> bool:
    """Worth reading the whole request for: a local store, the setting on, no shallow lines,
    known capabilities only."""
    if not backend.settings.git_in_process_push or backend.repos.remote or commands.shallow:
        return False
    return all(cap in CAPABILITIES or cap.startswith(CAPABILITY_PREFIXES)
               for cap in commands.capabilities)


def parse_request(commands: PushCommands, after: bytes) -> Request:
    """The push options and the pack following the command section; raises ``GiveToGit``."""
    refs = [u.ref for u in commands.updates]
    if len(set(refs)) != len(refs):
        raise GiveToGit("a ref named twice")
    for update in commands.updates:
        if update.old == update.new:
            raise GiveToGit("a command that changes nothing")
    options: list[str] = []
    rest = after
    if "push-options" in commands.capabilities:
        while True:
            if len(rest) < 4:
                raise GiveToGit("push options not terminated")
            try:
                length = parse_length(rest[:4])
            except PktError:
                raise GiveToGit("malformed push options") from None
            if length == 0:
                rest = rest[4:]
                break
            if length < 4 or len(rest) < length:
                raise GiveToGit("malformed push options")
            options.append(rest[4:length].decode("utf-8", "replace").removesuffix("\n"))
            rest = rest[length:]
    if all(update.is_delete for update in commands.updates):
        if rest:
            raise GiveToGit("a pack with deletions only")
        return Request(commands, tuple(options), None)
    return Request(commands, tuple(options), rest)


# -- checking the pack against the repo ------------------------------------------------------


@dataclass
class Checked:
    pack: packparse.ReceivedPack | None


def _read_object(repo: pygit2.Repository, oid: bytes) -> tuple[int, bytes] | None:
    try:
        kind, data = repo.odb.read(pygit2.Oid(raw=oid))
    except KeyError:
        return None
    return int(kind), bytes(data)


def _kind_in_repo(repo: pygit2.Repository, oid: bytes) -> int | None:
    try:
        kind, _size = repo.odb.read_header(pygit2.Oid(raw=oid))
    except KeyError:
        return None
    return int(kind)


def _head_ref(git_dir_head: str) -> str | None:
    return git_dir_head[5:].strip() if git_dir_head.startswith("ref: ") else None


def check(repo: pygit2.Repository, request: Request, head: str | None) -> Checked:
    """Read and check the pack, then connectivity and the commands against the repo; raises
    ``GiveToGit`` (or ``packparse.BadPack``/``TooLarge``, ``objcheck.Unusual``)."""
    received = None
    in_pack: dict[bytes, tuple[int, list[objcheck.Link]]] = {}
    if request.pack is not None:
        received = packparse.parse(request.pack, lambda oid: _read_object(repo, oid),
                                   max_objects=MAX_OBJECTS)
        for entry in received.entries:
            if entry.oid in in_pack:
                raise GiveToGit("an object twice in the pack")
            in_pack[entry.oid] = (entry.kind, objcheck.links(entry.kind, entry.data))
    for update in request.commands.updates:
        if update.is_delete:
            if update.ref == head:
                raise GiveToGit("deleting the current branch")
            if _kind_in_repo(repo, bytes.fromhex(update.old)) is None:
                raise GiveToGit("deleting a ref whose object is missing")
            continue
        tip = bytes.fromhex(update.new)
        kind = in_pack[tip][0] if tip in in_pack else _kind_in_repo(repo, tip)
        if kind is None:
            raise GiveToGit("a new tip that is nowhere")
        if update.ref.startswith("refs/heads/") and kind != objcheck.COMMIT:
            raise GiveToGit("a branch set to a non-commit")
        _connected(repo, tip, in_pack)
    return Checked(received)


def _connected(repo: pygit2.Repository, tip: bytes,
               in_pack: dict[bytes, tuple[int, list[objcheck.Link]]]) -> None:
    """Every object ``tip`` reaches is in the pack, or in the repo (where it was checked when
    it came: the walk stops there, as ``rev-list --not --all`` stops at what refs reach)."""
    seen: set[bytes] = set()
    stack: list[objcheck.Link] = [(None, tip)]
    while stack:
        expected, oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        found = in_pack.get(oid)
        if found is not None:
            kind, links = found
            stack.extend(links)
        else:
            kind_or_none = _kind_in_repo(repo, oid)
            if kind_or_none is None:
                raise GiveToGit(f"missing object {oid.hex()}")
            kind = kind_or_none
        if expected is not None and kind != expected:
            raise GiveToGit(f"object {oid.hex()} has an unexpected type")


# -- the answer -------------------------------------------------------------------------------


def report(commands: PushCommands, unpack: str, outcomes: Sequence[refswap.Outcome],
           messages: Sequence[str]) -> bytes:
    """receive-pack's answer: the report when asked for, then a flush with side-band; the
    ``messages`` (git's ``error:`` lines, a hook's output) go on band 2."""
    caps = commands.capabilities
    lines = [encode(f"unpack {unpack}\n".encode())]
    for outcome in outcomes:
        text = f"ok {outcome.ref}" if outcome.refused is None else \
            f"ng {outcome.ref} {outcome.refused}"
        lines.append(encode(f"{text}\n".encode()))
    body = b"".join(lines) + FLUSH if {"report-status", "report-status-v2"} & caps else b""
    band = next((b for b in ("side-band-64k", "side-band") if b in caps), None)
    if band is None:
        return body
    size = SIDEBAND_MAX[band]
    out = [encode(bytes([SIDEBAND_PROGRESS]) + m.encode("utf-8", "replace")[:size - 1] + b"\n")
           for m in messages]
    for at in range(0, len(body), size):
        out.append(encode(bytes([SIDEBAND_DATA]) + body[at:at + size]))
    return b"".join(out) + FLUSH


# -- one push ---------------------------------------------------------------------------------


async def serve(backend: Backend, authorized: AuthorizedGit, commands: PushCommands,
                after: bytes, started_us: int) -> bytes | None:
    """Receive the push whose command section was ``commands`` and whose remaining bytes are
    ``after``; the response body, or None for C git to receive it (nothing changed)."""
    git_dir = authorized.git_dir
    reader = content.pool(backend)
    try:
        request = parse_request(commands, after)
        head_text = (git_dir / "HEAD").read_text()
        checked = reader.use(git_dir, lambda repo: check(repo, request, _head_ref(head_text)))
    except (GiveToGit, packparse.BadPack, packparse.TooLarge, objcheck.Unusual, ReadFailed,
            pygit2.GitError, OSError, ValueError) as exc:
        log.debug("push of repo %s given to git: %s", authorized.repo.id, exc)
        GIT_PUSHES_IN_PROCESS.labels("given_to_git").inc()
        return None
    pack_file: tuple[bytes, list[tuple[bytes, int, int]]] | None = None
    received = checked.pack
    if received is not None and received.entries:
        if received.thin:
            pack_file = objectfiles.pack_bytes([
                objectfiles.PendingObject(e.oid, KIND_NAMES[e.kind], len(e.data), e.data)
                for e in received.entries])
        else:
            pack_file = (received.data, [(e.oid, e.crc, e.offset) for e in received.entries])
    incoming = 0 if pack_file is None else len(pack_file[0]) + _index_size(len(pack_file[1]))
    limit = authorized.max_input_bytes
    if limit is not None and request.pack is not None and len(request.pack) > limit:
        GIT_PUSHES_IN_PROCESS.labels("given_to_git").inc()
        return None  # git refuses it with its own message (receive.maxInputSize)
    GIT_PUSHES_IN_PROCESS.labels("received").inc()
    GIT_BYTES_RECEIVED.labels(authorized.service).inc(len(after))
    answer = await _receive(backend, authorized, request, pack_file, incoming, started_us)
    GIT_BYTES_SENT.labels(authorized.service).inc(len(answer))
    return answer


def _index_size(objects: int) -> int:
    return 8 + 256 * 4 + objects * (20 + 4 + 4) + 2 * 20


async def _receive(backend: Backend, authorized: AuthorizedGit, request: Request,
                   pack_file: tuple[bytes, list[tuple[bytes, int, int]]] | None, incoming: int,
                   started_us: int) -> bytes:
    commands = request.commands
    updates = [refswap.Update(u.old, u.new, u.ref) for u in commands.updates]
    session = await PushSession.open(backend, authorized.repo, started_us, hooks=False)
    try:
        verdict = await session.admit(request.updates, incoming)
        if verdict != "ok":
            refused = [refswap.Outcome(u.ref, HOOK_DECLINED) for u in updates]
            return report(commands, "ok", refused, [verdict.removeprefix("refuse ")])
        if pack_file is not None:
            objectfiles.write_received_pack(authorized.git_dir / "objects" / "pack", *pack_file)
            content.pool(backend).packed_here(authorized.git_dir)
        outcomes = _swap(backend, authorized, updates, atomic="atomic" in commands.capabilities)
        await session.record(reported=any(o.refused is None for o in outcomes))
    finally:
        await session.close()
    return report(commands, "ok", outcomes, [f"error: {o.error}" for o in outcomes if o.error])


class _RefsFailed(Exception):
    """libgit2 failed under the ref updates (kept apart from the reader's retry)."""


def _swap(backend: Backend, authorized: AuthorizedGit, updates: list[refswap.Update], *,
          atomic: bool) -> list[refswap.Outcome]:
    def work(repo: pygit2.Repository) -> list[refswap.Outcome]:
        try:
            return refswap.apply(repo, updates, atomic=atomic)
        except (pygit2.GitError, KeyError, ValueError) as exc:
            raise _RefsFailed(str(exc)) from None

    try:
        return content.pool(backend).use(authorized.git_dir, work)
    except (_RefsFailed, ReadFailed) as exc:
        log.warning("ref updates of repo %s failed: %s", authorized.repo.id, exc)
        reason = refswap.ATOMIC_FAILED if atomic else refswap.FAILED
        return [refswap.Outcome(u.ref, reason, str(exc)[:300]) for u in updates]
