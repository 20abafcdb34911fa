"""The MCP server at ``/mcp`` (issue 13): the official ``mcp`` SDK, streamable HTTP, stateless.

Authentication is ours, in front of the SDK: ``Authorization: Bearer`` with an API token
(every repo of its account; ``namespace`` picks the namespace) or a repo token (its repo
only, and only the tools its scope allows). The caller is put in the ASGI scope, and each
tool reads it from the SDK's request context, so one server instance serves every caller.

Tools are registered through ``tool()``: a decorated async function taking ``Caller``'s
checks first. Adding a tool is writing one such function; ``write=True`` marks tools that
need Artifacts > Edit (API token) or a write-scoped repo token. Errors are the domain
errors' messages (with their code), returned as MCP tool errors.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from artifactd.errors import (
    ArtifactdError,
    AuthenticationError,
    Code,
    Conflict,
    NotFound,
    PermissionDenied,
)
from artifactd.http.api import parse_body
from artifactd.http.apidoc import Operation, describe
from artifactd.http.errors import domain_error_response
from artifactd.http.reads import compare_info
from artifactd.http.shapes import commit_info, tree_info
from artifactd.http.writes import merge_result
from artifactd.models import CommitRequest, CreateBranchRequest, MergeRequest, NoteRequest
from artifactd.services import limits
from artifactd.services.access import accounts, repo_tokens
from artifactd.services.access.tokens import parse_api_token
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events
from artifactd.services.reads import compare as compares
from artifactd.services.reads import content, notes_read, treewalk
from artifactd.services.reads.content import HASH, RepoReader
from artifactd.services.repos import forks, repos
from artifactd.services.writes import commits, merges, notes, refs
from artifactd.storage.metadata import RepoRow

PATH = "/mcp"
CALLER_KEY = "artifactd.mcp.caller"
MAX_READ_TOKEN_TTL = 3600  # a minted read token is short-lived by design
MAX_TEXT = 1 << 20  # a file larger than this is refused by read_file (use the REST routes)
_EXTRA = "mcp_endpoint"


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account's API token, or one repo's token."""

    backend: Backend
    account_id: str
    permission: str  # "read" | "edit" for API tokens; the scope ("read" | "write") for repo tokens
    repo: RepoRow | None = None  # set for a repo token: the only repo it can reach

    def authorize(self, namespace: str, name: str, *, write: bool = False) -> None:
        """The token rules alone: a repo token reaches its repo only (any other is just
        missing), and a write needs a write-scoped repo token or Artifacts > Edit."""
        if self.repo is not None:
            if (namespace, name) != (self.repo.namespace, self.repo.name):
                raise NotFound(f"Repo {name!r} not found")
            if write and self.permission != "write":
                raise PermissionDenied("This repo token is read-only",
                                       code=Code.PERMISSION_DENIED)
        elif write:
            accounts.require_edit(accounts.Principal(self.account_id, "edit"
                                  if self.permission == "edit" else "read", ""))

    def find(self, namespace: str, name: str, *, write: bool = False) -> RepoRow:
        """The repo, ready and rate-checked; a repo the caller cannot reach is just missing."""
        self.authorize(namespace, name, write=write)
        repo = repos.get_repo(self.backend, self.account_id, namespace, name)
        limits.check_rate(self.backend, "git", repo.id)
        repos.require_ready(repo)
        return repo

    async def reader(self, namespace: str, name: str) -> RepoReader:
        repo = await run_in_threadpool(self.find, namespace, name)
        if self.backend.repos.remote:  # the s3 store may download packs first
            return await run_in_threadpool(RepoReader, self.backend, repo)
        return RepoReader(self.backend, repo)


# -- the tool registry -------------------------------------------------------------------

ToolFn = TypeVar("ToolFn", bound=Callable[..., Awaitable[Any]])
Body = TypeVar("Body", bound=BaseModel)
TOOLS: list[tuple[Callable[..., Awaitable[Any]], str, bool]] = []


def tool(description: str, *, write: bool = False) -> Callable[[ToolFn], ToolFn]:
    """Register an MCP tool; its signature (typed parameters and ``ctx: Context``) is its schema."""
    def register(fn: ToolFn) -> ToolFn:
        TOOLS.append((fn, description, write))
        return fn
    return register


def caller_of(ctx: Context) -> Caller:
    request = ctx.request_context.request
    found = request.scope.get(CALLER_KEY) if isinstance(request, Request) else None
    if not isinstance(found, Caller):  # only reachable if the endpoint is mounted without us
        raise AuthenticationError("Authentication required", code=Code.AUTH_REQUIRED)
    return found


