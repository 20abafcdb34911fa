"""Analytics: events from real operations, queried with the spec's GraphQL examples verbatim."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git
from tests.harness import Server, start_server

QUERIES = Path(__file__).resolve().parent / "data" / "spec_analytics_queries.graphql"


def spec_queries() -> dict[str, str]:
    """The spec's three example queries, from the verbatim copy in tests/data (speccheck/
    compares that copy with the spec itself)."""
    blocks = re.findall(r"^query Artifacts\w+\(.*?^\}$", QUERIES.read_text(), re.S | re.M)
    queries = {re.match(r"query (\w+)", b).group(1): b for b in blocks}  # type: ignore[union-attr]
    assert set(queries) == {"ArtifactsOperationsByRepo", "ArtifactsErrorsByRepo",
                            "ArtifactsPushesByRepo"}
    return queries


@pytest.fixture(scope="module")
def analytics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("analytics"))
    yield server
    server.stop()


def graphql(server: Server, query: str, variables: dict, token: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/client/v4/graphql", json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token or server.token}"}, timeout=30,
    )


def groups(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]


def push_commit(git: Git, remote: str, token: str, work: Path, n: int) -> None:
    if not work.exists():
        git.new_work(work, {"a.txt": "0"})
    else:
        git.commit_files(work, {"a.txt": str(n)}, f"change {n}")
    git.run("-c", f"http.extraHeader=Authorization: Bearer {token}", "push", "-q", remote,
            "HEAD:main", cwd=work)


def test_spec_queries_count_real_operations(analytics_server: Server, tmp_path: Path) -> None:
    server = analytics_server
    git = Git(tmp_path / "home")
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    alpha = server.ns_url("alpha")
    with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}, timeout=60) as c:
        made = {n: c.post(f"{alpha}/repos", json={"name": n}).json()["result"] for n in ("r1", "r2", "r3")}
        c.post(server.ns_url("beta") + "/repos", json={"name": "b1"})
        assert c.post(f"{alpha}/repos", json={"name": "r1"}).status_code == 409  # clientError on r1
        assert c.post(f"{alpha}/tokens", json={"repo": "r2", "ttl": 5}).status_code == 400  # r2
        assert c.delete(f"{alpha}/repos/r3").status_code == 202
    for i in range(3):
        push_commit(git, made["r1"]["remote"], made["r1"]["token"], tmp_path / "w1", i)
    push_commit(git, made["r2"]["remote"], made["r2"]["token"], tmp_path / "w2", 0)
    header = f"http.extraHeader=Authorization: Bearer {made['r1']['token']}"
    git.run("-c", header, "clone", "-q", made["r1"]["remote"], str(tmp_path / "c1"))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))

    queries = spec_queries()
    common = {"accountTag": server.account_id, "datetimeStart": start, "datetimeEnd": end}
    by_repo = groups(graphql(server, queries["ArtifactsOperationsByRepo"],
                             {**common, "repositoryNamespace": "alpha"}))
    counts = {g["dimensions"]["repositoryName"]: g["count"] for g in by_repo}
    # r1: create + 3 pushes + 1 clone; r2: create + push; r3: create + delete.
    assert counts == {"r1": 5, "r2": 2, "r3": 2}
    assert [g["count"] for g in by_repo] == sorted(counts.values(), reverse=True)
    assert all(g["avg"]["durationMs"] > 0 for g in by_repo)

    errors = groups(graphql(server, queries["ArtifactsErrorsByRepo"], common))
    assert sorted((g["dimensions"]["repository"], g["dimensions"]["eventType"], g["count"])
                  for g in errors) == [("alpha/r1", "clientError", 1), ("alpha/r2", "clientError", 1)]

    pushes = groups(graphql(server, queries["ArtifactsPushesByRepo"], common))
    assert [(g["dimensions"]["repository"], g["count"]) for g in pushes] == [("alpha/r1", 3), ("alpha/r2", 1)]


def test_dimensions_quantiles_order_and_filters(analytics_server: Server) -> None:
    server = analytics_server
    with server.client() as c:
        for name in ("q1", "q2", "q3", "q4"):
            c.post(server.ns_url("gamma") + "/repos", json={"name": name})
    query = """query($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 2, filter: {repositoryNamespace: "gamma",
          AND: [{eventType: "create"}]}, orderBy: [repositoryName_DESC]) {
        count sum { durationMs } avg { durationMs }
        quantiles { durationMsP25 durationMsP50 durationMsP75 durationMsP90 durationMsP95
                    durationMsP99 durationMsP999 }
        dimensions { repository repositoryNamespace repositoryName eventKind eventType
                     errorMessage date datetime datetimeMinute datetimeFiveMinutes
                     datetimeFifteenMinutes datetimeHour datetimeSixHours }
      } } } }"""
    result = groups(graphql(server, query, {"a": server.account_id}))
    assert [g["dimensions"]["repositoryName"] for g in result] == ["q4", "q3"]
    g = result[0]
    assert g["count"] == 1 and g["sum"]["durationMs"] == g["avg"]["durationMs"]
    assert g["quantiles"]["durationMsP50"] == g["sum"]["durationMs"]
    dims = g["dimensions"]
    assert dims["repository"] == "gamma/q4" and dims["eventKind"] == "action"
    assert dims["errorMessage"] == "" and re.fullmatch(r"\d{4}-\d\d-\d\d", dims["date"])
    assert dims["datetimeHour"].endswith(":00:00.000000Z")
    assert dims["datetimeMinute"].endswith(":00.000000Z")
    assert dims["datetime"] >= dims["datetimeMinute"] >= dims["datetimeHour"] >= dims["datetimeSixHours"]
    future = groups(graphql(server, query.replace('repositoryNamespace: "gamma"',
                                                  'repositoryNamespace: "gamma", datetime_gt: "2999-01-01T00:00:00Z"'),
                            {"a": server.account_id}))
    assert future == []


def test_other_account_sees_nothing(analytics_server: Server) -> None:
    server = analytics_server
    other = server.new_api_token("edit", account="c" * 32)
    query = """query($a: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 10) { count } } } }"""
    stolen = graphql(server, query, {"a": server.account_id}, token=other["token"])
    body = stolen.json()
    assert body["data"] is None and "Not authorized" in body["errors"][0]["message"]
    own = groups(graphql(server, query, {"a": "c" * 32}, token=other["token"]))
    assert own == []
    unauthenticated = httpx.post(f"{server.url}/client/v4/graphql", json={"query": query})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["errors"]


@pytest.mark.parametrize(("query", "fragment"), [
    ("{ viewer { accounts(filter: {accountTag: \"x\"}) { artifactsEventsAdaptiveGroups(limit: 1) { count } ", "Syntax Error"),
    ("{ viewer { nope } }", "Cannot query field 'nope'"),
    ("{ viewer { accounts(filter: {accountTag: \"ACC\"}) { artifactsEventsAdaptiveGroups(limit: 0) { count } } } }", "limit"),
    ("{ viewer { accounts(filter: {accountTag: \"ACC\"}) { artifactsEventsAdaptiveGroups(limit: 1000000) { count } } } }", "limit"),
    ("{ viewer { accounts(filter: {accountTag: \"ACC\"}) { artifactsEventsAdaptiveGroups(limit: 5, filter: {datetime_geq: \"yesterday\"}) { count } } } }", "RFC 3339"),
    ("{ viewer { accounts(filter: {accountTag: \"ACC\"}) { artifactsEventsAdaptiveGroups(limit: 5, orderBy: [bogus_DESC]) { count } } } }", "bogus_DESC"),
    ("{" * 100 + "}" * 100, "Syntax Error"),
    ("query { viewer { " + "accounts(filter: {accountTag: \"ACC\"}) { " * 100 + "count " + "} " * 102,
     "nested deeper"),
])
def test_bad_graphql(analytics_server: Server, query: str, fragment: str) -> None:
    response = graphql(analytics_server, query.replace("ACC", analytics_server.account_id), {})
    body = response.json()
    assert body.get("errors"), body
    assert any(fragment in e["message"] for e in body["errors"]), body
    assert not (body.get("data") or {}).get("viewer", {}) or body["data"]["viewer"]["accounts"] is None


def test_deep_and_huge_queries_are_refused_cheaply(analytics_server: Server) -> None:
    nested = "query { viewer { " + "a { " * 20 + "}" * 21
    body = graphql(analytics_server, nested, {}).json()
    assert body["errors"]
    huge = "query { viewer { __typename } }" + " " * (1 << 20)
    response = graphql(analytics_server, huge, {})
    assert response.status_code in (400, 413) and response.json()["errors"]


def test_events_older_than_31_days_are_dropped(analytics_server: Server) -> None:
    """Retention: the recorder's purge removes events past 31 days (run by the server hourly)."""
    from artifactd.config import Settings
    from artifactd.services.backend import Backend
    from artifactd.services.events.analytics import RETENTION_DAYS, EventRecorder
    from artifactd.storage.events import EventStore

    db = analytics_server.data_dir / "artifactd.db"
    old_us = int((time.time() - (RETENTION_DAYS + 1) * 86400) * 1_000_000)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO events (account_id, namespace, repo_name, event_kind, event_type, "
            "error_message, datetime_us, duration_ms) VALUES (?, 'old', 'x', 'action', 'create', NULL, ?, 1.0)",
            (analytics_server.account_id, old_us),
        )
    backend = Backend.open(Settings(data_dir=str(analytics_server.data_dir)), run_migrations=False)
    try:
        removed = EventRecorder(EventStore(backend.meta.engine)).purge()
    finally:
        backend.close()
    assert removed >= 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE namespace = 'old'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] > 0
