"""Hypothesis-generated JSON against every JSON route of a real server (REST and GraphQL).

Random structures, deep nesting, lone surrogates, U+0000, token-shaped strings, huge
numbers, wrong types and unknown fields, sent as bodies (and as query parameters of the
listing routes): the server never answers 5xx, REST answers are always v4 envelopes and
GraphQL answers are always GraphQL's ``{data, errors}``. Bounded and derandomized: a fixed
number of examples per route, the same ones on every run (``FUZZ_EXAMPLES=500`` for a
longer run by hand).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import Server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

AWKWARD_TEXT = ["\ud800", "a\udfffb", "\udbff", "\x00", "a\x00b", "art_v1_" + "a" * 40,
                "artd_" + "b" * 40, "../../etc/passwd", "-c", "--upload-pack=x", "refs/heads/x",
                "main", "ok-name", "é" * 70, "x" * 300, "", " ", "\u202e", "\ufeff"]
texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(AWKWARD_TEXT),
    st.tuples(st.text(max_size=6), st.sampled_from(AWKWARD_TEXT), st.text(max_size=6)).map("".join),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 59, 60, 86_400, 31_536_000, 2**31, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(texts, kids, max_size=4)),
                      max_leaves=12)

# Bodies json.dumps cannot produce: syntax the parser must refuse, nesting past its limits,
# numbers past Python's int-parsing cap, non-standard constants.
RAW_BODIES = [
    b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"name": NaN}', b'{"ttl": Infinity}',
    b'{"ttl": 1' + b"0" * 5000 + b"}", b'{"ttl": 1e999}', b'{"name": "\\ud800"}',
    b'{"name": "x", "name": "y"}', b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 5000 + b"1" + b"}" * 5000,
]
raw_bodies = st.one_of(st.sampled_from(RAW_BODIES), st.binary(max_size=40),
                       st.integers(min_value=20, max_value=3000).map(lambda n: b"[" * n + b"]" * n))


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A route's own fields (good, awkward or of the wrong type), unknown fields, or junk."""
    structured = st.tuples(
        st.fixed_dictionaries({}, optional={name: st.one_of(good, values) for name, good in fields.items()}),
        st.dictionaries(texts, values, max_size=2),
    ).map(lambda parts: {**parts[1], **parts[0]})
    encoded = st.one_of(structured, values).map(lambda v: json.dumps(v).encode())
    return st.one_of(encoded, encoded, encoded, raw_bodies)


# Never a host name: a generated host would be looked up in DNS. Each of these is refused by
# the URL or address rules before any connection (or lookup) is made.
REFUSED_PREFIXES = ["https://127.0.0.1/", "https://[::1]:8443/", "https://169.254.169.254/",
                    "http://10.1.2.3/", "https://[::ffff:127.0.0.1]/", "ssh://", "file:///", "ext::",
                    "https://user:pw@127.0.0.1/", "https://127.0.0.1:99999/"]
import_urls = st.one_of(texts, st.tuples(st.sampled_from(REFUSED_PREFIXES), texts).map("".join))
names = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
REST_ROUTES: dict[str, tuple[str, dict[str, st.SearchStrategy[Any]]]] = {
    "create": ("/repos", {"name": names, "description": texts, "default_branch": texts,
                          "read_only": st.booleans()}),
    "fork": ("/repos/{parent}/fork", {"name": names, "description": texts, "read_only": st.booleans(),
                                      "default_branch_only": st.booleans()}),
    "import": ("/repos/{parent}/import", {"url": import_urls,
                                          "branch": texts, "depth": numbers,
                                          "read_only": st.booleans(), "description": texts}),
    "token": ("/tokens", {"repo": st.one_of(names, st.just("{parent}")), "scope": st.sampled_from(
        ["read", "write", "admin", ""]), "ttl": numbers}),
    "revoke": ("/repos/{parent}/tokens/revoke", {"token": texts}),
    "commit": ("/repos/{parent}/commits", {
        "branch": st.one_of(st.just("main"), texts), "message": texts, "expected_head": texts,
        "base": texts, "author": values, "changes": st.one_of(values, st.lists(
            st.fixed_dictionaries({}, optional={
                "op": st.sampled_from(["put", "delete", "move", "x"]), "path": texts,
                "content": texts, "encoding": st.sampled_from(["utf-8", "base64", "x"]),
                "mode": texts, "from": texts}), max_size=4))}),
    "merge": ("/repos/{parent}/merge", {"head": texts, "target": texts, "strategy": texts,
                                        "message": texts, "dry_run": st.booleans(),
                                        "expected_head": texts}),
}

