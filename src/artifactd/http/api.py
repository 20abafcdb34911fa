"""The plumbing every control-plane endpoint shares: auth, body and query parsing.

An endpoint is a plain synchronous function ``(Call) -> Response``; ``endpoint`` wraps it so
that the body is read (bounded) on the event loop and everything else, including the API
token check and the database work, runs in the thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from artifactd.errors import Code, PayloadTooLarge, ValidationError
from artifactd.http.apidoc import Operation, describe
from artifactd.http.jsonbody import check_text, check_tree, load_json
from artifactd.services import limits
from artifactd.services.access import accounts
from artifactd.services.access.accounts import Principal
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.services.events import events

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Call:
    backend: Backend
    principal: Principal
    path: dict[str, str]
    query: dict[str, str]
    raw_body: bytes | None

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    @property
    def namespace(self) -> str:
        return self.path["namespace"]

    def body(self, model: type[Model]) -> Model:
        return parse_body(self.raw_body or b"", model)

    def int_query(self, name: str, default: int) -> int:
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        text = raw.strip()
        if not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())) or len(text) > 12:
            raise ValidationError(f"{name} must be an integer", pointer=f"/{name}")
        return int(text)


def parse_body(raw: bytes, model: type[Model]) -> Model:
    if not raw.strip():
        raise ValidationError("Request body must be a JSON object", code=Code.MALFORMED_JSON)
    data = load_json(raw, check=False)
    if not isinstance(data, dict):
        raise ValidationError("Request body must be a JSON object", code=Code.MALFORMED_JSON)
    # Unknown fields are ignored (docs/api.md), content and all: the text rules apply to the
    # fields the route reads.
    data = {key: value for key, value in data.items() if key in model.model_fields}
    check_tree(data)
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        pointer = "/" + "/".join(str(part) for part in first["loc"]) if first["loc"] else None
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "Unknown field"
        raise ValidationError(
            f"Invalid field {pointer}: {message}" if pointer else message, pointer=pointer
        ) from None


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _body_repo_name(raw: bytes | None) -> str:
    """The repo a failed create or token request was about, for its error event."""
    try:
        data = load_json(raw or b"")
    except ValidationError:
        return ""
    if isinstance(data, dict):
        for key in ("name", "repo"):
            value = data.get(key)
            if isinstance(value, str) and len(value) <= 64:
                return value
    return ""


def endpoint(
    handler: Callable[[Call], Response], *, edit: bool = False, body: bool = False,
    blocking: bool = False, doc: Operation | None = None,
) -> Callable[[Request], Any]:
    """``blocking``: the handler runs git or network work (fork, import), so it always goes
    to the thread pool, never inline on the event loop. ``doc`` documents the route in the
    OpenAPI document (``openapi.py``)."""
    async def run(request: Request) -> Response:
        backend: Backend = request.app.state.backend
        raw = await read_body(request, backend.settings.max_body_bytes) if body else None
        authorization = request.headers.get("authorization")
        path = dict(request.path_params)
        query = dict(request.query_params)

        def work() -> Response:
            started = now_us()
            principal = accounts.authenticate(backend, authorization, path.get("account_id"))
            namespace = path.get("namespace", "")
            try:
                check_text(path)
                check_text(query)
                limits.check_rate(backend, "control", f"{principal.account_id}:{namespace or '*'}")
                if edit:
                    accounts.require_edit(principal)
                return handler(Call(backend, principal, path, query, raw))
            except Exception as exc:
                # Errors of authenticated callers are analytics events of their account.
                if namespace:
                    events.record_error(backend, principal.account_id, namespace,
                                        path.get("name") or _body_repo_name(raw), exc,
                                        started_us=started)
                raise

        # A write whose SQLite writer lock is held elsewhere (a fork's create in a thread,
        # the other worker) would wait for it on the loop with every request it serves.
        if not blocking and (backend.meta.write_inline_ok() if edit else backend.meta.inline_ok):
            return work()
        return await run_in_threadpool(work)

    run.__name__ = handler.__name__
    return describe(run, doc) if doc is not None else run
