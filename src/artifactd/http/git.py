"""Git smart-HTTP routes: ``<remote>/info/refs``, ``git-upload-pack``, ``git-receive-pack``.

A raw ASGI endpoint rather than request/response handlers, because both directions stream
at once and a client that disconnects must stop git straight away: the request body is
pulled from ``receive`` as git reads it, the response is pushed to ``send`` as git writes
it, and once the body is complete a watcher keeps listening for ``http.disconnect``.

Errors before the response starts are plain text with a status (git prints the text as
``remote: ...``); 401s carry ``WWW-Authenticate: Basic`` so credential helpers work, except
for a refused ``Bearer`` token, which gets 403 so that git prints the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import zlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from artifactd.errors import (
    ArtifactdError,
    AuthenticationError,
    RateLimited,
    ServiceUnavailable,
    ValidationError,
)
from artifactd.http.apidoc import Operation, Query, describe
from artifactd.http.errors import status_for
from artifactd.redact import redact
from artifactd.services import limits
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.git import git_access, git_rpc

log = logging.getLogger("artifactd.git")

# Inflate a gzip body in steps of at most this many output bytes: a small compressed body
# cannot turn into a large allocation (gzip bombs), only into more steps.
INFLATE_STEP = 256 << 10
NO_CACHE = [
    (b"cache-control", b"no-cache, max-age=0, must-revalidate"),
    (b"pragma", b"no-cache"),
    (b"expires", b"Fri, 01 Jan 1980 00:00:00 GMT"),
]


async def _send_text(send: Send, status: int, message: str,
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (redact(message).rstrip("\n") + "\n").encode("utf-8", "replace")
    await send({
        "type": "http.response.start", "status": status,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *NO_CACHE, *(headers or []),
        ],
    })
    await send({"type": "http.response.body", "body": body})


def _sent_bearer(scope: Scope) -> bool:
    authorization = Headers(scope=scope).get("authorization", "")
    return authorization.strip()[:7].lower() == "bearer "


async def _send_error(send: Send, exc: ArtifactdError, bearer: bool = False) -> None:
    status = status_for(exc)
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(exc, AuthenticationError):
        if bearer:
            # The token came from `http.extraHeader`, which git cannot change: a 401 would
            # only make it ask for a username ("could not read Username"). git prints the
            # text of a 403 as "remote: ...", so the client learns why.
            status = 403
        else:
            headers.append((b"www-authenticate", b'Basic realm="artifactd", charset="UTF-8"'))
    if isinstance(exc, RateLimited | ServiceUnavailable):
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    await _send_text(send, status, exc.message, headers)


class _Body:
    """The request body as an async iterator, then a watch for the client going away."""

    def __init__(self, receive: Receive, gzip: bool):
        self._receive = receive
        self._gzip = gzip
        self.complete = asyncio.Event()

    async def _raw(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise git_rpc.ClientDisconnected()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                break

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            if not self._gzip:
                async for chunk in self._raw():
                    yield chunk
                return
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            async for chunk in self._raw():
                data = chunk
                while data:
                    out = inflater.decompress(data, INFLATE_STEP)
                    data = inflater.unconsumed_tail
                    if out:
                        yield out
                    if inflater.eof:
                        break
            if not inflater.eof:
                raise ValidationError("Truncated gzip request body")
            tail = inflater.flush()
            if tail:
                yield tail
        except zlib.error:
            raise ValidationError("Malformed gzip request body") from None
        finally:
            self.complete.set()

    async def wait_disconnect(self) -> None:
        """Returns when the client disconnects (only listens once the body was read)."""
        await self.complete.wait()
        while True:
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":
                return


def _admit(
    backend: Backend, target: git_access.GitTarget, authorization: str | None,
    service: git_access.Service, push: bool, declared_bytes: int | None,
) -> git_access.AuthorizedGit:
    """Authorize the request, then apply the rate limit and, for a push, the storage limit."""
    authorized = git_access.authorize(backend, target, authorization, service)
    repo = authorized.repo
    started = now_us()
    try:
        max_input = limits.admit_git(backend, repo, push, declared_bytes)
    except ArtifactdError as exc:  # rate or storage limit: an error event of the repo
        events.record_error(backend, repo.account_id, repo.namespace, repo.name, exc,
                            started_us=started)
        raise
    if max_input is None:
        return authorized
    return dataclasses.replace(authorized, max_input_bytes=max_input)


class GitEndpoint:
    """The ASGI app behind ``/git/...``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        backend: Backend = scope["app"].state.backend
        try:
            await self._handle(backend, scope, receive, send)
        except ArtifactdError as exc:
            await _send_error(send, exc, bearer=_sent_bearer(scope))

    async def _handle(self, backend: Backend, scope: Scope, receive: Receive, send: Send) -> None:
        target = git_access.parse_path(scope["path"])
        if target is None:
            await _send_text(send, 404, "Not a repository URL")
            return
        scope["artifactd.route"] = "git"
        scope["artifactd.repo"] = target.label
        headers = Headers(scope=scope)
        method = scope["method"]
        if target.action == "info/refs":
            if method != "GET":
                await _send_text(send, 405, "Use GET for info/refs", [(b"allow", b"GET")])
                return
            service = QueryParams(scope.get("query_string", b"")).get("service")
            if service not in git_access.SERVICES:
                await _send_text(send, 403, "Only smart HTTP is supported: "
                                 "pass ?service=git-upload-pack or ?service=git-receive-pack")
                return
        else:
            if method != "POST":
                await _send_text(send, 405, f"Use POST for {target.action}", [(b"allow", b"POST")])
                return
            service = target.action
            expected = f"application/x-{service}-request"
            if headers.get("content-type", "").split(";")[0].strip().lower() != expected:
                await _send_text(send, 415, f"Content-Type must be {expected}")
                return
        assert service in git_access.SERVICES
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            await _send_text(send, 415, f"Unsupported Content-Encoding {encoding[:40]!r}")
            return
        protocol = git_access.protocol_for(
            service, git_access.check_git_protocol(headers.get("git-protocol"))
        )
        gzip = encoding in ("gzip", "x-gzip")
        declared = headers.get("content-length", "")
        admit = functools.partial(
            _admit, backend, target, headers.get("authorization"), service,
            service == "git-receive-pack" and target.action != "info/refs",
            int(declared) if declared.isdigit() and not gzip else None,
        )
        # On SQLite the checks are microseconds of local reads, cheaper than a thread hop
        # (the control plane makes the same choice); PostgreSQL is a round trip.
        # Inline on SQLite (microseconds); the s3 store may download packs: a thread.
        inline = backend.meta.inline_ok and not backend.repos.remote
        authorized = admit() if inline else await run_in_threadpool(admit)
        body = _Body(receive, gzip=gzip)
        if target.action == "info/refs":
            body.complete.set()
            stream = git_rpc.advertise(backend, authorized, protocol)
            kind = "advertisement"
        else:
            stream = git_rpc.exchange(backend, authorized, protocol, body.chunks(),
                                      int(declared) if declared.isdigit() else None)
            kind = "result"
        content_type = f"application/x-{service}-{kind}".encode()
        await _stream(stream, content_type, body, send)


