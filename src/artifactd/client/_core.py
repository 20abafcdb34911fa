"""What the sync and async clients share, with no I/O: configuration, request building,
response parsing, error translation and the multi-request flows.

An operation is a ``Call``: method, path, query, JSON body, and the function that turns the
``httpx.Response`` into a typed result or raises. ``Artifacts`` and ``AsyncArtifacts`` differ
only in how they send a ``Call`` and how they sleep inside a ``Flow`` (a generator that
yields calls and pauses and returns the final result).
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from artifactd import __version__
from artifactd.errors import Code
from artifactd.models import CreateRepoRequest, CreateTokenRequest, ForkRepoRequest, ImportRepoRequest

from . import _errors as errors
from ._types import (
    Commit,
    CreateRepoResult,
    CreateTokenResult,
    LogPage,
    RepoInfo,
    RepoPage,
    TokenInfo,
    TokenList,
    Tree,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

ENV_URL = "ARTIFACTD_URL"
ENV_ACCOUNT = "ARTIFACTD_ACCOUNT_ID"
ENV_TOKEN = "ARTIFACTD_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
ENV_NAMESPACE = "ARTIFACTD_NAMESPACE"
# Fallbacks: the names Cloudflare's Artifacts docs export, read after the ARTIFACTD_* ones.
# ARTIFACTS_BASE_URL is a REST base with its namespace (``<host>/v1/api/namespaces/<ns>``, or
# ``<host>/client/v4/accounts/<account>/artifacts/namespaces/<ns>`` in the older docs).
ENV_CF_URL = "ARTIFACTS_BASE_URL"
ENV_CF_ACCOUNT = "CLOUDFLARE_ACCOUNT_ID"
ENV_CF_TOKEN = "CLOUDFLARE_API_TOKEN"  # noqa: S105 - the variable's name, not a secret
DEFAULT_NAMESPACE = "default"
DEFAULT_TIMEOUT = 30.0
USER_AGENT = f"artifactd-python/{__version__}"

IMPORT_POLL_INTERVAL = 0.25  # seconds between status checks while an import runs; first polls are quick
IMPORT_POLL_MAX_INTERVAL = 2.0  # and back off to this, so a long import costs ~30 requests a minute
DEFAULT_IMPORT_WAIT = 600.0  # seconds; the server's own import timeout is of the same order

_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
_API_PREFIX = "/client/v4"
_V1_PREFIX = "/v1/api"
# ``.../v1/api[/namespaces/<ns>]``: the newer reference's base, no account in it.
_V1_BASE = re.compile(r"(?P<root>.*?)/v1/api(?:/namespaces/(?P<namespace>[^/]+))?/*")
# ``.../client/v4[/accounts/<account>/artifacts[/namespaces/<ns>]]``: the v4 base.
_V4_BASE = re.compile(
    r"(?P<root>.*?)/client/v4"
    r"(?:/accounts/(?P<account>[^/]+)/artifacts(?:/namespaces/(?P<namespace>[^/]+))?)?/*"
)


# Configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Where and as whom the client talks. ``api_token`` never shows in ``repr``."""

    base_url: str
    account_id: str  # "" on a ``/v1/api`` base URL: the server takes the API token's account
    api_token: str = field(repr=False)
    namespace: str = DEFAULT_NAMESPACE
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def resolve(
        cls, base_url: str | None, account_id: str | None, api_token: str | None,
        namespace: str | None, timeout: float | None, env: Mapping[str, str] | None = None,
    ) -> Config:
        """Arguments first, then the ``ARTIFACTD_*`` environment variables, then Cloudflare's
        (``ARTIFACTS_BASE_URL``, ``CLOUDFLARE_ACCOUNT_ID``, ``CLOUDFLARE_API_TOKEN``).

        A base URL of the ``/v1/api`` form needs no account id, and its namespace
        (``/v1/api/namespaces/<ns>``) is the default namespace.
        """
        env = os.environ if env is None else env
        url = base_url or env.get(ENV_URL) or env.get(ENV_CF_URL) or ""
        parts = base_parts(url)
        account = (account_id or env.get(ENV_ACCOUNT) or env.get(ENV_CF_ACCOUNT)
                   or parts.account_id or "")
        token = api_token or env.get(ENV_TOKEN) or env.get(ENV_CF_TOKEN) or ""
        missing = [
            f"{arg} (or {var})"
            for arg, var, value in (
                ("base_url", ENV_URL, url),
                ("account_id", ENV_ACCOUNT, account or parts.v1),
                ("api_token", ENV_TOKEN, token),
            )
            if not value
        ]
        if missing:
            raise errors.ConfigurationError("artifactd client needs " + ", ".join(missing))
        return cls(
            base_url=normalize_base_url(url), account_id=account.strip(), api_token=token.strip(),
            namespace=namespace or env.get(ENV_NAMESPACE) or parts.namespace or DEFAULT_NAMESPACE,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        )

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.api_token}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }


