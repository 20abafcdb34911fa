"""``Artifacts``: the blocking client, and ``Repo``, its repo handle."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from types import TracebackType
from typing import Any, TypeVar

import httpx

from . import _core as core
from ._events import EventRoutes
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


__all__ = ["Artifacts", "Repo"]
