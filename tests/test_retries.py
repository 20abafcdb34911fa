"""SDK and CLI retries: a real server made to answer 429, and a port with nothing listening.

The server here allows RATE control-plane requests per namespace per second, so a burst
crosses the limit at once and the server's ``Retry-After`` (1 s) is short enough to wait.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactd import Artifacts, AsyncArtifacts, ConnectError, RateLimited, Retrying, RetryPolicy
from tests.clientutil import client_env, run_cli
from tests.harness import Server, free_port, start_server

RATE = 3  # control-plane requests per namespace per second
BURST = 2 * RATE + 1  # more than the limit lets through in the two windows a fast burst can span


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("data-retries"),
                          extra_env={"ARTIFACTD_RATE_LIMIT_CONTROL": f"{RATE}/1s"})
    yield server
    server.stop()


def client(server: Server, namespace: str, retries: RetryPolicy | None) -> Artifacts:
    return Artifacts(server.url, server.account_id, server.token, namespace=namespace, retries=retries)


def test_without_retries_a_burst_is_refused(limited_server: Server, unique_name: str) -> None:
    """The premise of the tests below: this server does answer 429 to a burst."""
    with client(limited_server, unique_name, None) as artifacts, pytest.raises(RateLimited) as limited:
        for _ in range(BURST):
            artifacts.list(limit=1)
    assert limited.value.retry_after == 1


def test_sync_client_waits_out_429_with_retry_after(limited_server: Server, unique_name: str) -> None:
    seen: list[Retrying] = []
    policy = RetryPolicy(attempts=4, max_elapsed=20, on_retry=seen.append)
    with client(limited_server, unique_name, policy) as artifacts:
        # A POST refused with 429 is sent again too: the server refused it before doing anything.
        artifacts.create("first")
        for _ in range(BURST):
            artifacts.list(limit=1)
        assert [r.name for r in artifacts.list().repos] == ["first"]  # created once
    assert seen, "the burst crossed the limit, so some request was retried"
    assert {(r.reason, r.delay) for r in seen} == {("HTTP 429", 1.0)}  # the server's Retry-After
    assert all(r.attempt < 4 for r in seen)


def test_retry_after_beyond_the_time_budget_raises_at_once(limited_server: Server, unique_name: str) -> None:
    seen: list[Retrying] = []
    policy = RetryPolicy(attempts=10, max_elapsed=0.5, on_retry=seen.append)
    with client(limited_server, unique_name, policy) as artifacts, pytest.raises(RateLimited):
        for _ in range(BURST):
            artifacts.list(limit=1)
    assert seen == []  # waiting 1 s would end past the 0.5 s budget


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_waits_out_429(limited_server: Server, unique_name: str, anyio_backend: str) -> None:
    seen: list[Retrying] = []
    policy = RetryPolicy(attempts=4, max_elapsed=20, on_retry=seen.append)
    async with AsyncArtifacts(limited_server.url, limited_server.account_id, limited_server.token,
                              namespace=unique_name, retries=policy) as artifacts:
        for _ in range(BURST):
            await artifacts.list(limit=1)
    assert seen and {r.reason for r in seen} == {"HTTP 429"}


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_connection_refused_is_retried_a_bounded_number_of_times() -> None:
    seen: list[Retrying] = []
    policy = RetryPolicy(attempts=3, backoff=0.01, on_retry=seen.append)
    with Artifacts(dead_url(), "a" * 32, "artd_" + "1" * 40, retries=policy) as artifacts:
        with pytest.raises(ConnectError, match="connection refused"):
            artifacts.list()
        assert [(r.method, r.attempt, r.reason) for r in seen] == [
            ("GET", 1, "connection refused"), ("GET", 2, "connection refused"),
        ]
        seen.clear()
        with pytest.raises(ConnectError):  # nothing was sent, so a POST is retried as well
            artifacts.create("never")
        assert [r.method for r in seen] == ["POST", "POST"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_connection_refused_is_retried(anyio_backend: str) -> None:
    seen: list[Retrying] = []
    policy = RetryPolicy(attempts=2, backoff=0.01, on_retry=seen.append)
    async with AsyncArtifacts(dead_url(), "a" * 32, "artd_" + "1" * 40, retries=policy) as artifacts:
        with pytest.raises(ConnectError):
            await artifacts.delete("x")
    assert [(r.method, r.reason) for r in seen] == [("DELETE", "connection refused")]


def response(status: int, method: str = "GET", **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request(method, "http://x/"))


def test_policy_decisions() -> None:
    """Which outcomes are retried, and for how long: the policy alone, with fixed jitter."""
    policy = RetryPolicy(attempts=3, backoff=0.5, max_backoff=0.75, max_elapsed=10)

    def delay(method: str, attempt: int = 1, elapsed: float = 0.0, **outcome: object) -> float | None:
        return policy.delay(method, attempt, elapsed, jitter=lambda: 0.0, **outcome)  # type: ignore[arg-type]

    assert delay("GET", response=response(503)) == 0.5
    assert delay("GET", attempt=2, response=response(503)) == 0.75  # capped
    assert delay("GET", attempt=3, response=response(503)) is None  # attempts used up
    assert delay("POST", response=response(503)) is None  # may have been done: not twice
    assert delay("POST", response=response(429, **{"Retry-After": "2"})) == 2.0
    assert delay("PUT", response=response(429, **{"Retry-After": "11"})) is None  # past the budget
    assert delay("GET", elapsed=9.8, response=response(503)) is None
    for status in (200, 404, 409, 500, 502):
        assert delay("GET", response=response(status)) is None
    lost = httpx.RemoteProtocolError("Server disconnected without sending a response")
    assert delay("DELETE", error=lost) == 0.5
    assert delay("POST", error=lost) is None
    assert delay("GET", error=httpx.ReadTimeout("slow")) is None  # a timeout is not retried
    assert delay("POST", error=httpx.ConnectError("refused")) == 0.5
    with pytest.raises(Exception, match="attempts"):
        RetryPolicy(attempts=0)


def test_retry_after_http_date() -> None:
    from artifactd.client._core import retry_after_seconds

    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=lambda: 1445412480.0) == 10.0
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_cli_retries_and_says_so(limited_server: Server, tmp_path: Path, unique_name: str) -> None:
    with client(limited_server, unique_name, RetryPolicy(attempts=6, max_elapsed=30)) as artifacts:
        for index in range(BURST):
            artifacts.create(f"repo-{index:02d}")
    env = client_env(limited_server, tmp_path / "home", ARTIFACTD_NAMESPACE=unique_name)
    listed = run_cli(env, "repo", "list", "--all", "--limit", "1", "--sort", "name", "--direction", "asc")
    assert listed.returncode == 0, listed.stderr
    names = [line.split("\t")[0] for line in listed.stdout.splitlines()]
    assert names == [f"repo-{index:02d}" for index in range(BURST)]
    assert "HTTP 429; retrying in 1.0 s (attempt 2 of 4)" in listed.stderr


def test_cli_connection_refused_retries_then_exits_7(tmp_path: Path) -> None:
    nobody = Server(data_dir=tmp_path, port=free_port(), env={}, account_id="a" * 32,
                    token="artd_" + "1" * 40)  # never started: nothing listens on its port
    env = client_env(nobody, tmp_path / "home", ARTIFACTD_RETRIES="1")
    result = run_cli(env, "repo", "list")
    assert result.returncode == 7, result.stderr
    assert result.stderr.count("connection refused; retrying in") == 1
    assert "(attempt 2 of 2)" in result.stderr and "Cannot connect to" in result.stderr
    bad = run_cli({**env, "ARTIFACTD_RETRIES": "many"}, "repo", "list")
    assert bad.returncode == 3 and "ARTIFACTD_RETRIES must be a whole number" in bad.stderr