@dataclass(frozen=True)
class BaseParts:
    """What a base URL says beyond the server root (``ARTIFACTS_BASE_URL`` says a lot)."""

    root: str
    account_id: str | None = None
    namespace: str | None = None
    v1: bool = False  # the ``/v1/api`` base: no account needed, the token's is used


def base_parts(url: str) -> BaseParts:
    """Split ``.../v1/api[/namespaces/<ns>]`` or
    ``.../client/v4[/accounts/<account>/artifacts[/namespaces/<ns>]]``; any other URL is a root."""
    text = url.strip()
    v1 = _V1_BASE.fullmatch(text)
    if v1 is not None:
        return BaseParts(v1.group("root"), None, v1.group("namespace"), v1=True)
    v4 = _V4_BASE.fullmatch(text)
    if v4 is not None:
        return BaseParts(v4.group("root"), v4.group("account"), v4.group("namespace"))
    return BaseParts(text)


def normalize_base_url(url: str) -> str:
    """The server root. A URL that already ends in ``/client/v4`` (as Cloudflare's does), or is a
    whole REST base (``ARTIFACTS_BASE_URL``, either form: ``base_parts``), is accepted."""
    text = base_parts(url.strip().rstrip("/")).root
    try:
        parts = urlsplit(text)
        httpx.URL(text)  # what the client will parse: ports, IPv6 brackets, characters
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except (ValueError, httpx.InvalidURL):
        valid = False
    if not valid:
        raise errors.ConfigurationError(
            f"base URL must look like http://host:port or https://host, got {redacted_url(text)!r}"
        )
    return text


def redacted_url(url: str) -> str:
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return errors.redact(url)
    if "@" in netloc:
        return url.replace(netloc, "***@" + netloc.rpartition("@")[2], 1)
    return errors.redact(url)


# Retry policy ----------------------------------------------------------------------------