async def _stream(
    stream: AsyncIterator[bytes], content_type: bytes, body: _Body, send: Send
) -> None:
    """Send git's output; a disconnect cancels it, which terminates git (see git_rpc)."""

    async def produce() -> None:
        started = False
        try:
            async for chunk in stream:
                if not started:
                    started = True
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", content_type), *NO_CACHE]})
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except ArtifactdError as exc:
            if not started:
                await _send_error(send, exc)
                return
            log.info("git response aborted after it started: %s", exc.message)
        except git_rpc.ClientDisconnected:
            return
        if not started:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", content_type), *NO_CACHE]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    producer = asyncio.ensure_future(produce())
    watcher = asyncio.ensure_future(body.wait_disconnect())
    try:
        await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not producer.done():
            producer.cancel()  # the client is gone: closing the stream stops git
        with contextlib.suppress(asyncio.CancelledError):
            await producer
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


# Methods are checked by the endpoint itself so that git gets plain-text answers.
REMOTE = "/git/{account_id}/{namespace}/{repo}.git"
_PACK = {"schema": {"type": "string", "format": "binary"}}
_GIT_NOTE = (
    "The data plane that `git clone`, `fetch` and `push` speak (protocol v0, v1 and v2; "
    "docs/git.md). Authenticate with a repo token: `Authorization: Bearer <token>`, or Basic "
    "with any username and the token's secret as password. Errors are plain text that git "
    "prints; a 401 carries `WWW-Authenticate: Basic`."
)


def _git_operation(operation_id: str, summary: str, *media: str, **extra: Any) -> Operation:
    return Operation(summary, "Git", description=_GIT_NOTE, security="repo_token", enveloped=False,
                     media=dict.fromkeys(media, _PACK), operation_id=operation_id, **extra)


def _git_doc(remote: str, suffix: str = "") -> Operation:
    return Operation("Git smart HTTP", "Git", variants=(
        ("get", remote + "/info/refs", _git_operation(
            "git_info_refs" + suffix, "Git: advertise refs (the first request of every git command)",
            "application/x-git-upload-pack-advertisement", "application/x-git-receive-pack-advertisement",
            query=(Query("service", "The git service", {
                "type": "string", "enum": ["git-upload-pack", "git-receive-pack"]}, required=True),),
        )),
        ("post", remote + "/git-upload-pack", _git_operation(
            "git_upload_pack" + suffix, "Git: fetch or clone", "application/x-git-upload-pack-result",
            raw_request="application/x-git-upload-pack-request",
        )),
        ("post", remote + "/git-receive-pack", _git_operation(
            "git_receive_pack" + suffix, "Git: push (a write token)", "application/x-git-receive-pack-result",
            raw_request="application/x-git-receive-pack-request",
        )),
    ))


GIT_DOC = _git_doc(REMOTE)
# The changelog's remote form, without /git and the account (the repo token names it).
CHANGELOG_DOC = _git_doc("/{namespace}/{repo}.git", "_changelog_form")
routes = [
    # First: http/app.py puts this one ahead of every other route.
    Route("/git/{path:path}", describe(GitEndpoint(), GIT_DOC)),
    # Only git's three endpoints under a `<repo>.git` (git_access.parse_path), so no other
    # path is taken from the JSON routes.
    *(Route("/{namespace}/{repo}.git/" + action, describe(GitEndpoint(), CHANGELOG_DOC))
      for action in ("info/refs", "git-upload-pack", "git-receive-pack")),
]
