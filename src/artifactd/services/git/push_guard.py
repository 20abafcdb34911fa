"""What a push may write and what it did, decided with git's own hooks (storage/pushhooks).

One push, from the server's side:

1. before receive-pack starts, a shared lock on the repo's push lock and a hook channel;
2. ``pre-receive`` (objects in quarantine, no ref moved yet): the quarantine's size is
   reserved against the repo and account limits in one transaction that also writes a push
   intent. Concurrent pushes, forks and imports are thus admitted against totals that
   include each other; a push that does not fit is refused before any ref moves;
3. when receive-pack exits, before the client reads git's last answer: the reservation is
   released and the push recorded (size from the disk; if a ref moved, ``last_push_at``,
   the maintenance counter and the push event). Whether a ref moved is read from the refs
   on disk (do they hold the ids ``pre-receive`` announced?), so it does not depend on the
   client asking for ``report-status``; git's own ``ok <ref>`` lines, when there are any,
   also count (they cover a push whose ref a concurrent push moved on at once);
4. when the request ends, whatever the reason: an intent still open is settled the same
   way, and the last push out of the repo removes quarantines left behind.

A crash leaves at most an intent row (and a quarantine); ``reconcile`` settles every intent
whose repo has no push running, at start-up and whenever a push of that repo ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from artifactd.errors import ArtifactdError, Code, NotFound
from artifactd.observability import STORAGE_REFUSED
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import event_stream, events
from artifactd.services.git.git_access import NOT_FOUND_MESSAGE
from artifactd.services.reads import content as reads_content
from artifactd.storage.metadata import PushIntentRow, RepoRow
from artifactd.storage.pushhooks import HookMessage, PushChannel, RefUpdate
from artifactd.storage.repostore import PackTee

log = logging.getLogger("artifactd.git")

ZERO_IDS = frozenset(("0" * 40, "0" * 64))


@dataclass
class PushSession:
    """One receive-pack's hook channel, lock and open intent."""

    backend: Backend
    repo: RepoRow
    started_us: int
    channel: PushChannel | None  # None for a push received in process (no hooks to answer)
    lock_fd: int
    intent: PushIntentRow | None = None  # set once pre-receive admitted the push
    recorded: bool = False
    refs_fd: int | None = None  # the s3 store's refs lock, from the SQL commit to git's exit
    incoming: PackTee | None = None  # the s3 store's upload of the pack as it arrives
    _server: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def open(cls, backend: Backend, repo: RepoRow, started_us: int, *,
                   hooks: bool = True) -> PushSession:
        try:
            fd = backend.repos.lock_push(repo.id, wait=False)
            if fd is None:  # a cleanup holds it for a moment
                fd = await asyncio.to_thread(backend.repos.lock_push, repo.id)
        except FileNotFoundError:  # deleted since the request was authorized
            raise NotFound(NOT_FOUND_MESSAGE, code=Code.REPO_NOT_FOUND) from None
        assert fd is not None
        return cls(backend, repo, started_us, PushChannel() if hooks else None, fd)

    def spawned(self) -> None:
        """receive-pack runs: close its ends here and start answering its hooks."""
        assert self.channel is not None
        self.channel.spawned()
        self._server = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        assert self.channel is not None
        async for message in self.channel.messages():
            if message is None or self.intent is not None:
                self.channel.answer("refuse artifactd: unexpected hook message")
            else:
                self.channel.answer(await _blocking(self.backend, self._admit, message))

    async def admit(self, updates: tuple[RefUpdate, ...], incoming: int) -> str:
        """A push received in process (services/git/push_in_process.py): the same admission
        as ``pre-receive`` gives, for ``incoming`` bytes about to be written; ``ok`` or
        ``refuse <message>``."""
        message = HookMessage("pre-receive", None, updates)
        if self._inline():
            # No writer holds SQLite's lock: one short local transaction, cheaper than the
            # thread hop (``_blocking``), which woke a pool thread and passed the GIL twice.
            return self._admit(message, incoming)
        return await _blocking(self.backend, lambda m: self._admit(m, incoming), message)

    def _admit(self, message: HookMessage, incoming: int = 0) -> str:
        backend, repo = self.backend, self.repo
        if message.quarantine is not None:
            size = backend.repos.quarantine_size(repo.id, message.quarantine)
            if size is None:
                return "refuse artifactd: unexpected quarantine directory"
            incoming = size
        intent = PushIntentRow(
            id=secrets.token_hex(16), repo_id=repo.id, account_id=repo.account_id,
            reserved_bytes=incoming, updates=_dump_updates(message.updates),
            started_us=self.started_us,
        )
        settings = backend.settings
        refused = backend.meta.reserve_push(
            intent, settings.max_repo_bytes, settings.max_account_bytes)
        if refused is None:
            self.intent = intent
            return self._store(message) if backend.repos.remote else "ok"
        STORAGE_REFUSED.inc()
        if refused == "repo":
            current = backend.meta.get_repo_by_id(repo.id)
            used = current.size_bytes + current.reserved_bytes if current else 0
            message_text = (f"Storage limit reached: this push adds {incoming} bytes to repo "
                            f"{repo.namespace}/{repo.name}, which uses {used} of its "
                            f"{settings.max_repo_bytes} bytes")
        else:
            message_text = (f"Storage limit reached: this push adds {incoming} bytes and the "
                            f"account uses {backend.meta.account_size(repo.account_id)} of its "
                            f"{settings.max_account_bytes} bytes")
        events.record(backend, repo, "storageLimitReached", started_us=self.started_us,
                      error_message=message_text)
        return f"refuse {message_text}"

    def _store(self, message: HookMessage) -> str:
        """The ``s3`` store: the pack to the bucket and the refs swapped in SQL before git
        moves any ref here, so that an acknowledged push is durable and seen by every node.
        The cache's refs lock stays held until receive-pack exits (``_unlock_refs``)."""
        backend, repo, intent = self.backend, self.repo, self.intent
        assert intent is not None
        updates = [(u.old, u.new, u.ref) for u in message.updates]
        try:
            self.refs_fd = backend.repos.lock_refs(repo.id)
            refused = backend.repos.commit_push(repo.id, message.quarantine, updates,
                                                self.incoming)
        except Exception as exc:
            refused = f"artifactd: {getattr(exc, 'message', None) or 'the push was not stored'}"
            if not isinstance(exc, ArtifactdError):
                log.exception("storing a push of repo %s failed", repo.id)
        if refused is None:
            return "ok"
        self._unlock_refs()
        self.intent = None
        backend.meta.finish_push(intent.id, repo.id, lambda: backend.repos.size(repo.id), None)
        return f"refuse {refused}"

    def _unlock_refs(self) -> None:
        if self.refs_fd is not None:
            fd, self.refs_fd = self.refs_fd, None
            self.backend.repos.unlock_refs(self.repo.id, fd)

    async def record(self, reported: bool) -> None:
        """receive-pack exited: record what it did (``reported``: git said ``ok <ref>``)."""
        self._unlock_refs()
        if self.intent is not None and not self.recorded:
            self.recorded = True
            if self._inline():
                settle_intent(self.backend, self.repo, self.intent, reported)
            else:
                await asyncio.to_thread(settle_intent, self.backend, self.repo, self.intent,
                                        reported)
            if reported and not self.backend.repos.remote:
                # Next loop turn: git's last answer goes out to the client first.
                asyncio.get_running_loop().call_soon(reads_content.warm, self.backend,
                                                     self.repo.id)

    async def close(self) -> None:
        """The request ended (git exited or was killed): settle, clean up, release."""
        if self._server is not None:
            self._server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server
        if self.channel is not None:
            self.channel.close()
        if self.incoming is not None:
            self.incoming.discard()  # a no-op once the push completed its upload
        if self._inline():
            self._settle()
        else:
            await asyncio.shield(asyncio.to_thread(self._settle))

    def _inline(self) -> bool:
        """A push received in process on SQLite: recording it is a few local reads and one
        transaction, cheaper than a thread hop (admission makes the same choice); on a loaded
        machine the hop also costs a wait for the GIL."""
        return (self.channel is None and not self.backend.repos.remote
                and self.backend.meta.write_inline_ok())

    def _settle(self) -> None:
        backend, repo = self.backend, self.repo
        self._unlock_refs()
        try:
            if self.intent is not None and not self.recorded:
                # git was stopped (the client left, the server stops): the disk decides.
                self.recorded = True
                settle_intent(backend, repo, self.intent, reported=False)
        finally:
            if backend.repos.end_push(repo.id, self.lock_fd):
                reconcile_repo(backend, repo.id)