# A request is sent again only when doing so cannot apply it twice: the method is idempotent
# (GET, HEAD, PUT, DELETE), or the failure proves the server never processed it. artifactd
# decides a 429 before any handler runs, and a connection that could not be opened carried
# nothing, so those two are retried for POST too; a 503 or a connection lost mid-request may
# come after the work was done, so a POST (create, fork, import, mint) is not sent again.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 503})
# A kept-alive connection the server closed as the request went out ("Server disconnected
# without sending a response"): the server may have seen the request, so idempotent only.
CONNECTION_LOST = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True)
class Retrying:
    """What a retry hook is told before the client sleeps and sends the request again."""

    method: str
    path: str
    attempt: int  # the attempt that failed, from 1
    delay: float  # seconds the client sleeps now
    reason: str  # "HTTP 429", "HTTP 503", "connection refused", ...


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry. ``RetryPolicy(attempts=1)`` (or ``retries=None``) never retries.

    The wait before attempt *n + 1* is the server's ``Retry-After`` when it sent one, else
    ``backoff * 2 ** (n - 1)`` seconds capped at ``max_backoff``, with up to 25 % jitter so that
    many clients refused at once do not come back at once. No retry starts that would end past
    ``max_elapsed`` seconds after the first attempt: a ``Retry-After`` longer than what is left
    raises at once, with the server's ``retry_after`` on the exception.
    """

    attempts: int = 4  # total attempts, the first included
    backoff: float = 0.5  # seconds before the second attempt
    max_backoff: float = 8.0
    max_elapsed: float = 30.0
    on_retry: Callable[[Retrying], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff < 0 or self.max_backoff < 0 or self.max_elapsed < 0:
            raise errors.ConfigurationError(
                "RetryPolicy needs attempts >= 1 and non-negative backoff, max_backoff, max_elapsed"
            )

    def delay(
        self, method: str, attempt: int, elapsed: float, *, response: httpx.Response | None = None,
        error: httpx.TransportError | None = None, jitter: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before sending again, or ``None`` to give the outcome to the caller."""
        if attempt >= self.attempts:
            return None
        idempotent = method.upper() in IDEMPOTENT_METHODS
        server_wait: float | None = None
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return None
            if response.status_code != 429 and not idempotent:
                return None
            server_wait = retry_after_seconds(response.headers.get("retry-after"))
        elif error is not None:
            # A timeout is not retried: the next attempt would wait as long again, and a
            # request the server is still working on is not helped by a second copy.
            lost = idempotent and isinstance(error, CONNECTION_LOST)
            if not (isinstance(error, httpx.ConnectError) or lost):
                return None
        else:
            return None
        if server_wait is not None:
            wait = server_wait
        else:
            wait = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            wait *= 1 + 0.25 * jitter()
        if elapsed + wait > self.max_elapsed:
            return None
        return wait


NO_RETRIES = RetryPolicy(attempts=1)


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


def retry_reason(response: httpx.Response | None, error: httpx.TransportError | None) -> str:
    if response is not None:
        return f"HTTP {response.status_code}"
    if isinstance(error, httpx.ConnectError):
        return _connect_reason(error)
    return type(error).__name__ if error is not None else "unknown"


# Calls -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Call[Any] | Sleep
Flow = Generator[Step, Any, T]


def _segment(value: str) -> str:
    return quote(value, safe="")


def build_body(model: type[M], **values: Any) -> dict[str, Any]:
    """Validate a request body with the server's own model before sending it."""
    try:
        return model(**values).model_dump(exclude_none=True)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        pointer = "/" + "/".join(str(part) for part in first["loc"]) if first["loc"] else None
        raise errors.ValidationError(
            f"Invalid field {pointer}: {first['msg']}" if pointer else first["msg"],
            code=int(Code.VALIDATION), status=None, pointer=pointer,
        ) from None


def _sdk_invalid(message: str, pointer: str) -> errors.ValidationError:
    return errors.ValidationError(message, code=int(Code.VALIDATION), status=None, pointer=pointer)


def default_branch_of(default_branch: str | None, set_default_branch: str | None) -> str | None:
    """``create``'s branch: ``default_branch`` or the binding's ``setDefaultBranch``, not two."""
    if default_branch is not None and set_default_branch is not None \
            and default_branch != set_default_branch:
        raise _sdk_invalid("pass default_branch or set_default_branch, not both", "/default_branch")
    return default_branch if default_branch is not None else set_default_branch


@dataclass(frozen=True)
class ImportRequest:
    """``import_repo``'s arguments, whichever of its two shapes the caller used."""

    url: str
    name: str
    branch: str | None = None
    depth: int | None = None
    read_only: bool = False
    description: str | None = None


def _pick(mapping: Mapping[str, Any], keys: tuple[str, ...], default: Any) -> Any:
    """The value of the first of ``keys`` present (the binding's camelCase or the Python
    spelling), else ``default``. Values pass as they are: the request model checks types."""
    return next((mapping[key] for key in keys if key in mapping), default)


