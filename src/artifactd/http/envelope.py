"""The Cloudflare v4 envelope, for every JSON response."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from artifactd.redact import redact


class JSONEnvelopeResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success(
    result: Any, *, status: int = 200, result_info: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONEnvelopeResponse:
    body: dict[str, Any] = {"result": result, "success": True, "errors": [], "messages": []}
    if result_info is not None:
        body["result_info"] = result_info
    return JSONEnvelopeResponse(body, status_code=status, headers=headers)


def failure(
    status: int, code: int, message: str, *, pointer: str | None = None,
    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
) -> JSONEnvelopeResponse:
    error: dict[str, Any] = {"code": code, "message": redact(message)}
    if pointer:
        error["source"] = {"pointer": pointer}
    if extra:
        error.update(extra)
    body = {"result": None, "success": False, "errors": [error], "messages": []}
    return JSONEnvelopeResponse(body, status_code=status, headers=headers)
