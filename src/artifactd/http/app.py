"""The ASGI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute

from artifactd.errors import ArtifactdError
from artifactd.http import (
    content,
    control,
    dashboard,
    git,
    graphql,
    health,
    heap,
    loop_slice,
    metrics,
    reference,
    repo_actions,
    v1,
)
from artifactd.http import subscriptions as event_subscriptions
from artifactd.http import writes as writes_routes
from artifactd.http.accesslog import AccessLogMiddleware
from artifactd.http.errors import handle_domain_error, handle_http_exception
from artifactd.http.mcp import routes_for as mcp_routes
from artifactd.http.mcp import running as mcp_running
from artifactd.http.reads import routes as read_routes
from artifactd.observability import EVENTS_DROPPED, SQLITE_CHECKPOINTS
from artifactd.services.backend import Backend
from artifactd.services.events import analytics
from artifactd.services.events.webhook_worker import DeliveryProcess
from artifactd.services.repos import recovery
from artifactd.services.repos.maintenance import MaintenanceThread
from artifactd.storage.checkpointer import WalCheckpointer
from artifactd.storage.watchdog import Watchdog

log = logging.getLogger("artifactd")

TRASH_SWEEP_INTERVAL = 5.0  # seconds between passes of the deleted-repo sweeper when idle
# After a delete wakes the sweeper it waits this long first, so that under a stream of
# deletes (one repo per agent task) one pass removes a batch of them.
TRASH_SWEEP_GATHER = 0.2
RECLAIM_INTERVAL = 60.0  # seconds between looks for what a crashed sibling worker left


async def _sweep_trash_forever(backend: Backend) -> None:
    """Remove deleted repos: soon after a delete (the store's trash listeners wake it), and
    every ``TRASH_SWEEP_INTERVAL`` anyway (what a sibling worker or a grace period left)."""
    loop = asyncio.get_running_loop()
    deleted = asyncio.Event()

    def wake() -> None:
        if not deleted.is_set():  # a pass is already due: no wake-up per delete
            loop.call_soon_threadsafe(deleted.set)

    backend.repos.trash_listeners.append(wake)
    try:
        while True:
            deleted.clear()
            try:
                await asyncio.to_thread(backend.repos.sweep_trash,
                                        backend.settings.trash_grace_seconds)
            except Exception:  # keep sweeping whatever one pass hit
                log.exception("trash sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deleted.wait(), TRASH_SWEEP_INTERVAL)
                await asyncio.sleep(TRASH_SWEEP_GATHER)
    finally:
        backend.repos.trash_listeners.remove(wake)


async def _reclaim_forever(backend: Backend) -> None:
    try:  # once, in the background: it walks every repo directory
        await asyncio.to_thread(recovery.trash_unowned_dirs, backend)
    except Exception:
        log.exception("sweeping repo directories without a row failed")
    while True:
        await asyncio.sleep(RECLAIM_INTERVAL)
        try:
            await asyncio.to_thread(recovery.reclaim, backend)
        except Exception:
            log.exception("reclaiming crash debris failed")


def build_routes(backend: Backend) -> list[BaseRoute]:
    control_plane = [*control.routes, *repo_actions.routes, *content.routes, *read_routes,
                     *writes_routes.routes, *event_subscriptions.routes]
    # Starlette tries the routes in order, a regex each: git's own route first, since five of
    # an agent loop's eight requests are git's and no other route takes a ``/git/`` path
    # (after the 90 control-plane routes, matching one cost about 110 µs).
    routes: list[BaseRoute] = [
        git.routes[0], *control_plane, *v1.derive(control_plane), *git.routes[1:], *graphql.routes,
        *health.routes, *reference.routes, *mcp_routes(backend), *dashboard.routes,
    ]
    if backend.settings.metrics_enabled:
        routes += metrics.routes
    return routes


def create_app(backend: Backend) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # First end what a crashed predecessor left running, then watch our own children.
        await asyncio.to_thread(recovery.reclaim, backend)
        watchdog = Watchdog(backend.settings.data_path, backend.owner.token)
        reclaimer = asyncio.create_task(_reclaim_forever(backend))
        recorder = analytics.install_recorder(backend, on_drop=EVENTS_DROPPED.inc)
        if backend.settings.analytics_enabled:
            recorder.start()
        else:
            backend.extras["event_sinks"] = []
        sweeper = asyncio.create_task(_sweep_trash_forever(backend))
        maintenance = MaintenanceThread(backend)
        maintenance.start()
        webhooks = DeliveryProcess(backend)
        webhooks.start()
        checkpointer = None
        if backend.meta.engine.dialect.name == "sqlite":
            checkpointer = WalCheckpointer(backend.meta.engine, on_checkpoint=SQLITE_CHECKPOINTS.inc)
            checkpointer.start()
        await repo_actions.on_startup(backend)
        heap.settle()
        loop_slice.shorten(backend.settings.loop_slice_us)  # after every thread started above
        try:
            async with mcp_running(backend):
                yield
        finally:
            sweeper.cancel()
            reclaimer.cancel()
            if checkpointer is not None:
                await asyncio.to_thread(checkpointer.stop)
            repo_actions.on_shutdown(backend)
            await asyncio.to_thread(maintenance.stop)
            await asyncio.to_thread(webhooks.stop)
            await asyncio.to_thread(recorder.stop)
            await asyncio.to_thread(watchdog.stop)  # ends any git child still running
            backend.close()

    app = Starlette(
        routes=build_routes(backend),
        exception_handlers={
            ArtifactdError: handle_domain_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    # A trailing slash is a different (unknown) path, never a redirect: redirects would
    # let `repo.git/` and `repo.git` both resolve, and git clients do not follow them on POST.
    app.router.redirect_slashes = False
    app.state.backend = backend
    app.state.metrics_registry = metrics.registry_for(backend)
    app.add_middleware(AccessLogMiddleware)
    return app
