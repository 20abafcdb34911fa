"""``GET /metrics``: Prometheus exposition, merged across worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from artifactd.http.apidoc import Operation, describe
from artifactd.services.backend import Backend


class RepoCountCollector(Collector):
    """Repos stored, read from the database at scrape time (the same for every worker)."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("artifactd_repos", "Repos stored on this server.")
        gauge.add_metric([], self.backend.meta.count_all_repos())
        yield gauge


def registry_for(backend: Backend) -> CollectorRegistry:
    multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # the process's own metrics
            registry.register(collector)
    registry.register(RepoCountCollector(backend))
    return registry


async def metrics_endpoint(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", describe(metrics_endpoint, Operation(
    "Prometheus metrics", "Operations", security="none", enveloped=False,
    media={CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
    description="Text exposition format; see docs/operations.md.",
)), methods=["GET"])]
