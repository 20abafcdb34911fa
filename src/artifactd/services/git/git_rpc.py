"""One smart-HTTP exchange: C git's upload-pack or receive-pack, streamed both ways.

``advertise`` (GET info/refs) and ``exchange`` (POST git-upload-pack / git-receive-pack)
are async generators of response bytes. Until their first chunk they may raise a domain
error, which the HTTP layer turns into a status with a plain-text body git prints; after
it the response is committed and problems travel in git's own protocol.

Memory stays bounded whatever the repo or push size: the request body flows chunk by chunk
into git's stdin (with back-pressure), the response chunk by chunk out of its stdout; only
a receive-pack command section (at most ``MAX_COMMAND_SECTION``) is held whole.

A generator that is closed early (the client went away, the server is stopping) terminates
git's whole process group: SIGTERM first, so receive-pack removes its quarantine directory
and takes no ref lock, then SIGKILL. Refs only move after the full pack has been received
and checked, so an interrupted push changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from artifactd.errors import (
    InternalError,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationError,
)
from artifactd.observability import (
    GIT_ADVERTISEMENTS_FROM_MEMORY,
    GIT_BYTES_RECEIVED,
    GIT_BYTES_SENT,
    GIT_PROCESSES,
    GIT_PROCESSES_STARTED,
    STORAGE_REFUSED,
)
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream, events
from artifactd.services.git import blob_fetch, push_in_process, root_fetch, small_clone
from artifactd.services.git.git_access import AuthorizedGit, Service, push_ref_problem
from artifactd.services.git.git_slots import SlotPool, SlotsBusy
from artifactd.services.git.pktline import (
    FLUSH,
    PktError,
    PushCommandReader,
    ReceivePackScanner,
    UploadPackScanner,
    encode_line,
    error_packet,
)
from artifactd.services.git.push_guard import PushSession
from artifactd.storage.gitrunner import PipedGit
from artifactd.storage.metadata import RepoRow
from artifactd.storage.repostore import PackTee

log = logging.getLogger("artifactd.git")

ZERO_IDS = frozenset(("0" * 40, "0" * 64))

READ_SIZE = 256 << 10  # bytes per read from git's stdout: fewer, larger HTTP chunks
STDOUT_BUFFER = 1 << 20  # asyncio's stdout buffer; bounded memory per request
# An upload-pack request is wants, haves and options: a few MB even for huge negotiations.
MAX_UPLOAD_REQUEST = 64 << 20
# A git slot is taken once the request is complete or this much of it arrived, not before:
# a client that opens a request and sends nothing (or only its headers) holds no slot.
SLOT_AFTER_BYTES = 64 << 10
# Request bytes read and thrown away after refusing a push, so that the client reads our
# answer instead of a reset connection; beyond this the connection is simply closed.
MAX_DRAIN = 1 << 30
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
STDERR_TAIL = 8 << 10  # bytes of git's stderr kept for error messages and the log


class ClientDisconnected(Exception):
    """The client closed the connection before the request body was complete."""


def server_config(
    backend: Backend, service: Service, max_input_bytes: int | None = None
) -> list[tuple[str, str]]:
    """Per-service ``-c`` settings on top of the runner's base configuration."""
    if service == "git-receive-pack":
        return [
            ("receive.advertiseAtomic", "true"),
            ("receive.advertisePushOptions", "true"),
            ("receive.denyNonFastForwards", "false"),
            ("receive.denyDeletes", "false"),
            # The connectivity check (rev-list --alternate-refs) asks each alternate for its
            # refs with a `git for-each-ref`; in receive-pack's quarantine the only alternate
            # is the repo itself, whose refs the check already has (--not --all), and a fork
            # without them only walks further. `true` prints none: a git process fewer.
            ("core.alternateRefsCommand", "true"),
            # 0 would mean "no limit" to git: a repo with nothing left may take 1 byte.
            ("receive.maxInputSize", str(max(1, max_input_bytes)
                                         if max_input_bytes is not None
                                         else backend.settings.max_repo_bytes)),
        ]
    return [
        ("uploadpack.allowFilter", "true"),
        ("uploadpack.allowReachableSHA1InWant", "true"),
        ("lsrefs.unborn", "advertise"),
        # Blob sizes for partial clones without their bytes (ArtifactFS, docs/mount.md).
        ("transfer.advertiseObjectInfo", "true"),
    ]