async def _blocking(
    backend: Backend, function: Callable[[HookMessage], str], message: HookMessage
) -> str:
    """In a thread, SQLite too (unless ``PushSession._inline`` finds no writer in the way):
    admission is a write transaction, and a SQLite writer that meets another one (a fork's
    or a create's, in this worker or the other) waits in SQLite's busy handler, which sleeps
    1 to 100 ms between tries; inline, the whole event loop slept with it, and every GET on
    this worker waited (the GET p99 under pushes and forks). A thread hop costs a push about
    0.1 ms. The s3 store uploads here as well."""
    return await run_in_threadpool(function, message)


def _dump_updates(updates: tuple[RefUpdate, ...]) -> str:
    return json.dumps([[u.old, u.new, u.ref] for u in updates])


def _load_updates(text: str) -> tuple[RefUpdate, ...]:
    try:
        return tuple(RefUpdate(old, new, ref) for old, new, ref in json.loads(text))
    except (ValueError, TypeError):
        return ()


def _finish(backend: Backend, repo: RepoRow, intent: PushIntentRow, pushed_us: int | None,
            moved: tuple[RefUpdate, ...] = ()) -> None:
    # The push events go into the transaction that records the push: the client has not
    # read git's last answer yet, so an acknowledged push always has its events.
    outbox = event_stream.pushed(backend, repo, moved) if pushed_us is not None else []
    if backend.meta.finish_push(intent.id, repo.id, lambda: backend.repos.size(repo.id),
                                pushed_us, outbox) and pushed_us is not None:
        events.record(backend, repo, "push", started_us=intent.started_us)