def import_request(
    url: str | None, name: str | None, *, source: Mapping[str, Any] | None,
    target: Mapping[str, Any] | None, branch: str | None, depth: int | None, read_only: bool,
    description: str | None,
) -> ImportRequest:
    """``import_repo(url, name, ...)`` or the binding's ``import_repo(source={url, branch,
    depth}, target={name, opts: {description, readOnly}})``; the server checks the values."""
    if source is None and target is None:
        if url is None or name is None:
            raise _sdk_invalid("import_repo needs url and name (or source= and target=)", "/url")
        return ImportRequest(url, name, branch, depth, read_only, description)
    if url is not None or name is not None:
        raise _sdk_invalid("pass url and name, or source= and target=, not both", "/url")
    if source is None or target is None:
        raise _sdk_invalid("import_repo needs both source= and target=",
                           "/source" if source is None else "/target")
    opts = target.get("opts") or {}
    if not isinstance(opts, Mapping):
        raise _sdk_invalid("target['opts'] must be a mapping", "/target/opts")
    if not isinstance(source.get("url"), str):
        raise _sdk_invalid("source['url'] must be the URL to import", "/source/url")
    if not isinstance(target.get("name"), str):
        raise _sdk_invalid("target['name'] must be the new repo's name", "/target/name")
    return ImportRequest(
        url=source["url"], name=target["name"],
        branch=source.get("branch", branch), depth=source.get("depth", depth),
        read_only=_pick(opts, ("readOnly", "read_only"), read_only),
        description=_pick(opts, ("description",), description),
    )


