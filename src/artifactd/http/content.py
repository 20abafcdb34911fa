"""Repo content routes (spec 001 "Repo content"): log, commit, tree, blob, file, raw.

These handlers are async end to end: the API token, rate-limit and repo checks are one step
(inline for SQLite, in the thread pool for PostgreSQL, like every control-plane route),
then the reads are awaited on the worker's cat-file pool and byte bodies are streamed.

Byte responses (``blob``, ``file``, ``raw``) carry the blob's id as a strong ``ETag``,
answer ``If-None-Match`` with 304, and serve one ``Range`` (206; 416 past the end).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from artifactd.errors import Code, NotFound, ValidationError
from artifactd.http.apidoc import Operation, Query, describe
from artifactd.http.control import NS
from artifactd.http.envelope import failure, success
from artifactd.http.ranges import UNSATISFIABLE, etag_matches, parse_range
from artifactd.http.results import CommitInfo, LogResultInfo, TreeInfo
from artifactd.http.shapes import commit_info, tree_info
from artifactd.http.sniff import SNIFF_BYTES, sniff
from artifactd.services import limits
from artifactd.services.access import accounts
from artifactd.services.access.accounts import Principal
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.git import git_rpc
from artifactd.services.reads import content
from artifactd.services.reads.content import Blob, RepoReader
from artifactd.services.repos import repos
from artifactd.storage.metadata import RepoRow

# Objects named by hash never change; `private` because every read is authenticated.
IMMUTABLE = "private, max-age=31536000, immutable"
# Reads through a ref can change with the next push: cache, but revalidate (ETag -> 304).
REVALIDATE = "private, no-cache"
JSON_SHAPE = "v1"  # part of JSON ETags, so a future change of shape invalidates caches
RAW_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


@dataclass(frozen=True)
class Opened:
    backend: Backend
    reader: RepoReader


Handler = Callable[[Request, Opened], Awaitable[Response]]


def routed(
    handler: Handler, doc: Operation | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, rate-limit and find the ready repo, like every control-plane route.

    The checks are inline for SQLite and in the thread pool for PostgreSQL (as ``endpoint``
    does); errors of an authenticated caller become analytics events of its account.
    ``doc`` documents the route in the OpenAPI document (``openapi.py``).
    """

    async def run(request: Request) -> Response:
        backend: Backend = request.app.state.backend
        authorization = request.headers.get("authorization")
        params = request.path_params
        started = now_us()
        principals: list[Principal] = []

        def check() -> RepoRow:
            principal = accounts.authenticate(backend, authorization, params.get("account_id"))
            principals.append(principal)
            try:
                repo = repos.get_repo(backend, principal.account_id, params["namespace"], params["name"])
            except NotFound:
                # Probing for names is charged to the namespace, like any control-plane call.
                limits.check_rate(backend, "control", f"{principal.account_id}:{params['namespace']}")
                raise
            # Reads of a repo count against that repo's rate (the spec's 2,000 per 10 s per
            # artifact, shared with its git requests), not the namespace's control-plane
            # rate, which would cap a namespace of thousands of repos at 200 reads/s.
            limits.check_rate(backend, "git", repo.id)
            repos.require_ready(repo)
            return repo

        try:
            if getattr(backend.meta, "inline_ok", False):
                repo = check()
            else:
                repo = await run_in_threadpool(check)
            # The s3 store brings its cache current first (a download when cold): a thread.
            reader = await run_in_threadpool(RepoReader, backend, repo) if backend.repos.remote \
                else RepoReader(backend, repo)
            return await handler(request, Opened(backend, reader))
        except Exception as exc:
            if principals:
                events.record_error(backend, principals[0].account_id, params["namespace"],
                                    params["name"], exc, started_us=started)
            raise

    run.__name__ = handler.__name__
    return describe(run, doc) if doc is not None else run


