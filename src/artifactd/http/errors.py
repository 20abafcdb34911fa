"""Where domain errors become HTTP responses: one table, one place.

Unexpected exceptions are answered (500 envelope, traceback logged) by the request
middleware in ``accesslog.py``, which sees every request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from artifactd import errors as e
from artifactd.http.envelope import failure

STATUS: dict[type[e.ArtifactdError], int] = {
    e.ValidationError: 400,
    e.ConfigError: 400,
    e.AuthenticationError: 401,
    e.PermissionDenied: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.PayloadTooLarge: 413,
    e.RangeNotSatisfiable: 416,
    e.RateLimited: 429,
    e.StorageLimitExceeded: 413,
    e.ServiceUnavailable: 503,
    e.InternalError: 500,
}


def status_for(exc: e.ArtifactdError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def domain_error_response(exc: e.ArtifactdError) -> Response:
    headers: dict[str, str] = {}
    extra: dict[str, object] | None = None
    if isinstance(exc, e.RateLimited | e.ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, e.AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="artifactd"'
    if isinstance(exc, e.Conflict) and exc.retriable:
        extra = {"retriable": True}
    if isinstance(exc, e.Conflict) and exc.details:
        extra = {**(extra or {}), **exc.details}
    return failure(
        status_for(exc), int(exc.code), exc.message, pointer=exc.pointer, headers=headers,
        extra=extra,
    )


async def handle_domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, e.ArtifactdError)
    return domain_error_response(exc)


def _allowed(request: Request) -> str:
    """Every method of every route at this path: Starlette's own ``Allow`` names only the
    first route's, and one path (``/repos``) has a route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches({**request.scope, "method": "GET"})
            if match != Match.NONE:
                methods |= route.methods
    return ", ".join(sorted(methods))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return failure(404, e.Code.ROUTE_NOT_FOUND, "No route matches this path")
    if exc.status_code == 405:
        return failure(405, e.Code.METHOD_NOT_ALLOWED, "Method not allowed on this route",
                       headers={**(exc.headers or {}), "Allow": _allowed(request)})
    return failure(exc.status_code, e.Code.INTERNAL, str(exc.detail))