class Routes:
    """Builds the ``Call`` of every operation, for one account and namespace."""

    def __init__(self, account_id: str, namespace: str):
        self.account_id = account_id
        self.namespace = namespace
        # Without an account id, the /v1/api base: the server takes the API token's account.
        self.prefix = (
            f"{_API_PREFIX}/accounts/{_segment(account_id)}/artifacts/namespaces/{_segment(namespace)}"
            if account_id else f"{_V1_PREFIX}/namespaces/{_segment(namespace)}"
        )

    def whoami(self) -> Call[dict[str, Any]]:
        """The API token's account, id and permission (a route beyond the spec, docs/api.md)."""
        path = f"{_API_PREFIX}/accounts/{_segment(self.account_id)}/artifacts/whoami"
        return Call("GET", path, _parse(dict))

    def repo_path(self, name: str, *rest: str) -> str:
        return "/".join([self.prefix, "repos", _segment(name), *rest])

    # Namespace methods

    def create_repo(
        self, name: str, *, description: str | None, read_only: bool, default_branch: str | None,
    ) -> Call[CreateRepoResult]:
        body = build_body(
            CreateRepoRequest, name=name, description=description, read_only=read_only,
            default_branch=default_branch,
        )
        return Call("POST", self.prefix + "/repos", self._create_result, body=body)

    def repo_info(self, name: str) -> Call[RepoInfo]:
        return Call("GET", self.repo_path(name), self._repo_info)

    def list_repos(
        self, *, limit: int | None = None, cursor: str | None = None, search: str | None = None,
        sort: str | None = None, direction: str | None = None,
    ) -> Call[RepoPage]:
        params = {
            key: value for key, value in (
                ("limit", limit), ("cursor", cursor), ("search", search), ("sort", sort),
                ("direction", direction),
            ) if value is not None
        }
        return Call("GET", self.prefix + "/repos", self._repo_page, params=params)

    def next_page(self, call: Call[RepoPage], page: RepoPage) -> Call[RepoPage] | None:
        if not page.cursor:
            return None
        return replace(call, params={**call.params, "cursor": page.cursor})

    def import_repo(self, request: ImportRequest) -> Call[CreateRepoResult]:
        body = build_body(
            ImportRepoRequest, url=request.url, branch=request.branch, depth=request.depth,
            read_only=request.read_only, description=request.description,
        )
        return Call("POST", self.repo_path(request.name, "import"), self._create_result, body=body)

    def delete_repo(self, name: str) -> Call[bool]:
        return Call("DELETE", self.repo_path(name), _found)

    def revoke_token_by_id(self, token_id: str) -> Call[bool]:
        return Call("DELETE", f"{self.prefix}/tokens/{_segment(token_id)}", _revoked)

    # Repo handle methods

    def create_token(self, repo: str, scope: str, ttl: int | None) -> Call[CreateTokenResult]:
        values: dict[str, Any] = {"repo": repo, "scope": scope}
        if ttl is not None:
            values["ttl"] = ttl
        body = build_body(CreateTokenRequest, **values)
        return Call("POST", self.prefix + "/tokens", _parse(CreateTokenResult.from_json), body=body)

    def list_tokens(
        self, repo: str, *, state: str | None, page: int | None, per_page: int | None,
    ) -> Call[TokenList]:
        params = {
            key: value for key, value in (("state", state), ("page", page), ("per_page", per_page))
            if value is not None
        }
        return Call("GET", self.repo_path(repo, "tokens"), _token_list, params=params)

    def revoke_repo_token(self, repo: str, token_or_id: str) -> Call[bool]:
        # A plaintext token never goes into a URL (URLs end up in logs): it travels in a body.
        return Call("POST", self.repo_path(repo, "tokens", "revoke"), _revoked, body={"token": token_or_id})

    def fork(
        self, repo: str, name: str, *, description: str | None, read_only: bool,
        default_branch_only: bool,
    ) -> Call[CreateRepoResult]:
        body = build_body(
            ForkRepoRequest, name=name, description=description, read_only=read_only,
            default_branch_only=default_branch_only,
        )
        return Call("POST", self.repo_path(repo, "fork"), self._create_result, body=body)

    # Content reads

    def log(self, repo: str, *, ref: str | None, limit: int | None, offset: int | None) -> Call[LogPage]:
        params = {
            key: value for key, value in (("ref", ref), ("limit", limit), ("offset", offset))
            if value is not None
        }
        return Call("GET", self.repo_path(repo, "log"), _log_page, params=params)

    def commit(self, repo: str, sha: str) -> Call[Commit]:
        return Call("GET", self.repo_path(repo, "commit", _segment(sha)), _parse(Commit.from_json))

    def tree(self, repo: str, sha: str) -> Call[Tree]:
        return Call("GET", self.repo_path(repo, "tree", _segment(sha)), _parse(Tree.from_json))

    def blob(self, repo: str, sha: str) -> Call[bytes]:
        return Call("GET", self.repo_path(repo, "blob", _segment(sha)), raw_bytes)

    def file(self, repo: str, path: str, ref: str | None) -> Call[bytes]:
        params: dict[str, str | int] = {"path": path}
        if ref is not None:
            params["ref"] = ref
        return Call("GET", self.repo_path(repo, "file"), raw_bytes, params=params)

    def raw(self, repo: str, ref: str, path: str) -> Call[bytes]:
        segments = [quote(part, safe="") for part in path.strip("/").split("/")]
        return Call("GET", self.repo_path(repo, "raw", _segment(ref), *segments), raw_bytes)

    # Parsers bound to this namespace

    def _create_result(self, response: httpx.Response) -> CreateRepoResult:
        return CreateRepoResult.from_json(_object(result(response), response), self.namespace)

    def _repo_info(self, response: httpx.Response) -> RepoInfo:
        return RepoInfo.from_json(_object(result(response), response), self.namespace)

    def _repo_page(self, response: httpx.Response) -> RepoPage:
        body = envelope(response)
        items = body.get("result")
        info = body.get("result_info") or {}
        if not isinstance(items, list) or not isinstance(info, dict):
            raise unexpected(response, "a list of repos")
        cursor = info.get("cursor")
        per_page = info.get("per_page")
        total = info.get("total_count")
        return RepoPage(
            repos=[RepoInfo.from_json(item, self.namespace) for item in items if isinstance(item, dict)],
            cursor=cursor if isinstance(cursor, str) and cursor else None,
            per_page=per_page if isinstance(per_page, int) else len(items),
            total=total if isinstance(total, int) and not isinstance(total, bool) else None,
        )