# -- concurrency ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def git_slot(backend: Backend, repo_id: str | None = None) -> AsyncIterator[None]:
    """At most ``git_max_processes`` git exchanges at once, at most
    ``git_max_processes_per_repo`` of them for ``repo_id``; the rest queue, then get 503."""
    pool = backend.extras.get("git_slots")
    if not isinstance(pool, SlotPool):
        settings = backend.settings
        pool = SlotPool(settings.git_max_processes, settings.git_max_processes_per_repo)
        backend.extras["git_slots"] = pool
    try:
        async with pool.slot(repo_id, backend.settings.git_queue_timeout):
            yield
    except SlotsBusy:
        raise ServiceUnavailable("Too many git requests; retry shortly", retry_after=5) from None


# -- the child process ---------------------------------------------------------------------


class GitChild:
    """A running git whose process group is always reaped, whatever happens to the request."""

    def __init__(self, proc: PipedGit, git_dir: Path, service: str = "git-upload-pack"):
        self.proc = proc
        self.git_dir = git_dir
        self.service = service
        self._stderr = bytearray()
        self._stderr_task = asyncio.create_task(self._collect_stderr())
        self._running = True
        GIT_PROCESSES.inc()

    def _exited(self) -> None:
        if self._running:
            self._running = False
            GIT_PROCESSES.dec()

    @classmethod
    async def start(
        cls, backend: Backend, authorized: AuthorizedGit, args: Sequence[str],
        protocol: str | None, *, stdin: bool, push: PushSession | None = None,
    ) -> GitChild:
        env = {"GIT_PROTOCOL": protocol} if protocol else {}
        channel = push.channel if push is not None else None
        if channel is not None:
            env.update(channel.env())
        proc = await backend.git.spawn_piped(
            authorized.git_dir, args,
            config=server_config(backend, authorized.service, authorized.max_input_bytes),
            env=env or None, stdin=stdin, limit=STDOUT_BUFFER,
            pass_fds=channel.child_fds if channel is not None else (),
        )
        GIT_PROCESSES_STARTED.labels(authorized.service).inc()
        if push is not None:
            push.spawned()
        return cls(proc, authorized.git_dir, authorized.service)

    async def _collect_stderr(self) -> None:
        while chunk := await self.proc.stderr.read(1 << 14):
            self._stderr += chunk
            del self._stderr[:-STDERR_TAIL]

    async def read(self) -> bytes:
        chunk = await self.proc.stdout.read(READ_SIZE)
        GIT_BYTES_SENT.labels(self.service).inc(len(chunk))
        return chunk

    async def wait(self) -> int:
        code = await self.proc.wait()
        self._exited()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task
        return code

    def stderr_message(self) -> str:
        """git's last ``fatal:``/``error:`` line, with our directory path taken out."""
        text = self._stderr.decode("utf-8", "replace").replace(str(self.git_dir), "<repo>")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith(("fatal:", "error:")):
                return line
        return lines[-1] if lines else ""

    def _signal(self, sig: int) -> None:
        # The group outlives its leader while helpers (pack-objects, index-pack) run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def terminate(self) -> None:
        """Stop git and its helpers; safe to call more than once and from ``finally``."""
        if self.proc.returncode is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), TERM_GRACE)
        self._signal(signal.SIGKILL)
        await self.proc.wait()
        self._exited()
        self._stderr_task.cancel()
        self.proc.close()


async def _reap(child: GitChild) -> None:
    """Terminate in a task of its own so a second cancellation cannot interrupt it."""
    await asyncio.shield(asyncio.ensure_future(child.terminate()))


# -- info/refs -----------------------------------------------------------------------------


def is_v2(protocol: str | None) -> bool:
    return bool(protocol) and "version=2" in (protocol or "").split(":")


# The protocol v2 capability advertisement of upload-pack names no refs: it depends only on
# git's version and the server's configuration, both fixed for the life of the process (every
# repo is created by artifactd with the same SHA-1 format and config). It is learnt from git
# once and then served from memory, which saves a process per fetch: the difference matters
# to lazy (``--filter=blob:none``) clients, which fetch one blob per request.
V2_CAPABILITIES = "git_v2_upload_pack_capabilities"

