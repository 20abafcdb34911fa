"""``Artifacts``: the blocking client, and ``Repo``, its repo handle."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _core as core
from . import _reads as reads
from . import _writes as writes
from ._events import EventRoutes
from ._reads import Blame, Comparison, Patch, TreeWalkPage
from ._types import (
    Commit,
    CreateRepoResult,
    CreateTokenResult,
    LogPage,
    RepoInfo,
    RepoPage,
    TokenList,
    Tree,
)

T = TypeVar("T")


class Artifacts:
    """A namespace of an artifactd server: the Workers binding's methods, in Python.

    Arguments left out come from ``ARTIFACTD_URL``, ``ARTIFACTD_ACCOUNT_ID``,
    ``ARTIFACTD_API_TOKEN`` and ``ARTIFACTD_NAMESPACE`` (default ``default``)::

        with Artifacts() as artifacts:
            created = artifacts.create("starter-repo")
            repo = artifacts.get("starter-repo")
            token = repo.create_token("read", 3600)

    Idempotent requests are retried on 429, 503 and connection errors (``retries``, a
    ``RetryPolicy``; ``retries=None`` sends every request once).
    """

    def __init__(
        self,
        base_url: str | None = None,
        account_id: str | None = None,
        api_token: str | None = None,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        retries: core.RetryPolicy | None = core.RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
    ):
        self._config = core.Config.resolve(base_url, account_id, api_token, namespace, timeout)
        self._routes = core.Routes(self._config.account_id, self._config.namespace)
        self._http = httpx.Client(
            base_url=self._config.base_url, headers=self._config.headers(),
            timeout=self._config.timeout, transport=transport, follow_redirects=False,
        )
        self._owns_http = True
        self._retries = retries or core.NO_RETRIES

    # Lifecycle

    def with_namespace(self, namespace: str) -> Artifacts:
        """The same server and credentials in another namespace, sharing this client's connections."""
        view = object.__new__(type(self))
        view._config = replace(self._config, namespace=namespace)
        view._routes = core.Routes(self._config.account_id, namespace)
        view._http = self._http
        view._owns_http = False
        view._retries = self._retries
        return view

    @property
    def namespace(self) -> str:
        return self._config.namespace

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def account_id(self) -> str:
        return self._config.account_id

    def __repr__(self) -> str:
        return (
            f"Artifacts(base_url={core.redacted_url(self.base_url)!r}, account_id={self.account_id!r}, "
            f"namespace={self.namespace!r})"
        )

    def close(self) -> None:
        """Close the connections (a ``with_namespace`` view leaves them to its parent)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Artifacts:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # I/O: the only two places the blocking client differs from the async one

    def _send(self, call: core.Call[T]) -> T:
        started = time.monotonic()
        attempt = 1
        while True:
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            try:
                response = self._http.request(
                    call.method, call.path, params=dict(call.params) or None, json=call.body
                )
            except httpx.TransportError as exc:
                failure = exc
            delay = self._retries.delay(
                call.method, attempt, time.monotonic() - started, response=response, error=failure,
            )
            if delay is None:
                if failure is not None:
                    raise core.transport_error(failure, self.base_url, self._config.timeout) from failure
                assert response is not None
                return call.parse(response)
            if self._retries.on_retry is not None:
                self._retries.on_retry(core.Retrying(
                    call.method, call.path, attempt, delay, core.retry_reason(response, failure),
                ))
            time.sleep(delay)
            attempt += 1

    def _run(self, flow: core.Flow[T]) -> T:
        value: Any = None
        try:
            while True:
                step = flow.send(value)
                if isinstance(step, core.Sleep):
                    time.sleep(step.seconds)
                    value = None
                else:
                    value = self._send(step)
        except StopIteration as stop:
            returned: T = stop.value
            return returned

    # Account

    # Event subscriptions (docs/events.md)

    def create_subscription(
        self, name: str, *, source: dict[str, Any], destination: dict[str, Any],
        event_types: list[str] | None = None,
    ) -> dict[str, Any]:
        """A webhook's result carries its signing ``secret``, shown this once."""
        return self._send(EventRoutes(self._config.account_id).create(
            name, source, destination, event_types))

    def list_subscriptions(self) -> list[dict[str, Any]]:
        return self._send(EventRoutes(self._config.account_id).list())

    def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._send(EventRoutes(self._config.account_id).get(subscription_id))

    def delete_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._send(EventRoutes(self._config.account_id).delete(subscription_id))

    def events(
        self, subscription_id: str, *, cursor: str | None = None, limit: int | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:
        """A queue's next ``events`` after ``cursor`` (long poll ``wait`` s) and the new ``cursor``."""
        return self._send(EventRoutes(self._config.account_id).events(
            subscription_id, cursor, limit, wait))

    def ack_events(self, subscription_id: str, cursor: str) -> dict[str, Any]:
        return self._send(EventRoutes(self._config.account_id).ack(subscription_id, cursor))

    def update_subscription(
        self, subscription_id: str, *, name: str | None = None,
        event_types: list[str] | None = None, url: str | None = None, state: str | None = None,
        rotate_secret: bool = False,
    ) -> dict[str, Any]:
        """Change the given fields; with ``rotate_secret`` the result carries the new
        ``secret``, shown this once."""
        fields: dict[str, Any] = {k: v for k, v in (
            ("name", name), ("event_types", event_types), ("url", url), ("state", state),
        ) if v is not None}
        if rotate_secret:
            fields["rotate_secret"] = True
        return self._send(EventRoutes(self._config.account_id).update(subscription_id, fields))

    def pause_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._send(EventRoutes(self._config.account_id).set_state(subscription_id, "pause"))

    def resume_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Delivery starts again, with a fresh retry streak."""
        return self._send(EventRoutes(self._config.account_id).set_state(subscription_id, "resume"))

    def deliveries(
        self, subscription_id: str, *, limit: int | None = None, before: int | None = None,
    ) -> list[dict[str, Any]]:
        """A webhook's delivery attempts, newest first (``before``: an attempt's ``id``)."""
        return self._send(EventRoutes(self._config.account_id).deliveries(
            subscription_id, limit, before))

    def redeliver(
        self, subscription_id: str, *, event_id: str | None = None, start: str | None = None,
        end: str | None = None,
    ) -> dict[str, Any]:
        """Send one event (``event_id``) or a time range (ISO ``start``, ``end``) again:
        ``{"queued": n}``."""
        return self._send(EventRoutes(self._config.account_id).redeliver(
            subscription_id, event_id, start, end))

    def whoami(self) -> dict[str, Any]:
        """``account_id``, ``token_id`` and ``permission`` (``read`` or ``edit``) of the API token."""
        return self._send(self._routes.whoami())

    # Namespace methods

    def create(
        self, name: str, *, read_only: bool = False, description: str | None = None,
        default_branch: str | None = None, set_default_branch: str | None = None,
    ) -> CreateRepoResult:
        """Create a repo; the result carries its ``remote`` and an initial write ``token``.

        ``set_default_branch`` is the binding's name for ``default_branch``."""
        return self._send(self._routes.create_repo(
            name, description=description, read_only=read_only,
            default_branch=core.default_branch_of(default_branch, set_default_branch),
        ))

    def get(self, name: str) -> Repo:
        """A handle on a ready repo. Raises ``NotFound``, or ``Conflict`` while it imports or forks."""
        info = core.ensure_ready(self._send(self._routes.repo_info(name)))
        return Repo(**{f.name: getattr(info, f.name) for f in fields(RepoInfo)}, _artifacts=self)

    def info(self, name: str) -> RepoInfo:
        """A repo's metadata whatever its status (``importing``, ``failed``, ...)."""
        return self._send(self._routes.repo_info(name))

    def list(
        self, *, limit: int | None = None, cursor: str | None = None, search: str | None = None,
        sort: str | None = None, direction: str | None = None,
    ) -> RepoPage:
        """One page of repos, newest first by default; pass ``page.cursor`` for the next one."""
        return self._send(self._routes.list_repos(
            limit=limit, cursor=cursor, search=search, sort=sort, direction=direction,
        ))

    def iter_repos(
        self, *, search: str | None = None, sort: str | None = None, direction: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[RepoInfo]:
        """Every repo of the namespace, fetching pages as the iteration goes."""
        call: core.Call[RepoPage] | None = self._routes.list_repos(
            limit=page_size, search=search, sort=sort, direction=direction,
        )
        while call is not None:
            page = self._send(call)
            yield from page.repos
            call = self._routes.next_page(call, page)

    def import_repo(
        self, url: str | None = None, name: str | None = None, *,
        source: Mapping[str, Any] | None = None, target: Mapping[str, Any] | None = None,
        branch: str | None = None, depth: int | None = None, read_only: bool = False,
        description: str | None = None, wait: bool = False,
        wait_timeout: float = core.DEFAULT_IMPORT_WAIT,
    ) -> CreateRepoResult:
        """Import a public HTTPS remote: ``import_repo(url, name)``, or the binding's shape
        ``import_repo(source={"url": ..., "branch": ...}, target={"name": ..., "opts": {...}})``.
        With ``wait=True``, return once the repo is ready (``ImportFailed`` if the import
        fails, ``WaitTimeout`` after ``wait_timeout`` seconds)."""
        request = core.import_request(
            url, name, source=source, target=target, branch=branch, depth=depth,
            read_only=read_only, description=description,
        )
        call = self._routes.import_repo(request)
        if not wait:
            return self._send(call)
        return self._run(core.import_and_wait(self._routes, call, request.name, wait_timeout))

    def delete(self, name: str) -> bool:
        """Delete a repo: ``True`` if it was deleted, ``False`` if there was no such repo."""
        return self._send(self._routes.delete_repo(name))

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token of any repo of the namespace by id (the REST route)."""
        return self._send(self._routes.revoke_token_by_id(token_id))


@dataclass(frozen=True)
class Repo(RepoInfo):
    """A repo handle: its metadata as attributes plus repo-scoped operations."""

    _artifacts: Artifacts = field(kw_only=True, repr=False, compare=False)

    def create_token(self, scope: str = "write", ttl: int | None = None) -> CreateTokenResult:
        """Mint a repo token (``plaintext`` is the git credential; ``ttl`` in seconds, default 1 day)."""
        return self._artifacts._send(self._artifacts._routes.create_token(self.name, scope, ttl))

    def list_tokens(
        self, *, state: str | None = None, page: int | None = None, per_page: int | None = None,
    ) -> TokenList:
        """Tokens of this repo (``state``: active (default), expired, revoked or all)."""
        return self._artifacts._send(self._artifacts._routes.list_tokens(
            self.name, state=state, page=page, per_page=per_page,
        ))

    def revoke_token(self, token_or_id: str) -> bool:
        """Revoke a token of this repo given its plaintext or its id: ``True`` if it was active."""
        return self._artifacts._send(self._artifacts._routes.revoke_repo_token(self.name, token_or_id))

    def fork(
        self, name: str, *, description: str | None = None, read_only: bool = False,
        default_branch_only: bool = False,
    ) -> CreateRepoResult:
        """Fork this repo into ``name`` in the same namespace."""
        return self._artifacts._send(self._artifacts._routes.fork(
            self.name, name, description=description, read_only=read_only,
            default_branch_only=default_branch_only,
        ))

    def log(
        self, ref: str | None = None, *, limit: int | None = None, offset: int | None = None,
    ) -> LogPage:
        """History from ``ref`` (default branch when omitted), newest first, ``limit`` per page."""
        return self._artifacts._send(self._artifacts._routes.log(
            self.name, ref=ref, limit=limit, offset=offset,
        ))

    def commit(self, sha: str) -> Commit:
        """A commit by its full hash."""
        return self._artifacts._send(self._artifacts._routes.commit(self.name, sha))

    def tree(self, sha: str) -> Tree:
        """A tree by its full hash (a commit's ``tree``)."""
        return self._artifacts._send(self._artifacts._routes.tree(self.name, sha))

    def blob(self, sha: str) -> bytes:
        """A blob's raw bytes."""
        return self._artifacts._send(self._artifacts._routes.blob(self.name, sha))

    def file(self, path: str, ref: str | None = None) -> bytes:
        """A file's bytes at ``ref`` (branch, tag or commit; default branch when omitted)."""
        return self._artifacts._send(self._artifacts._routes.file(self.name, path, ref))

    def raw(self, ref: str, path: str) -> bytes:
        """A file's bytes through the ``raw/:ref/:path`` route."""
        return self._artifacts._send(self._artifacts._routes.raw(self.name, ref, path))

    # Read helpers (compare, blame, recursive tree, archive)

    def compare(self, base: str, head: str) -> Comparison:
        """``base...head``; each side ``ref`` or ``repo:ref`` (a repo of this namespace)."""
        return self._artifacts._send(reads.compare(self._artifacts._routes, self.name, base, head))

    def compare_patch(self, base: str, head: str) -> Patch:
        """The unified diff of ``base...head`` (``truncated`` when the server cut it)."""
        return self._artifacts._send(reads.compare_patch(self._artifacts._routes, self.name, base,
                                                             head))

    def blame(self, path: str, ref: str | None = None) -> Blame:
        """Which commit last changed each line of ``path`` at ``ref``."""
        return self._artifacts._send(reads.blame(self._artifacts._routes, self.name, path, ref))

    def walk_tree(
        self, sha: str, *, limit: int | None = None, offset: int | None = None,
    ) -> TreeWalkPage:
        """One page of every file below a tree (or a commit's tree), with sizes."""
        return self._artifacts._send(reads.walk(self._artifacts._routes, self.name, sha, limit,
                                                    offset))

    def archive(self, ref: str, format: str = "tar.gz") -> bytes:
        """The ``tar.gz`` or ``zip`` archive of ``ref``."""
        return self._artifacts._send(reads.archive(self._artifacts._routes, self.name, ref, format))

    def archive_to(self, target: str | os.PathLike[str], ref: str, format: str = "tar.gz") -> int:
        """Stream the archive of ``ref`` into the file ``target`` (flat memory); its size."""
        call = reads.archive(self._artifacts._routes, self.name, ref, format)
        with self._artifacts._http.stream(call.method, call.path) as response:
            if not response.is_success:
                response.read()
                reads.raw_bytes(response)  # raises the API's error
            size = 0
            with open(target, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
            return size
    # Writes without a git client (docs/api.md "Writes without a git client")

    def commit_files(
        self, branch: str, message: str, changes: Sequence[writes.Change], *,
        author: Mapping[str, str] | None = None, committer: Mapping[str, str] | None = None,
        expected_head: str | None = None, base: str | None = None,
    ) -> writes.CommitResult:
        """Commit ``changes`` (``Put``, ``Delete``, ``Move``) on ``branch`` atomically;
        ``expected_head`` makes it a compare-and-swap, ``base`` starts a new branch."""
        return self._artifacts._send(writes.commit_files(
            self._artifacts._routes, self.name, branch, message, changes, author=author,
            committer=committer, expected_head=expected_head, base=base))

    def list_refs(self, kind: str | None = None, *, per_page: int | None = None,
                  cursor: str | None = None) -> writes.RefPage:
        """Branches and tags (``kind``: all, branches or tags), one page."""
        return self._artifacts._send(writes.list_refs(
            self._artifacts._routes, self.name, kind=kind, per_page=per_page, cursor=cursor))

    def create_branch(self, name: str, target: str) -> writes.RefInfo:
        """A new branch at ``target`` (a ref or commit)."""
        return self._artifacts._send(
            writes.create_branch(self._artifacts._routes, self.name, name, target))

    def move_ref(self, ref: str, target: str, *, expected: str | None = None,
                 force: bool = False) -> writes.RefInfo:
        """Point a branch or tag at ``target`` if it is at ``expected`` (compare-and-swap)."""
        return self._artifacts._send(writes.move_ref(
            self._artifacts._routes, self.name, ref, target, expected=expected, force=force))

    def delete_ref(self, ref: str, *, expected: str | None = None) -> writes.RefInfo:
        """Delete a branch (short name) or ``refs/tags/...``."""
        return self._artifacts._send(
            writes.delete_ref(self._artifacts._routes, self.name, ref, expected=expected))

    def merge(self, head: str, *, target: str | None = None, strategy: str = "merge",
              message: str | None = None, dry_run: bool = False,
              expected_head: str | None = None) -> writes.MergeResult:
        """Merge ``head`` (``ref`` or ``repo:ref`` of a fork) into ``target``."""
        return self._artifacts._send(writes.merge(
            self._artifacts._routes, self.name, head, target=target, strategy=strategy,
            message=message, dry_run=dry_run, expected_head=expected_head))

    def get_note(self, commit: str, notes_ref: str | None = None) -> writes.Note:
        """The git note of ``commit`` (on refs/notes/commits unless ``notes_ref``)."""
        return self._artifacts._send(
            writes.get_note(self._artifacts._routes, self.name, commit, notes_ref))

    def put_note(self, commit: str, message: str, *, notes_ref: str | None = None,
                 expected: str | None = None) -> writes.Note:
        """Write (replace) the git note of ``commit``."""
        return self._artifacts._send(writes.put_note(
            self._artifacts._routes, self.name, commit, message, notes_ref=notes_ref,
            expected=expected))

    def delete_note(self, commit: str, notes_ref: str | None = None) -> writes.Note:
        """Remove the git note of ``commit``."""
        return self._artifacts._send(
            writes.delete_note(self._artifacts._routes, self.name, commit, notes_ref))


__all__ = ["Artifacts", "Repo"]