def ensure_ready(info: RepoInfo) -> RepoInfo:
    """``get()`` throws while a repo is not ready, as the binding does."""
    if info.status in ("importing", "forking"):
        raise errors.Conflict(
            f"Repo {info.name!r} is still {info.status}; retry shortly",
            code=int(Code.IMPORT_IN_PROGRESS if info.status == "importing"
                     else Code.FORK_IN_PROGRESS),
            status=None, retriable=True,
        )
    if info.status == "failed":
        raise errors.Conflict(
            f"Repo {info.name!r} failed: {info.status_reason or 'unknown reason'}",
            code=int(Code.REPO_FAILED), status=None,
        )
    return info


# Flows -----------------------------------------------------------------------------------


def import_and_wait(
    routes: Routes, import_call: Call[CreateRepoResult], name: str, timeout: float,
    clock: Callable[[], float] = time.monotonic,
) -> Flow[CreateRepoResult]:
    """Start an import, then poll the repo until it is ready; raise if it fails or takes too long."""
    created: CreateRepoResult = yield import_call
    deadline = clock() + timeout
    interval = IMPORT_POLL_INTERVAL
    while True:
        info: RepoInfo = yield routes.repo_info(name)
        if info.status == "ready":
            return created
        if info.status == "failed":
            raise errors.ImportFailed(
                f"Import of {name!r} failed: {info.status_reason or 'unknown reason'}",
                name=name, reason=info.status_reason,
            )
        if clock() >= deadline:
            raise errors.WaitTimeout(
                f"Import of {name!r} is still {info.status} after {timeout:g} s; it goes on on the "
                "server (check it with get() or `artifactd repo get`)"
            )
        yield Sleep(min(interval, max(0.0, deadline - clock())))
        interval = min(interval * 2, IMPORT_POLL_MAX_INTERVAL)


# Responses -------------------------------------------------------------------------------


def _is_envelope(body: object) -> bool:
    return isinstance(body, dict) and isinstance(body.get("success"), bool) and "errors" in body