GRAPHQL_QUERIES = [
    "query($a: String!, $f: ArtifactsEventsFilter, $l: Int!) { viewer { accounts(filter: {accountTag: $a}) "
    "{ artifactsEventsAdaptiveGroups(limit: $l, filter: $f) { count dimensions { repositoryName "
    "errorMessage datetimeHour } quantiles { durationMsP50 } } } } }",
    "{ viewer { __typename } }",
    "query { viewer { accounts(filter: {accountTag: \"x\"}) { __typename } } }",
    "{ " * 40 + "}" * 40,
]
filters = st.dictionaries(st.sampled_from(["repositoryName", "eventType", "datetime_geq", "date",
                                           "AND", "datetimeHour_lt", "unknown"]), values, max_size=3)


def graphql_bodies(account_id: str) -> st.SearchStrategy[bytes]:
    variables = st.fixed_dictionaries({}, optional={
        "a": st.one_of(st.just(account_id), texts), "f": st.one_of(filters, values),
        "l": st.one_of(st.integers(min_value=1, max_value=10_000), numbers, values),
    })
    structured = st.fixed_dictionaries({}, optional={
        "query": st.one_of(st.sampled_from(GRAPHQL_QUERIES), texts, values),
        "variables": st.one_of(variables, values),
        "operationName": st.one_of(st.none(), texts, values),
    }).map(lambda v: json.dumps(v).encode())
    return st.one_of(structured, structured, structured, raw_bodies)


def assert_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    body = response.json()
    assert set(body) >= {"result", "success", "errors", "messages"}, body
    if response.status_code >= 400:
        assert body["success"] is False and body["result"] is None and body["errors"], body
        for error in body["errors"]:
            assert isinstance(error["code"], int) and isinstance(error["message"], str), body
    else:
        assert body["success"] is True and body["errors"] == [], body


@pytest.fixture(scope="module")
def fuzz_target(server: Server) -> tuple[Server, str, str]:
    """The server, a namespace of this module's own and a repo in it to fork and mint for."""
    namespace = f"fuzz-{os.urandom(3).hex()}"
    parent = "parent"
    with httpx.Client(base_url=server.ns_url(namespace), timeout=60,
                      headers={"Authorization": f"Bearer {server.token}"}) as c:
        assert c.post("/repos", json={"name": parent}).status_code == 200
    return server, namespace, parent


@pytest.mark.parametrize("route", sorted(REST_ROUTES))
def test_rest_json_routes_never_fail_with_5xx(fuzz_target: tuple[Server, str, str], route: str) -> None:
    server, namespace, parent = fuzz_target
    path, fields = REST_ROUTES[route]
    with httpx.Client(base_url=server.ns_url(namespace), timeout=60,
                      headers={"Authorization": f"Bearer {server.token}",
                               "Content-Type": "application/json"}) as c:

        @FUZZ
        @given(bodies(fields))
        def check(body: bytes) -> None:
            body = body.replace(b"{parent}", parent.encode())
            assert_envelope(c.post(path.format(parent=parent), content=body))

        check()
        # Whatever was sent, the parent is still there and readable.
        assert_envelope(c.get(f"/repos/{parent}"))


def test_graphql_never_fails_with_5xx(fuzz_target: tuple[Server, str, str]) -> None:
    server, _namespace, _parent = fuzz_target
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {server.token}",
                               "Content-Type": "application/json"}) as c:

        @FUZZ
        @given(graphql_bodies(server.account_id))
        def check(body: bytes) -> None:
            response = c.post("/client/v4/graphql", content=body)
            assert response.status_code < 500, response.text[:500]
            answer = response.json()
            assert set(answer) <= {"data", "errors"} and "data" in answer, answer
            if response.status_code >= 400:
                assert answer["data"] is None and answer["errors"], answer
            for error in answer.get("errors", []):
                assert isinstance(error["message"], str), answer

        check()


LISTINGS = ["/repos", "/repos/{parent}/tokens", "", "/repos/{parent}/log"]
query_values = st.one_of(texts, numbers.map(str))
query_params = st.dictionaries(st.sampled_from(["limit", "cursor", "search", "sort", "direction",
                                                "order", "state", "per_page", "page", "x"]),
                               query_values, max_size=4)


def test_listing_query_parameters_never_fail_with_5xx(fuzz_target: tuple[Server, str, str]) -> None:
    server, namespace, parent = fuzz_target
    with httpx.Client(base_url=server.ns_url(namespace), timeout=60,
                      headers={"Authorization": f"Bearer {server.token}"}) as c:

        @FUZZ
        @given(st.sampled_from(LISTINGS), query_params)
        def check(path: str, params: dict[str, str]) -> None:
            # httpx cannot encode a lone surrogate into a URL; the ASGI server would have
            # replaced it with U+FFFD anyway, so send what the server would see.
            clean = {k: v.encode("utf-8", "replace").decode() for k, v in params.items()}
            assert_envelope(c.get(path.format(parent=parent), params=clean))

        check()
