"""Fork and import routes (spec 001 "Fork a repo", "Import a public HTTPS remote")."""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.api import Call, endpoint
from artifactd.http.control import NS
from artifactd.http.envelope import success
from artifactd.http.shapes import create_result
from artifactd.models import ForkRepoRequest, ImportRepoRequest
from artifactd.services import content, forks, imports, push_guard
from artifactd.services.backend import Backend


def fork_repo(call: Call) -> Response:
    body = call.body(ForkRepoRequest)
    forked = forks.fork_repo(
        call.backend, call.account_id, call.namespace, call.path["name"], body.name,
        description=body.description, read_only=body.read_only,
        default_branch_only=body.default_branch_only,
    )
    result = create_result(forked.created.repo, forked.created.token, call.backend.settings)
    return success({**result, "objects": forked.objects})


def import_repo(call: Call) -> Response:
    body = call.body(ImportRepoRequest)
    created = imports.start_import(
        call.backend, call.account_id, call.namespace, call.path["name"], body
    )
    return success(create_result(created.repo, created.token, call.backend.settings))


routes = [
    Route(NS + "/repos/{name}/fork", endpoint(fork_repo, edit=True, body=True, blocking=True),
          methods=["POST"]),
    Route(NS + "/repos/{name}/import", endpoint(import_repo, edit=True, body=True, blocking=True),
          methods=["POST"]),
]


async def on_startup(backend: Backend) -> None:
    """Settle pushes a crash interrupted, then resume imports that lost their importer."""
    await asyncio.to_thread(push_guard.reconcile, backend)
    await asyncio.to_thread(imports.resume_interrupted, backend)


def on_shutdown(backend: Backend) -> None:
    """Stop running imports (they resume on the next start) and close cat-file processes."""
    imports.shutdown(backend)
    content.shutdown(backend)
