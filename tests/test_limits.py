"""Rate limits and metrics with --workers 2: limits hold across processes."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.harness import Server, start_server

LIMIT = 300
WINDOW = 60


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("limited"),
        extra_env={"ARTIFACTD_RATE_LIMIT_CONTROL": f"{LIMIT}/{WINDOW}s"},
        args=("--workers", "2"),
    )
    yield server
    server.stop()


def wait_for_window_start(window: int, needed: float) -> None:
    """Sleep past a window boundary if fewer than ``needed`` seconds are left in this one."""
    left = window - time.time() % window
    if left < needed:
        time.sleep(left + 0.2)


def test_burst_gets_exactly_the_limit_across_workers(limited_server: Server) -> None:
    server = limited_server
    url = server.ns_url("burst") + "/repos"
    headers = {"Authorization": f"Bearer {server.token}"}
    wait_for_window_start(WINDOW, needed=15)
    clients = [httpx.Client(headers=headers, timeout=30) for _ in range(50)]
    try:
        def one(i: int) -> httpx.Response:
            return clients[i % 50].get(url)

        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(one, range(1200)))
    finally:
        for client in clients:
            client.close()
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: LIMIT, 429: 1200 - LIMIT}, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= WINDOW
    body = refused.json()
    assert body["success"] is False and body["errors"][0]["code"] == 11060
    # Another namespace has its own budget.
    assert httpx.get(server.ns_url("other") + "/repos", headers=headers).status_code == 200

    metrics = httpx.get(f"{server.url}/metrics").text
    limited = [line for line in metrics.splitlines()
               if line.startswith('artifactd_rate_limited_total{kind="control"}')]
    assert limited and float(limited[0].split()[-1]) == 1200 - LIMIT
    query = """query($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 5, filter: {eventType: "rateLimited"}) {
        count dimensions { repositoryNamespace } } } } }"""
    deadline = time.monotonic() + 10
    while True:  # each worker flushes its event buffer every 0.5 s
        groups = httpx.post(f"{server.url}/client/v4/graphql", headers=headers,
                            json={"query": query, "variables": {"a": server.account_id}}).json()
        found = groups["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]
        if (found and found[0]["count"] == 1200 - LIMIT) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found == [{"count": 1200 - LIMIT, "dimensions": {"repositoryNamespace": "burst"}}]


def test_metrics_exposition(limited_server: Server) -> None:
    server = limited_server
    with server.client() as c:
        c.post(server.ns_url("metrics-ns") + "/repos", json={"name": "m1"})
        c.get(server.ns_url("metrics-ns") + "/repos/missing")
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("artifactd_http_requests_total", "artifactd_http_request_duration_seconds_bucket",
                 "artifactd_repos", "artifactd_git_processes", "artifactd_events_dropped_total"):
        assert name in text, name
    assert 'route_class="control",status="404"' in text
    repos_line = next(line for line in text.splitlines() if line.startswith("artifactd_repos "))
    assert float(repos_line.split()[-1]) >= 1