# Likewise receive-pack's advertisement for a repo with no refs (every agent's first push):
# one ``capabilities^{}`` line under the zero id, whose capabilities depend only on git's
# version and the server's configuration. A repo has no alternates (forks link objects), so
# there are no ``.have`` lines either. Learnt from git on the first such push of a worker,
# and checked to be exactly that shape before it is kept.
EMPTY_PUSH_ADVERTISEMENT = "git_empty_receive_pack_advertisement"
_EMPTY_REF_LINE = b"0" * 40 + b" capabilities^{}\x00"


def has_no_refs(git_dir: Path) -> bool:
    """No ref at all: no ``packed-refs`` (even an emptied one counts as refs) and no file
    under ``refs/``."""
    if (git_dir / "packed-refs").exists():
        return False
    return all(not files for _root, _dirs, files in os.walk(git_dir / "refs"))


def is_empty_push_advertisement(data: bytes, service: str) -> bool:
    """``data`` is the service announcement, a flush, one zero-id capabilities line, a flush."""
    announcement = encode_line(f"# service={service}") + FLUSH
    if not data.startswith(announcement):
        return False
    rest = data[len(announcement):]
    try:
        length = int(rest[:4], 16)
    except ValueError:
        return False
    return (length > 4 + len(_EMPTY_REF_LINE) and rest[4:4 + len(_EMPTY_REF_LINE)] == _EMPTY_REF_LINE
            and rest[length:] == FLUSH)


async def advertise(
    backend: Backend, authorized: AuthorizedGit, protocol: str | None
) -> AsyncIterator[bytes]:
    """The ref advertisement (v0/v1) or capability advertisement (v2) for info/refs."""
    service = authorized.service
    cacheable = service == "git-upload-pack" and is_v2(protocol)
    cached = backend.extras.get(V2_CAPABILITIES) if cacheable else None
    if isinstance(cached, bytes):
        yield cached
        return
    # git clients never ask receive-pack for v2, so a push's advertisement is v0 (no header).
    empty_push = service == "git-receive-pack" and not protocol and has_no_refs(authorized.git_dir)
    if empty_push:
        remembered = backend.extras.get(EMPTY_PUSH_ADVERTISEMENT)
        if isinstance(remembered, bytes):
            GIT_ADVERTISEMENTS_FROM_MEMORY.inc()
            yield remembered
            return
    args = [service.removeprefix("git-"), "--stateless-rpc", "--advertise-refs", "--",
            str(authorized.git_dir)]
    sent: list[bytes] = []
    async with git_slot(backend, authorized.repo.id):
        child = await GitChild.start(backend, authorized, args, protocol, stdin=False)
        try:
            first = await child.read()
            if not first:
                code = await child.wait()
                if code != 0:
                    log.warning("git %s advertisement failed: %s", service, child.stderr_message())
                    raise InternalError("git could not read the repository")
            # http-backend's framing: v0/v1 start with a service announcement, v2 does not.
            if not is_v2(protocol):
                first = encode_line(f"# service={service}") + FLUSH + first
            yield first
            while chunk := await child.read():
                yield chunk
                if cacheable or empty_push:
                    sent.append(chunk)
            if await child.wait() == 0 and cacheable and first:
                backend.extras[V2_CAPABILITIES] = first + b"".join(sent)
            elif empty_push and first:
                whole = first + b"".join(sent)
                if is_empty_push_advertisement(whole, service):
                    backend.extras[EMPTY_PUSH_ADVERTISEMENT] = whole
        finally:
            await _reap(child)


# -- POST git-upload-pack / git-receive-pack -----------------------------------------------


async def _drain(body: AsyncIterator[bytes]) -> None:
    drained = 0
    async for chunk in body:
        drained += len(chunk)
        if drained > MAX_DRAIN:
            break


async def _feed(
    child: GitChild, head: bytes, body: AsyncIterator[bytes], limit: int,
    tee: PackTee | None = None, pack_offset: int = 0,
) -> None:
    """Copy the request into git's stdin with back-pressure; EOF when the body ends. ``tee``
    gets the same bytes from ``pack_offset`` on (a push's pack, as it goes to git)."""
    stdin = child.proc.stdin
    assert stdin is not None
    total = len(head)
    try:
        if head:
            GIT_BYTES_RECEIVED.labels(child.service).inc(len(head))
            stdin.write(head)
            if tee is not None:
                await tee.feed(head[pack_offset:])
            await stdin.drain()
        async for chunk in body:
            total += len(chunk)
            GIT_BYTES_RECEIVED.labels(child.service).inc(len(chunk))
            if total > limit:
                raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
            stdin.write(chunk)
            if tee is not None:
                await tee.feed(chunk)
            await stdin.drain()
        if tee is not None:
            tee.finish()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
        # git stopped reading (it says why on stdout/stderr). Read the rest of the request
        # anyway, so that the client gets to read git's answer rather than a reset. uvloop
        # reports a pipe it already saw closed as RuntimeError instead of BrokenPipeError.
        if isinstance(exc, RuntimeError) and not stdin.is_closing():
            raise
        if tee is not None:
            tee.discard()
        await _drain(body)