def refs_moved(backend: Backend, repo_id: str, updates: tuple[RefUpdate, ...]) -> bool:
    """Whether any of ``updates`` is what the repo's refs now say."""
    return bool(updates_applied(backend, repo_id, updates))


def updates_applied(
    backend: Backend, repo_id: str, updates: tuple[RefUpdate, ...]
) -> tuple[RefUpdate, ...]:
    """The ``updates`` that are what the repo's refs now say."""
    if not updates:
        return ()
    current = backend.repos.read_refs(repo_id, [update.ref for update in updates])
    applied: list[RefUpdate] = []
    for update in updates:
        now = current.get(update.ref)
        if update.new in ZERO_IDS:
            if update.old not in ZERO_IDS and now is None:
                applied.append(update)
        elif now == update.new:
            applied.append(update)
    return tuple(applied)


def settle_intent(
    backend: Backend, repo: RepoRow, intent: PushIntentRow, reported: bool = False
) -> None:
    """Record an admitted push as the disk has it (and as git reported, when it did)."""
    updates = _load_updates(intent.updates)
    applied = updates_applied(backend, repo.id, updates)
    if reported and not applied:
        applied = updates  # git said ok, and a concurrent push moved the refs on since
    _finish(backend, repo, intent, now_us() if applied else None, applied)


def reconcile_repo(backend: Backend, repo_id: str) -> int:
    """Settle the repo's intents if none of its pushes runs; returns how many were settled."""
    intents = backend.meta.pending_pushes(repo_id)
    if not intents:
        return 0
    return _settle_idle(backend, repo_id, intents)


def _settle_idle(backend: Backend, repo_id: str, intents: list[PushIntentRow]) -> int:
    settled = 0
    with backend.repos.idle_push_lock(repo_id) as idle:
        if not idle:
            return 0  # a push of this repo runs here: it settles them when it ends
        repo = backend.meta.get_repo_by_id(repo_id)
        for intent in intents:
            if repo is None:
                backend.meta.finish_push(intent.id, repo_id, lambda: 0, None)
                continue
            log.info("settling push intent %s of repo %s left by an earlier process",
                     intent.id, repo_id)
            settle_intent(backend, repo, intent)
            settled += 1
        backend.repos.remove_quarantines(repo_id)
    return settled


def reconcile(backend: Backend) -> int:
    """At start-up: settle every intent whose repo has no push running (a crash's leftovers)."""
    by_repo: dict[str, list[PushIntentRow]] = {}
    for intent in backend.meta.pending_pushes():
        by_repo.setdefault(intent.repo_id, []).append(intent)
    return sum(_settle_idle(backend, repo_id, intents) for repo_id, intents in by_repo.items())
