"""Fork and import routes (spec 001 "Fork a repo", "Import a public HTTPS remote")."""

from __future__ import annotations

import asyncio

from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.api import Call, endpoint
from artifactd.http.apidoc import Operation
from artifactd.http.control import NS, TAG_REPOS
from artifactd.http.envelope import success
from artifactd.http.results import CreateRepoResult, ForkRepoResult
from artifactd.http.shapes import create_result, fork_result
from artifactd.models import ForkRepoRequest, ImportRepoRequest
from artifactd.services.backend import Backend
from artifactd.services.git import push_guard
from artifactd.services.reads import content
from artifactd.services.repos import forks, imports


def fork_repo(call: Call) -> Response:
    body = call.body(ForkRepoRequest)
    forked = forks.fork_repo(
        call.backend, call.account_id, call.namespace, call.path["name"], body.name,
        description=body.description, read_only=body.read_only,
        default_branch_only=body.default_branch_only,
    )
    return success(fork_result(forked.created, forked.objects, call.backend.settings))


def import_repo(call: Call) -> Response:
    body = call.body(ImportRepoRequest)
    created = imports.start_import(
        call.backend, call.account_id, call.namespace, call.path["name"], body
    )
    return success(create_result(created, call.backend.settings))


routes = [
    Route(NS + "/repos/{name}/fork", endpoint(
        fork_repo, edit=True, body=True, blocking=True, doc=Operation(
            "Fork a repo", TAG_REPOS, request=ForkRepoRequest, response=ForkRepoResult,
            description="Creates `name` from the repo in the path, sharing its objects.",
        )), methods=["POST"]),
    Route(NS + "/repos/{name}/import", endpoint(
        import_repo, edit=True, body=True, blocking=True, doc=Operation(
            "Import a public HTTPS remote", TAG_REPOS, request=ImportRepoRequest,
            response=CreateRepoResult,
            description="Creates the repo at once (status `importing`); the import runs in "
                        "the background.",
        )), methods=["POST"]),
]


async def on_startup(backend: Backend) -> None:
    """Settle pushes a crash interrupted, then resume imports that lost their importer."""
    await asyncio.to_thread(push_guard.reconcile, backend)
    await asyncio.to_thread(imports.resume_interrupted, backend)


def on_shutdown(backend: Backend) -> None:
    """Stop running imports (they resume on the next start) and close cat-file processes."""
    imports.shutdown(backend)
    content.shutdown(backend)