def _checked(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


# -- read tools --------------------------------------------------------------------------


@tool("Read a file of a repo at a ref (default: the default branch). Text is returned as "
      "UTF-8; other bytes as base64 with encoding 'base64'.")
async def read_file(ctx: Context, repo: str, path: str, ref: str | None = None,
                    namespace: str = "default") -> dict[str, Any]:
    reader = await caller_of(ctx).reader(namespace, repo)
    blob = await reader.file(ref, path)
    if blob.data is None or blob.size > MAX_TEXT:
        raise ArtifactdError(f"The file is {blob.size} bytes; read it with GET .../file",
                             code=Code.VALIDATION, pointer="/path")
    try:
        return {"path": path, "sha": blob.sha, "size": blob.size, "encoding": "utf-8",
                "content": blob.data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"path": path, "sha": blob.sha, "size": blob.size, "encoding": "base64",
                "content": base64.b64encode(blob.data).decode()}


@tool("List a tree: the entries at 'path' of a ref, or with recursive=true every file below "
      "it with sizes (paginated by limit and offset).")
async def list_tree(ctx: Context, repo: str, ref: str | None = None, path: str | None = None,
                    recursive: bool = False, limit: int = 1000, offset: int = 0,
                    namespace: str = "default") -> dict[str, Any]:
    reader = await caller_of(ctx).reader(namespace, repo)
    commit = await reader.resolve_commit(ref or reader.repo.default_branch)
    tree = await reader.tree(commit)
    for part in content.check_path(path).split("/") if path else []:
        match = [item for item in tree.entries if item.entry.name == part]
        if not match or match[0].entry.type != "tree":
            raise NotFound("Directory not found", code=Code.FILE_NOT_FOUND, pointer="/path")
        tree = await reader.tree(match[0].entry.sha)
    if recursive:
        page = await treewalk.walk(reader, tree.sha, offset, limit)
        return {"sha": page.sha, "has_more": page.has_more, "entries": [
            {"path": e.path, "mode": e.mode, "type": e.type, "sha": e.sha, "size": e.size}
            for e in page.entries]}
    return dict(tree_info(tree).model_dump(mode="json"))


@tool("List commits of a ref, newest first (limit 1 to 200).")
async def log(ctx: Context, repo: str, ref: str | None = None, limit: int = 20, offset: int = 0,
              namespace: str = "default") -> dict[str, Any]:
    reader = await caller_of(ctx).reader(namespace, repo)
    page = await reader.log(ref, limit, offset)
    return {"commits": [commit_info(c).model_dump(mode="json") for c in page.commits],
            "has_more": page.has_more}


@tool("Compare base...head: merge base, commits ahead and behind, files changed. Either side "
      "is 'ref' or 'repo:ref' (a repo of the same namespace, such as a fork's parent). "
      "patch=true adds the unified diff (cut at 1 MiB, patch_truncated says so).")
async def compare(ctx: Context, repo: str, base: str, head: str, patch: bool = False,
                  namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    here = await run_in_threadpool(caller.find, namespace, repo)
    found = await compares.compare(caller.backend, here, f"{base}...{head}",
                                   lambda name: caller.find(namespace, name))
    result: dict[str, Any] = compare_info(found).model_dump(mode="json")
    if patch:
        diff = await compares.patch(caller.backend, found, max_bytes=1 << 20)
        result["patch"] = diff.data.decode("utf-8", "replace")
        result["patch_truncated"] = diff.truncated
    return result


@tool("Read the git note of a commit (refs/notes/commits, or notes_ref such as "
      "'refs/notes/prompts'). Returns null content when the commit has no note.")
async def read_notes(ctx: Context, repo: str, commit: str, notes_ref: str = "refs/notes/commits",
                     namespace: str = "default") -> dict[str, Any]:
    reader = await caller_of(ctx).reader(namespace, repo)
    full = notes_ref if notes_ref.startswith("refs/notes/") else f"refs/notes/{notes_ref}"
    content.check_ref(full, "/notes_ref")
    target = await reader.resolve_commit(commit, "/commit")
    found = await notes_read.note_of(reader, full, target)
    return {"commit": target, "notes_ref": full, "content": found}


# -- write tools (Artifacts > Edit or a write-scoped repo token) --------------------------


@tool("Fork a repo into a new repo of the same namespace; returns its remote and a token.",
      write=True)
async def fork(ctx: Context, repo: str, name: str, default_branch_only: bool = False,
               namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    if caller.repo is not None:
        raise PermissionDenied("A repo token cannot create repos; use an API token",
                               code=Code.PERMISSION_DENIED)
    await run_in_threadpool(caller.find, namespace, repo, write=True)
    forked = await run_in_threadpool(lambda: forks.fork_repo(
        caller.backend, caller.account_id, namespace, repo, name,
        default_branch_only=default_branch_only))
    created = forked.created
    return {"id": created.repo.id, "name": created.repo.name,
            "remote": caller.backend.settings.remote_url(created.repo.account_id,
                                                         created.repo.namespace,
                                                         created.repo.name),
            "token": created.token, "objects": forked.objects}


@tool(f"Mint a short-lived read-only repo token (ttl 60 to {MAX_READ_TOKEN_TTL} seconds) for "
      "handing to another agent or a git client.")
async def mint_read_token(ctx: Context, repo: str, ttl: int = 900,
                          namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    if not repo_tokens.MIN_TTL <= ttl <= MAX_READ_TOKEN_TTL:
        raise ArtifactdError(f"ttl must be between {repo_tokens.MIN_TTL} and "
                             f"{MAX_READ_TOKEN_TTL} seconds", code=Code.VALIDATION, pointer="/ttl")
    if caller.repo is None:
        accounts.require_edit(accounts.Principal(caller.account_id, "edit"
                              if caller.permission == "edit" else "read", ""))
    found = await run_in_threadpool(caller.find, namespace, repo)
    minted = await run_in_threadpool(repo_tokens.mint, caller.backend, found, "read", ttl)
    return {"id": minted.row.id, "scope": "read", "token": minted.plaintext,
            "expires_at": minted.row.expires_us // 1_000_000}


# -- writes through the REST write routes' services ----------------------------------------

Result = TypeVar("Result")


async def _write(caller: Caller, namespace: str, repo: str, work: Callable[[], Result]) -> Result:
    """A write tool: the token rules and the namespace's control rate (as a REST write), then
    the REST route's service, which applies a push's admission (ready, read-only, the repo's
    rate, storage limits) and records the write (size, events, metrics). A failure is an
    error event of the account, as over REST."""
    started = now_us()

    def run() -> Result:
        try:
            caller.authorize(namespace, repo, write=True)
            limits.check_rate(caller.backend, "control", f"{caller.account_id}:{namespace}")
            return work()
        except Exception as exc:
            events.record_error(caller.backend, caller.account_id, namespace, repo, exc,
                                started_us=started)
            raise

    return await run_in_threadpool(run)


def _body(model: type[Body], fields: dict[str, Any]) -> Body:
    """Arguments validated exactly as the REST route's JSON body (same errors and pointers);
    arguments left out (``None``) are absent fields."""
    present = {key: value for key, value in fields.items() if value is not None}
    return parse_body(json.dumps(present).encode(), model)


@tool("Commit files to a branch in one atomic commit. changes: a list of {op: 'put', path, "
      "content, encoding?: 'utf-8'|'base64', mode?: '100644'|'100755'|'120000'}, {op: "
      "'delete', path} or {op: 'move', from, path}. expected_head (40 hex) makes it a "
      "compare-and-swap; base starts a new branch. author/committer: {name, email, date?}.",
      write=True)
async def commit_files(ctx: Context, repo: str, branch: str, message: str,
                       changes: list[dict[str, Any]], expected_head: str | None = None,
                       base: str | None = None, author: dict[str, str] | None = None,
                       committer: dict[str, str] | None = None,
                       namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    made = await _write(caller, namespace, repo, lambda: commits.commit_request(
        caller.backend, caller.account_id, namespace, repo, _body(CommitRequest, {
            "branch": branch, "message": message, "changes": changes, "base": base,
            "expected_head": expected_head, "author": author, "committer": committer})))
    return {"sha": made.sha, "tree": made.tree, "branch": made.branch, "parents": made.parents}


@tool("Create a branch at a target (a branch, tag or commit id).", write=True)
async def create_branch(ctx: Context, repo: str, name: str, target: str,
                        namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    made = await _write(caller, namespace, repo, lambda: refs.create_branch(
        caller.backend, caller.account_id, namespace, repo,
        _body(CreateBranchRequest, {"name": name, "target": target})))
    return {"name": made.name, "ref": made.ref, "kind": made.kind, "target": made.target,
            "object_type": made.object_type}


@tool("Merge head ('ref' or 'repo:ref', such as an agent's fork) into target (default: the "
      "default branch). dry_run=true reports mergeable or the conflicting files with their "
      "hunks and writes nothing; strategy 'merge', 'squash' or 'fast-forward'; expected_head "
      "is a compare-and-swap on the target. A real merge with conflicts is an error.",
      write=True)
async def merge(ctx: Context, repo: str, head: str, target: str | None = None,
                strategy: str = "merge", message: str | None = None, dry_run: bool = False,
                expected_head: str | None = None, namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    outcome = await _write(caller, namespace, repo, lambda: merges.merge(
        caller.backend, caller.account_id, namespace, repo, _body(MergeRequest, {
            "head": head, "target": target, "strategy": strategy, "message": message,
            "dry_run": dry_run, "expected_head": expected_head})))
    return dict(merge_result(outcome).model_dump(mode="json"))


@tool("Write (or replace) the git note of a commit (a commit id or a ref) on "
      "refs/notes/commits, or notes_ref such as 'prompts'; expected is a compare-and-swap "
      "on the notes ref.", write=True)
async def write_notes(ctx: Context, repo: str, commit: str, content: str,
                      notes_ref: str = "commits", expected: str | None = None,
                      namespace: str = "default") -> dict[str, Any]:
    caller = caller_of(ctx)
    target = commit
    if not HASH.fullmatch(commit):  # a ref: read it first, as read_notes does
        target = await (await caller.reader(namespace, repo)).resolve_commit(commit, "/commit")
    note = await _write(caller, namespace, repo, lambda: notes.write_note(
        caller.backend, caller.account_id, namespace, repo, target, _body(NoteRequest, {
            "message": content, "notes_ref": notes_ref, "expected": expected})))
    return {"commit": note.commit, "notes_ref": note.notes_ref, "content": note.message,
            "note_sha": note.note_sha, "notes_commit": note.notes_commit}


# -- the endpoint ------------------------------------------------------------------------


def _tool_error(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Domain errors become tool errors that name their stable code."""
    import functools

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return _checked(await fn(*args, **kwargs))
        except ArtifactdError as exc:
            raise ToolError(error_text(exc)) from None
    return run


def error_text(exc: ArtifactdError) -> str:
    """``<code>: <message>``, then the field (``source.pointer`` of the REST error) and any
    details (a merge's conflicts) as JSON on the next line."""
    text = f"{exc.code.value}: {exc}"
    if exc.pointer:
        text += f" (at {exc.pointer})"
    if isinstance(exc, Conflict) and exc.details:
        text += "\n" + json.dumps(exc.details)
    return text


def build_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer("artifactd", instructions=(
        "Versioned storage that speaks git: read files, trees and history, compare forks "
        "with their parent, commit files, create branches, merge a fork back (dry run "
        "first), read and write notes, fork, and mint read tokens."))
    for fn, description, write in TOOLS:
        server.tool(name=fn.__name__, description=description, annotations=ToolAnnotations(
            readOnlyHint=not write, destructiveHint=False))(_tool_error(fn))
    return server


class McpEndpoint:
    """The ASGI endpoint: authenticate, then hand the request to the SDK's session manager."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.server = build_server()
        self.manager = StreamableHTTPSessionManager(
            app=self.server._lowlevel_server, stateless=True, json_response=True,
            # Bearer tokens, never cookies: a rebinding page cannot authenticate, so the
            # Host check (which would refuse every name but localhost) is off.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, value = (authorization or "").partition(" ")
        token = value.strip()
        if scheme.lower() == "bearer" and parse_api_token(token) is None and token:
            access = repo_tokens.lookup(self.backend, token)
            if repo_tokens.token_state(access.token) != "active":
                raise AuthenticationError("Invalid repo token", code=Code.INVALID_REPO_TOKEN)
            return Caller(self.backend, access.repo.account_id, access.token.scope, access.repo)
        principal = accounts.authenticate_any(self.backend, authorization)
        return Caller(self.backend, principal.account_id, principal.permission)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(Request(scope).headers)
        try:
            caller = await run_in_threadpool(self.authenticate, headers.get("authorization"))
        except ArtifactdError as exc:
            await domain_error_response(exc)(scope, receive, send)
            return
        await self.manager.handle_request({**scope, CALLER_KEY: caller}, receive, send)


def routes_for(backend: Backend) -> list[BaseRoute]:
    endpoint = McpEndpoint(backend)
    backend.extras[_EXTRA] = endpoint
    # Stateless: no session to resume (GET) or end (DELETE), so only POST is served.
    return [Route(PATH, describe(endpoint, DOC), methods=["POST"])]


DOC = Operation(
    "MCP server (streamable HTTP)", "MCP", enveloped=False, operation_id="mcp",
    media={"application/json": {"schema": {"type": "object"}}},
    description="JSON-RPC of the Model Context Protocol (stateless streamable HTTP, JSON "
                "answers). `Authorization: Bearer` with an API token or a repo token, which "
                "limits the tools to its repo and scope. Tools: docs/mcp.md.",
)


@contextlib.asynccontextmanager
async def running(backend: Backend) -> AsyncIterator[None]:
    """The session manager's task group, for the app's lifespan."""
    endpoint = backend.extras.get(_EXTRA)
    if not isinstance(endpoint, McpEndpoint):
        yield
        return
    async with endpoint.manager.run():
        yield