def _int_query(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip()
    if len(text) > 12 or not (text.isdigit() or (text[:1] == "-" and text[1:].isdigit())):
        raise ValidationError(f"{name} must be an integer", pointer=f"/{name}")
    return int(text)


def _json_with_etag(request: Request, result: CommitInfo | TreeInfo, etag: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return success(result, headers=headers)


async def log(request: Request, opened: Opened) -> Response:
    limit = _int_query(request, "limit", content.LOG_DEFAULT_LIMIT)
    offset = _int_query(request, "offset", 0)
    page = await opened.reader.log(request.query_params.get("ref") or None, limit, offset)
    return success(
        [commit_info(c) for c in page.commits],
        result_info=LogResultInfo(
            page=page.offset // page.limit + 1,
            per_page=page.limit,
            offset=page.offset,
            count=len(page.commits),
            has_more=page.has_more,
        ),
    )


async def commit(request: Request, opened: Opened) -> Response:
    sha = content.check_hash(request.path_params["hash"])
    found = await opened.reader.commit(sha)
    return _json_with_etag(request, commit_info(found), f'"{sha}-{JSON_SHAPE}"')


async def tree(request: Request, opened: Opened) -> Response:
    if request.query_params.get("recursive", "").lower() in ("true", "1"):
        from artifactd.http.reads import recursive_tree  # reads builds on this module

        return await recursive_tree(request, opened)
    sha = content.check_hash(request.path_params["hash"])
    found = await opened.reader.tree(sha)
    return _json_with_etag(request, tree_info(found), f'"{sha}-{JSON_SHAPE}"')


async def blob(request: Request, opened: Opened) -> Response:
    found = await opened.reader.blob(request.path_params["hash"])
    return await _bytes(request, opened.backend, found, None, IMMUTABLE)


async def file(request: Request, opened: Opened) -> Response:
    found = await opened.reader.file(
        request.query_params.get("ref") or None, request.query_params.get("path")
    )
    return await _bytes(request, opened.backend, found, None, REVALIDATE)


async def raw(request: Request, opened: Opened) -> Response:
    found, path = await opened.reader.raw(request.path_params["rest"])
    return await _bytes(request, opened.backend, found, path, REVALIDATE)


async def _bytes(
    request: Request, backend: Backend, found: Blob, raw_path: str | None, cache: str
) -> Response:
    """The blob's bytes, or the requested range of them; ``raw_path`` set means sniff a type."""
    etag = f'"{found.sha}"'
    headers = {"ETag": etag, "Cache-Control": cache, "Accept-Ranges": "bytes",
               "X-Content-Type-Options": "nosniff"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)

    wanted = None
    if_range = request.headers.get("if-range")
    if if_range is None or etag_matches(if_range, etag, weak=False):
        wanted = parse_range(request.headers.get("range"), found.size)
    if wanted == UNSATISFIABLE:
        return failure(
            416, Code.RANGE_NOT_SATISFIABLE,
            f"Range not satisfiable: the object is {found.size} bytes",
            headers={**headers, "Content-Range": f"bytes */{found.size}"},
        )
    status, start, length = 200, 0, found.size
    if isinstance(wanted, tuple):
        status, start, length = 206, wanted[0], wanted[1] - wanted[0] + 1
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{found.size}"

    headers["Content-Length"] = str(length)
    if found.data is None and request.method != "HEAD":
        # A dedicated git process will stream the blob: it counts against git_max_processes
        # like the data plane's, taken before the response starts so overload is a clean 503.
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(git_rpc.git_slot(backend))
        try:
            return await _streamed(backend, found, raw_path, headers, status, start, length, stack)
        except BaseException:
            await stack.aclose()
            raise
    media_type = "application/octet-stream"
    if raw_path is not None:
        headers["Content-Security-Policy"] = RAW_CSP
        media_type = sniff(raw_path, found.data[:SNIFF_BYTES] if found.data is not None else None)
    if request.method == "HEAD" or found.data is None:
        return Response(status_code=status, headers=headers, media_type=media_type)
    return Response(found.data[start:start + length], status_code=status, headers=headers,
                    media_type=media_type)


async def _streamed(
    backend: Backend, found: Blob, raw_path: str | None, headers: dict[str, str], status: int,
    start: int, length: int, stack: contextlib.AsyncExitStack,
) -> Response:
    chunks = content.blob_chunks(backend, found, start, length)
    first = b""
    if raw_path is None:
        media_type = "application/octet-stream"
    else:
        headers["Content-Security-Policy"] = RAW_CSP
        head = None
        if start == 0 and length > 0:
            # A large file: sniff its first chunk, then send that chunk ahead of the rest.
            first = await anext(chunks, b"")
            head = first
        media_type = sniff(raw_path, head)
    return StreamingResponse(_prepend(first, chunks, stack), status_code=status, headers=headers,
                             media_type=media_type)


async def _prepend(
    first: bytes, rest: AsyncIterator[bytes], stack: contextlib.AsyncExitStack
) -> AsyncIterator[bytes]:
    """``first`` then ``rest``; then stop the git process and give its slot back."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        closer = getattr(rest, "aclose", None)
        if closer is not None:
            await closer()
        await stack.aclose()


TAG = "Repo content"
REF = Query("ref", "Branch, tag or commit hash (default: the repo's default branch)")
BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
SNIFFED = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
BYTES_NOTE = ("The blob's bytes. `ETag` is the blob id (`If-None-Match` gives 304); one "
              "`Range` is served (206, 416 past the end).")
REPO = NS + "/repos/{name}"
routes = [
    Route(REPO + "/log", routed(log, Operation(
        "List commits", TAG, response=CommitInfo, many=True, result_info=LogResultInfo, query=(
            REF,
            Query("limit", f"Commits per page, 1 to {content.LOG_MAX_LIMIT} (default "
                  f"{content.LOG_DEFAULT_LIMIT})",
                  {"type": "integer", "minimum": 1, "maximum": content.LOG_MAX_LIMIT}),
            Query("offset", "Commits to skip (default 0)", {"type": "integer", "minimum": 0}),
        ),
    )), methods=["GET"]),
    Route(REPO + "/commit/{hash}", routed(commit, Operation(
        "Get a commit", TAG, response=CommitInfo, extra_responses={304: "Not modified"},
    )), methods=["GET"]),
    Route(REPO + "/tree/{hash}", routed(tree, Operation(
        "Get a tree", TAG, response=TreeInfo, extra_responses={304: "Not modified"},
        description="With `recursive=true`, every file below the tree (`path`, `mode`, `type`, "
                    "`sha`, `size`), paginated with `limit` (1 to 10000, default 1000) and "
                    "`offset` (docs/api.md).",
        query=(Query("recursive", "List every file below the tree, with sizes",
                     {"type": "boolean"}),
               Query("limit", "Entries per page of a recursive listing", {"type": "integer"}),
               Query("offset", "Entries to skip in a recursive listing", {"type": "integer"})),
    )), methods=["GET"]),
    Route(REPO + "/blob/{hash}", routed(blob, Operation(
        "Get a blob's bytes", TAG, media=BYTES, description=BYTES_NOTE,
        extra_responses={206: "Partial content", 304: "Not modified"}, errors=(416,),
    )), methods=["GET"]),
    Route(REPO + "/file", routed(file, Operation(
        "Get a file's bytes at a ref", TAG, media=BYTES, description=BYTES_NOTE, query=(
            REF, Query("path", "Path of the file in the tree (relative, `/`-separated)",
                       {"type": "string", "minLength": 1, "maxLength": 4096}, required=True),
        ), extra_responses={206: "Partial content", 304: "Not modified"}, errors=(416,),
    )), methods=["GET"]),
    Route(REPO + "/raw/{rest:path}", routed(raw, Operation(
        "Get a file by ref and path, with a content type", TAG, media=SNIFFED,
        description="`rest` is `<ref>/<path>`. " + BYTES_NOTE + " The content type is sniffed "
                    "from the path and the first bytes, under a sandboxing CSP.",
        extra_responses={206: "Partial content", 304: "Not modified"}, errors=(416,),
    )), methods=["GET"]),
]
