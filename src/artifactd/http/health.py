"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can serve): unauthenticated,
not rate limited, plain JSON (docs/operations.md)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.apidoc import Operation, describe
from artifactd.http.envelope import JSONEnvelopeResponse
from artifactd.http.results import CheckResult, Liveness, Readiness
from artifactd.services import health
from artifactd.services.backend import Backend

NO_STORE = {"Cache-Control": "no-store"}


async def healthz(_request: Request) -> Response:
    return JSONEnvelopeResponse(Liveness(status="ok"), headers=NO_STORE)


async def readyz(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    checks = await run_in_threadpool(health.readiness, backend)
    ready = all(check.ok for check in checks)
    body = Readiness(
        status="ok" if ready else "unavailable",
        checks=[CheckResult(name=c.name, ok=c.ok, detail=c.detail) for c in checks],
    )
    return JSONEnvelopeResponse(body, status_code=200 if ready else 503, headers=NO_STORE)


TAG = "Operations"
routes = [
    Route("/healthz", describe(healthz, Operation(
        "Liveness: the process answers", TAG, response=Liveness, enveloped=False,
        security="none",
    )), methods=["GET"]),
    Route("/readyz", describe(readyz, Operation(
        "Readiness: database reachable, migrations current, data dir writable, git present",
        TAG, response=Readiness, enveloped=False, security="none",
        extra_responses={503: "A check failed (the body names it)"},
    )), methods=["GET"]),
]