async def _read_head(body: AsyncIterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Up to about ``limit`` bytes of the request, and whether that is all of it."""
    head = bytearray()
    async for chunk in body:
        head += chunk
        if len(head) > limit:
            return bytes(head), False
    return bytes(head), True


async def exchange(
    backend: Backend, authorized: AuthorizedGit, protocol: str | None,
    body: AsyncIterator[bytes], declared_bytes: int | None = None,
) -> AsyncIterator[bytes]:
    """Run one stateless-rpc request; yields the response body. ``declared_bytes``: the
    request's ``Content-Length`` (None when chunked)."""
    started = now_us()
    head = b""
    sideband = False
    limit = MAX_UPLOAD_REQUEST
    tee: PackTee | None = None  # the s3 store's upload of a push's pack as it arrives
    pack_offset = 0
    if authorized.service == "git-receive-pack":
        reader = PushCommandReader()
        try:
            async for chunk in body:
                if reader.feed(chunk):
                    break
            reader.finish()
        except PktError as exc:
            await _drain(body)
            raise ValidationError(f"Malformed push request: {exc}") from None
        commands = reader.commands
        if not commands.updates:
            return  # git's "0000" probe before a large push, or an empty request
        for update in commands.updates:
            problem = push_ref_problem(update.ref)
            if problem is not None:
                await _drain(body)
                yield error_packet(f"refusing ref {update.ref!r}: {problem}",
                                   sideband=commands.sideband)
                return
        head = reader.consumed + reader.rest
        pack_offset = len(reader.consumed)
        if backend.repos.remote and "push-options" not in commands.capabilities and any(
                update.new not in ZERO_IDS for update in commands.updates):
            tee = backend.repos.incoming_pack(authorized.repo.id)
        # git sends a Content-Length up to its http.postBuffer (1 MiB) and chunks beyond:
        # a push declared larger than the in-process bound, or chunked, streams to git at
        # once (a slow client's large push must not wait here for its first megabyte).
        if (declared_bytes is not None and declared_bytes <= push_in_process.MAX_BODY
                and push_in_process.eligible(backend, commands)):
            # A small push is read whole and received here; a larger one, or one this path
            # does not take, goes on to git with every byte read so far.
            more, complete = await _read_head(
                body, max(0, push_in_process.MAX_BODY - len(reader.rest)))
            head += more
            if complete and len(head) - len(reader.consumed) <= push_in_process.MAX_BODY:
                answer = await push_in_process.serve(
                    backend, authorized, commands, head[len(reader.consumed):], started)
                if answer is not None:
                    yield answer
                    return
        elif len(reader.rest) < SLOT_AFTER_BYTES:
            head += (await _read_head(body, SLOT_AFTER_BYTES - len(reader.rest)))[0]
        sideband = commands.sideband
        limit = backend.settings.max_repo_bytes + (16 << 20)

    elif is_v2(protocol):
        head, complete = await _read_head(body, blob_fetch.MAX_REQUEST)
        if complete:
            answer = await blob_fetch.serve(backend, authorized.git_dir, head)
            if answer is None:  # ArtifactFS's root read: the tip and its root tree (issue 15)
                answer = root_fetch.serve(backend, authorized.git_dir, head)
            if answer is not None:
                GIT_BYTES_RECEIVED.labels(authorized.service).inc(len(head))
                GIT_BYTES_SENT.labels(authorized.service).inc(len(answer))
                events.record(backend, authorized.repo, "pull", started_us=started)
                await _write_pulled(backend, authorized.repo, clone=False)
                yield answer
                return
            served = await small_clone.serve(backend, authorized.git_dir,
                                             authorized.repo.size_bytes, head)
            if served is not None:
                answer, sent_pack = served
                GIT_BYTES_RECEIVED.labels(authorized.service).inc(len(head))
                GIT_BYTES_SENT.labels(authorized.service).inc(len(answer))
                if sent_pack:  # a fetch with no haves: a clone
                    events.record(backend, authorized.repo, "pull", started_us=started)
                    await _write_pulled(backend, authorized.repo, clone=True)
                yield answer
                return
    else:
        head = (await _read_head(body, SLOT_AFTER_BYTES))[0]

    args = [authorized.service.removeprefix("git-"), "--stateless-rpc", "--", str(authorized.git_dir)]
    if authorized.service == "git-upload-pack":
        args.insert(2, "--strict")
    async with git_slot(backend, authorized.repo.id):
        push = None
        if authorized.service == "git-receive-pack":
            push = await PushSession.open(backend, authorized.repo, started)
            push.incoming = tee  # discarded when the push closes, unless its upload completed
        try:
            child = await GitChild.start(backend, authorized, args, protocol, stdin=True,
                                         push=push)
            feeder = asyncio.create_task(_feed(child, head, body, limit, tee, pack_offset))
            try:
                # A clone asks for everything: its request names no commit it already has.
                async for chunk in _respond(backend, authorized, child, feeder, sideband,
                                            started, push, clone=b"have " not in head):
                    yield chunk
            finally:
                if not feeder.done():
                    feeder.cancel()
                await _reap(child)
        finally:
            if push is not None:
                await push.close()


async def _respond(
    backend: Backend, authorized: AuthorizedGit, child: GitChild, feeder: asyncio.Task[None],
    sideband: bool, started: int, session: PushSession | None = None, *, clone: bool = False,
) -> AsyncIterator[bytes]:
    push = authorized.service == "git-receive-pack"
    receive_scan = ReceivePackScanner(sideband)
    upload_scan = UploadPackScanner()
    held = b""  # the last chunk waits until the repo's metadata is up to date
    sent_any = False

    def feeder_failed() -> BaseException | None:
        return feeder.exception() if feeder.done() and not feeder.cancelled() else None

    while True:
        if feeder.done():
            failure = feeder_failed()
            if failure is not None:
                await _reap(child)
                raise failure
            chunk = await child.read()
        else:
            reader = asyncio.ensure_future(child.read())
            await asyncio.wait({reader, feeder}, return_when=asyncio.FIRST_COMPLETED)
            if feeder_failed() is not None and not reader.done():
                reader.cancel()
                continue
            chunk = await reader
        if not chunk:
            break
        (receive_scan if push else upload_scan).feed(chunk)
        if held:
            yield held
            sent_any = True
        held = chunk
    await feeder
    code = await child.wait()
    if code != 0 and not held and not sent_any:
        message = child.stderr_message() or f"git {authorized.service} failed"
        log.info("git %s refused a request: %s", authorized.service, message)
        if not child.stderr_message():
            raise InternalError(f"git {authorized.service} failed")
        raise ValidationError(f"{authorized.service}: {message}")
    if session is not None:
        await session.record(reported=bool(receive_scan.updated))
    if push and receive_scan.unpack_error and "maximum allowed size" in (
        receive_scan.unpack_error + receive_scan.messages + child.stderr_message()
    ):
        STORAGE_REFUSED.inc()
        events.record(
            backend, authorized.repo, "storageLimitReached", started_us=started,
            error_message=f"Storage limit reached: the pushed pack is larger than the "
                          f"{authorized.max_input_bytes} bytes this repo may still store",
        )
    elif not push and upload_scan.sent_pack:
        # Recording appends to an in-memory buffer: no thread hop needed.
        events.record(backend, authorized.repo, "pull", started_us=started)
        await _write_pulled(backend, authorized.repo, clone=clone)
    if held:
        yield held


async def _write_pulled(backend: Backend, repo: RepoRow, *, clone: bool) -> None:
    """The ``cloned``/``fetched`` event, before the last chunk reaches the client."""
    row = event_stream.pulled(repo, clone)
    # A write transaction: in a thread when another writer holds SQLite's lock, since a
    # writer that meets another one sleeps in SQLite's busy handler, and inline the event
    # loop would sleep with it. With no writer in the way it is one short local
    # transaction, cheaper than the thread hop (the push's record makes the same choice).
    meta = backend.meta
    if not backend.repos.remote and meta.write_inline_ok():
        meta.write_events([row])
    else:
        await asyncio.to_thread(meta.write_events, [row])
