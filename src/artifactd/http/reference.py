"""``GET /openapi.json`` and ``GET /docs``: the API reference, served from this package.

The page is rendered on the server from the OpenAPI document with a Jinja2 template shipped in
``templates/``; it loads nothing from anywhere else (no CDN, no script), so it works offline
and under a strict ``Content-Security-Policy``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from artifactd.http.apidoc import Operation, describe
from artifactd.http.envelope import JSONEnvelopeResponse
from artifactd.http.openapi import document_for

PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_templates = Environment(
    loader=PackageLoader("artifactd.http", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_INLINE_CODE = re.compile(r"`([^`]+)`")


def _inline_code(text: str | None) -> Markup:
    """Descriptions' `code` spans as <code>: the text is escaped first, then only the tags
    added here are markup."""
    escaped = str(escape(text or ""))
    return Markup(_INLINE_CODE.sub(r"<code>\1</code>", escaped))  # noqa: S704  # escaped above


_templates.filters["md"] = _inline_code


def _schema_name(schema: dict[str, Any] | None) -> str:
    """A short type label for a schema: a model name, ``[Model]``, ``string``, ..."""
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_schema_name(s) for s in schema["anyOf"])
    if "allOf" in schema:
        return " & ".join(_schema_name(s) for s in schema["allOf"])
    if schema.get("type") == "array":
        return f"[{_schema_name(schema.get('items'))}]"
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    return str(schema.get("type", "any"))


def render_page(document: dict[str, Any]) -> str:
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append({"method": method.upper(), "path": path, **op})
    return _templates.get_template("reference.html").render(
        info=document["info"], tags=by_tag, schemas=document["components"]["schemas"],
        security=document["components"]["securitySchemes"], type_name=_schema_name,
    )


async def openapi_json(request: Request) -> Response:
    return JSONEnvelopeResponse(document_for(request.app))


async def docs_page(request: Request) -> Response:
    page: str | None = getattr(request.app.state, "docs_page", None)
    if page is None:
        page = render_page(document_for(request.app))
        request.app.state.docs_page = page
    return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_CSP})


TAG = "Reference"
routes = [
    Route("/openapi.json", describe(openapi_json, Operation(
        "This OpenAPI document", TAG, security="none", enveloped=False,
        media={"application/json": {"schema": {"type": "object"}}},
    )), methods=["GET"]),
    Route("/docs", describe(docs_page, Operation(
        "The API reference page (HTML)", TAG, security="none", enveloped=False,
        media={"text/html": {"schema": {"type": "string"}}},
    )), methods=["GET"]),
]
