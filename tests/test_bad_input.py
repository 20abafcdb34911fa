"""Bad input at the boundary (issue 18, defects 10 and 11): deep JSON, lone surrogates and
U+0000 are 400 envelopes that change nothing, and one caller's bad event never costs the
analytics events of other callers."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from artifactd.services.events.analytics import EventRecorder
from artifactd.storage.db import make_engine, migrate
from artifactd.storage.events import EventStore
from artifactd.storage.schema import events
from tests.harness import Server
from tests.test_control_plane import envelope_error

DEEP = b"[" * 100_000 + b"]" * 100_000  # past any recursion limit of the JSON parser
SURROGATE = b'"\\ud800"'
NUL = b'"a\\u0000b"'

# (method, path under the namespace, body with a placeholder for the bad value, field pointer)
BODY_ROUTES = [
    ("POST", "/repos", b'{"name": "r-%s", "description": @}', "/description"),
    ("POST", "/repos", b'{"name": "r-%s", "default_branch": @}', "/default_branch"),
    ("POST", "/repos", b'{"name": @}', "/name"),
    ("POST", "/repos/{parent}/fork", b'{"name": "f-%s", "description": @}', "/description"),
    ("POST", "/repos/{parent}/import", b'{"url": @}', "/url"),
    ("POST", "/tokens", b'{"repo": @, "scope": "read"}', "/repo"),
    ("POST", "/repos/{parent}/tokens/revoke", b'{"token": @}', "/token"),
]


def _graphql(server: Server, raw: bytes) -> httpx.Response:
    return httpx.post(f"{server.url}/client/v4/graphql", content=raw, timeout=30,
                      headers={"Authorization": f"Bearer {server.token}",
                               "Content-Type": "application/json"})


@pytest.fixture(scope="module")
def parent(server: Server) -> str:
    name = f"parent-{os.urandom(3).hex()}"
    with server.client() as c:
        assert c.post("/repos", json={"name": name}).status_code == 200
    return name


def _route_body(template: bytes, value: bytes) -> bytes:
    return template.replace(b"%s", os.urandom(3).hex().encode()).replace(b"@", value)


@pytest.mark.parametrize("route", BODY_ROUTES, ids=[f"{r[1]}{r[3]}" for r in BODY_ROUTES])
def test_deeply_nested_json_is_a_400_envelope(server: Server, parent: str, route: tuple) -> None:
    method, path, template, _pointer = route
    with server.client() as c:
        before = c.get("/repos", params={"limit": 200}).json()["result"]
        for body in (DEEP, _route_body(template, DEEP)):
            response = c.request(method, path.format(parent=parent), content=body,
                                 headers={"Content-Type": "application/json"})
            assert "nested deeper" in envelope_error(response, 400, 11003)["message"]
        assert c.get("/repos", params={"limit": 200}).json()["result"] == before


@pytest.mark.parametrize("value", [SURROGATE, NUL], ids=["surrogate", "nul"])
@pytest.mark.parametrize("route", BODY_ROUTES, ids=[f"{r[1]}{r[3]}" for r in BODY_ROUTES])
def test_unwritable_text_is_a_400_naming_the_field(
    server: Server, parent: str, route: tuple, value: bytes
) -> None:
    method, path, template, pointer = route
    with server.client() as c:
        before = c.get("/repos", params={"limit": 200}).json()["result"]
        response = c.request(method, path.format(parent=parent), content=_route_body(template, value),
                             headers={"Content-Type": "application/json"})
        error = envelope_error(response, 400, 10100)
        assert error["source"]["pointer"] == pointer
        assert c.get("/repos", params={"limit": 200}).json()["result"] == before


def test_unknown_fields_are_ignored_whatever_their_text(server: Server, unique_name: str) -> None:
    """Unknown fields are ignored (docs/api.md), content and all; the text rules hold for the
    fields a route reads, and NaN is refused by the JSON reader wherever it is."""
    with server.client() as c:
        body = b'{"name": "%s", "\\udc00": 1, "x": [1, "\\udfff", "a\\u0000"]}' % unique_name.encode()
        created = c.post("/repos", content=body)
        assert created.status_code == 200, created.text
        assert c.get(f"/repos/{unique_name}").json()["result"]["description"] is None
        error = envelope_error(c.post("/repos", content=b'{"name": "ok\\udfff"}'), 400, 10100)
        assert error["source"]["pointer"] == "/name"
        envelope_error(c.post("/repos", content=b'{"name": "ok", "x": NaN}'), 400, 11003)


def test_unwritable_text_in_query_and_path_parameters(server: Server, parent: str) -> None:
    with server.client() as c:
        error = envelope_error(c.get("/repos", params={"search": "a\x00b"}), 400, 10100)
        assert error["source"]["pointer"] == "/search"
        # Content paths have their own rule (tests/test_content.py): 11205, never a 500.
        envelope_error(c.get(f"/repos/{parent}/file", params={"path": "a\x00"}), 400, 11205)
        error = envelope_error(c.get("/repos/a%00b"), 400, 10100)
        assert error["source"]["pointer"] == "/name"


@pytest.mark.parametrize("raw", [
    DEEP,
    b'{"query": "{ viewer { accounts(filter: {accountTag: \\"\\ud800\\"}) { __typename } } }"}',
    b'{"query": "query($n: String) { viewer { __typename } }", "variables": {"n": "\\ud800"}}',
    b'{"query": "{ viewer { __typename } }", "variables": {"n": "a\\u0000"}}',
], ids=["deep", "surrogate-in-query", "surrogate-in-variables", "nul-in-variables"])
def test_graphql_refuses_bad_json_in_its_own_shape(server: Server, raw: bytes) -> None:
    response = _graphql(server, raw)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["data"] is None and body["errors"][0]["message"]


def _create_counts(server: Server, token: str, account: str, namespace: str) -> dict[str, int]:
    query = """query($a: String!, $ns: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 50, filter: {repositoryNamespace: $ns}) {
        count dimensions { eventType } } } } }"""
    response = httpx.post(f"{server.url}/client/v4/graphql", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"query": query, "variables": {"a": account, "ns": namespace}})
    assert response.status_code == 200, response.text
    groups = response.json()["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]
    return {g["dimensions"]["eventType"]: g["count"] for g in groups}


def test_a_bad_request_does_not_drop_other_accounts_events(server: Server) -> None:
    """50 events from two accounts, with requests carrying a lone surrogate or U+0000 in a
    name, or a name too long for its column, among them: every event is kept (it used to be
    4 of 40)."""
    other = server.new_api_token("edit", account=os.urandom(16).hex())
    namespace = f"iso-{os.urandom(3).hex()}"
    mine = httpx.Client(base_url=server.ns_url(namespace), timeout=30,
                        headers={"Authorization": f"Bearer {server.token}"})
    theirs = httpx.Client(base_url=f"{server.url}/client/v4/accounts/{other['account_id']}"
                                   f"/artifacts/namespaces/{namespace}", timeout=30,
                          headers={"Authorization": f"Bearer {other['token']}"})
    bad_statuses = set()
    with mine, theirs:
        for n in range(10):
            assert mine.post("/repos", json={"name": f"m{n}"}).status_code == 200
            assert theirs.post("/repos", json={"name": f"t{n}"}).status_code == 200
            bad = b'{"name": "\\ud800"}' if n % 2 else b'{"name": "x\\u0000"}'
            bad_statuses.add(mine.post("/repos", content=bad).status_code)
            bad_statuses.add(mine.get("/repos/b%00d").status_code)
            bad_statuses.add(mine.get("/repos/" + "n" * 100).status_code)  # past the column width
    # The other account's events first: they are what a bad request used to cost.
    assert _create_counts(server, other["token"], other["account_id"], namespace) == {"create": 10}
    counts = _create_counts(server, server.token, server.account_id, namespace)
    assert counts == {"create": 10, "clientError": 30}
    assert bad_statuses == {400, 404}  # 404: a long name is looked up, not validated


def test_a_row_the_database_refuses_costs_only_itself(tmp_path: Path) -> None:
    """The batch insert fails on one row: the others are written one by one, one is dropped."""
    engine = make_engine(f"sqlite:///{tmp_path / 'events.db'}")
    migrate(engine)
    dropped: list[int] = []
    recorder = EventRecorder(EventStore(engine), on_drop=dropped.append)
    good = {"namespace": "ns", "repo_name": "r", "event_kind": "action", "event_type": "create",
            "error_message": None, "datetime_us": 1, "duration_ms": 1.0}
    for n in range(10):
        recorder.buffer.append({**good, "account_id": f"{n:032x}"})
        if n == 4:
            recorder.buffer.append({**good, "account_id": None})  # NOT NULL: refused
    recorder.flush()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 10
    assert dropped == [1]
    engine.dispose()
