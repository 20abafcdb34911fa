"""The Cloudflare v4 envelope, for every JSON response (built through ``results.Envelope``)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from artifactd.http.results import ApiError, Envelope, ErrorSource, ResultInfo
from artifactd.redact import redact


class JSONEnvelopeResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            content = content.model_dump(mode="json")
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def success(
    result: BaseModel | list[BaseModel] | None, *, status: int = 200,
    result_info: ResultInfo | None = None, headers: dict[str, str] | None = None,
) -> JSONEnvelopeResponse:
    """The ``Envelope`` of a result, assembled from the dumped models: dumping an ``Envelope``
    whose ``result`` is ``Any`` costs several times more (pydantic infers the type per call),
    and this is every successful answer. tests/test_openapi.py checks the keys match."""
    if isinstance(result, list):
        dumped: Any = [item.model_dump(mode="json") for item in result]
    else:
        dumped = result.model_dump(mode="json") if result is not None else None
    body: dict[str, Any] = {"result": dumped, "success": True, "errors": [], "messages": []}
    if result_info is not None:
        body["result_info"] = result_info.model_dump(mode="json")
    return JSONEnvelopeResponse(body, status_code=status, headers=headers)


def failure(
    status: int, code: int, message: str, *, pointer: str | None = None,
    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
) -> JSONEnvelopeResponse:
    error = ApiError(code=code, message=redact(message),
                     source=ErrorSource(pointer=pointer) if pointer else None, **(extra or {}))
    body = Envelope(result=None, success=False, errors=[error], messages=[])
    return JSONEnvelopeResponse(body, status_code=status, headers=headers)