def _decode(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The envelope of a successful response; raise the right error for anything else."""
    body = _decode(response)
    if not _is_envelope(body):
        raise unexpected(response, "a JSON envelope")
    if body["success"] is True and response.is_success:
        return dict(body)
    raise api_error(response, body)


def result(response: httpx.Response) -> Any:
    return envelope(response).get("result")


def raw_bytes(response: httpx.Response) -> bytes:
    """File and blob routes answer bytes on success and an envelope on failure."""
    if response.is_success:
        return response.content
    body = _decode(response)
    if _is_envelope(body):
        raise api_error(response, body)
    raise unexpected(response, "file bytes or a JSON envelope")


def _parse(build: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T]:
    def parse(response: httpx.Response) -> T:
        return build(_object(result(response), response))

    return parse


def _object(value: Any, response: httpx.Response) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise unexpected(response, "a JSON object in `result`")
    return value


def _token_list(response: httpx.Response) -> TokenList:
    body = envelope(response)
    items = body.get("result")
    info = body.get("result_info") or {}
    if not isinstance(items, list) or not isinstance(info, dict):
        raise unexpected(response, "a list of tokens")
    tokens = [TokenInfo.from_json(item) for item in items if isinstance(item, dict)]

    def number(key: str, default: int) -> int:
        value = info.get(key)
        return value if isinstance(value, int) else default

    return TokenList(
        tokens=tokens, total=number("total_count", len(tokens)), page=number("page", 1),
        per_page=number("per_page", len(tokens)), total_pages=number("total_pages", 1),
    )


def _log_page(response: httpx.Response) -> LogPage:
    body = envelope(response)
    items = body.get("result")
    info = body.get("result_info") or {}
    if not isinstance(items, list) or not isinstance(info, dict):
        raise unexpected(response, "a list of commits")
    offset, limit = info.get("offset"), info.get("per_page")
    return LogPage(
        commits=[Commit.from_json(item) for item in items if isinstance(item, dict)],
        offset=offset if isinstance(offset, int) else 0,
        limit=limit if isinstance(limit, int) else len(items),
        has_more=info.get("has_more") is True,
    )


def _found(response: httpx.Response) -> bool:
    """``delete``: ``True`` when the repo was deleted, ``False`` when there was none."""
    try:
        envelope(response)
    except errors.NotFound:
        return False
    return True


def _revoked(response: httpx.Response) -> bool:
    """``revoke_token``: ``True`` when revoked now, ``False`` for an unknown or already revoked token."""
    try:
        envelope(response)
    except errors.NotFound:
        return False
    except errors.Conflict as exc:
        if exc.code == Code.TOKEN_ALREADY_REVOKED:
            return False
        raise
    return True


_BY_STATUS: dict[int, type[errors.APIError]] = {
    400: errors.ValidationError,
    401: errors.AuthenticationError,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    429: errors.RateLimited,
}


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None


def api_error(response: httpx.Response, body: Mapping[str, Any]) -> errors.APIError:
    """Translate an error envelope into the exception for its status."""
    raw_errors = body.get("errors")
    first = raw_errors[0] if isinstance(raw_errors, list) and raw_errors else {}
    first = first if isinstance(first, dict) else {}
    code = first.get("code") if isinstance(first.get("code"), int) else None
    message = str(first.get("message") or f"HTTP {response.status_code}")
    source = first.get("source")
    pointer = source.get("pointer") if isinstance(source, dict) else None
    status = response.status_code
    retry_after = _retry_after(response)
    if status == 409:
        # The hosted service says "retry" by its code alone (no ``retriable`` field).
        retriable = first.get("retriable") is True or code in errors.RETRIABLE_CODES
        return errors.Conflict(
            message, code=code, status=status, pointer=pointer, retriable=retriable,
            retry_after=retry_after,
        )
    if status == 429:
        return errors.RateLimited(
            message, code=code, status=status, pointer=pointer, retry_after=retry_after or 1
        )
    cls = _BY_STATUS.get(status) or (errors.ServerError if status >= 500 else errors.APIError)
    return cls(message, code=code, status=status, pointer=pointer, retry_after=retry_after)


_TITLE = re.compile(rb"<title>(.*?)</title>", re.I | re.S)


def unexpected(response: httpx.Response, wanted: str) -> errors.UnexpectedResponse:
    """A response that is not the API's: say what came back, briefly, so the user can tell why."""
    content_type = response.headers.get("content-type", "no content type").split(";")[0]
    title = _TITLE.search(response.content[:4096])
    if title:
        snippet = title.group(1)
    else:
        first_line = response.content[:200].strip().splitlines()
        snippet = first_line[0] if first_line else b""
    hint = snippet.decode("utf-8", "replace").strip()[:100]
    request = response.request
    return errors.UnexpectedResponse(
        f"{request.method} {redacted_url(str(request.url))} answered HTTP {response.status_code} "
        f"with {content_type}{f' ({hint!r})' if hint else ''}, not {wanted}: is the URL an "
        "artifactd server, or is a proxy in the way?",
        status=response.status_code,
    )


def _connect_reason(exc: BaseException) -> str:
    """Why a connection failed, in words, from the OS error under httpx's (and anyio's) wrappers."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not resolved"
        if isinstance(seen, ssl.SSLError):
            return f"TLS error: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def transport_error(exc: httpx.TransportError, base_url: str, timeout: float) -> errors.TransportError:
    """Translate httpx's transport failures once, with a message that names the server."""
    where = redacted_url(base_url)
    if isinstance(exc, httpx.TimeoutException):
        kind = type(exc).__name__.replace("Timeout", "").lower() or "request"
        return errors.Timeout(f"No answer from {where} within {timeout:g} s ({kind} timeout)")
    if isinstance(exc, httpx.ConnectError):
        return errors.ConnectError(
            f"Cannot connect to {where} ({_connect_reason(exc)}); is the server running and the URL right?"
        )
    return errors.TransportError(f"Request to {where} failed: {str(exc) or type(exc).__name__}")
