"""Token-shaped strings are redacted wherever the server writes text (issue 18, defect 13):
error envelopes, GraphQL errors, git's plain-text errors, the access log, the app logger and
the analytics dataset."""

from __future__ import annotations

import io
import logging
import os
import time

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactd.redact import REDACTED, RedactingFilter, redact
from tests.harness import Server
from tests.test_control_plane import envelope_error

HEX = st.text(alphabet="0123456789abcdefABCDEF", min_size=40, max_size=40)
AROUND = st.text(max_size=30)


@settings(max_examples=200, derandomize=True)
@given(AROUND, HEX, AROUND, st.sampled_from(["", "?expires=1796245063", "%3Fexpires%3D12", "%3fexpires%3d"]))
def test_repo_tokens_are_redacted_whatever_surrounds_them(
    before: str, secret: str, after: str, suffix: str
) -> None:
    out = redact(f"{before}art_v1_{secret}{suffix}{after}")
    assert secret not in out and REDACTED in out
    assert "expires" not in out.replace(before, "").replace(after, "")


@settings(max_examples=200, derandomize=True)
@given(AROUND, HEX, AROUND)
def test_api_tokens_are_redacted_whatever_surrounds_them(before: str, secret: str, after: str) -> None:
    out = redact(f"{before}artd_{secret}{after}")
    assert secret not in out and REDACTED in out


def test_commit_ids_and_short_look_alikes_are_kept() -> None:
    sha = "a" * 40
    for text in (f"/tree/{sha}", "art_v1_" + "a" * 39, "artd_" + "g" * 40):
        assert redact(text) == text
    assert redact("a\ud800\x00b") == "a\ufffd\ufffdb"


def test_logging_filter_redacts_message_arguments_and_tracebacks() -> None:
    secret = os.urandom(20).hex()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"artifactd.test-redaction-{secret[:6]}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            raise ValueError(f"bad token artd_{secret}")
        except ValueError:
            logger.error("refused %s for %r", f"art_v1_{secret}?expires=1", {"t": f"artd_{secret}"},
                         exc_info=True)
        logger.warning("stack", stack_info=True, extra={"note": secret})
        logger.warning("bad format %d", f"artd_{secret}")  # logged, not raised
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert f"art_v1_{secret}" not in text and f"artd_{secret}" not in text
    assert text.count(REDACTED) == 4 and "ValueError: bad token" in text


def _graphql(server: Server, query: str, variables: dict | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/client/v4/graphql", timeout=30,
                      headers={"Authorization": f"Bearer {server.token}"},
                      json={"query": query, "variables": variables or {}})


def test_tokens_in_names_never_come_back_or_reach_logs_or_analytics(sqlite_server: Server) -> None:
    server = sqlite_server
    secret = os.urandom(20).hex()
    repo_token = f"art_v1_{secret}"
    api_token = f"artd_{secret}"
    namespace = f"redact-{os.urandom(3).hex()}"
    answers: list[str] = []
    with server.client() as c:
        c.base_url = httpx.URL(server.ns_url(namespace))
        for name in (repo_token, f"{repo_token}%3Fexpires%3D1796245063", api_token):
            for path in (f"/repos/{name}", f"/repos/{name}/file", f"/repos/{name}/tokens"):
                response = c.get(path, params={"path": "a"})
                assert response.status_code in (400, 404), response.text
                answers.append(response.text)
        answers.append(c.delete(f"/tokens/{api_token}").text)
        created = c.post("/repos", json={"name": repo_token})  # a pasted credential, refused
        assert envelope_error(created, 400, 10101)["source"]["pointer"] == "/name"
        answers.append(created.text)
        answers.append(c.post("/tokens", json={"repo": api_token, "scope": "read"}).text)
    answers.append(_graphql(server, f"{{ {repo_token} }}").text)  # graphql-core quotes the field
    answers.append(_graphql(server, "query($t: Time) { viewer { accounts(filter: {accountTag: \"x\"}) "
                            "{ artifactsEventsAdaptiveGroups(limit: 1, filter: {datetime_geq: $t}) "
                            "{ count } } } }", {"t": api_token}).text)
    answers.append(httpx.get(f"{server.url}/git/{server.account_id}/{namespace}/{repo_token}.git"
                             "/info/refs", params={"service": "git-upload-pack"},
                             headers={"Authorization": f"Bearer {server.token}"}).text)
    assert answers and [t for t in answers if secret in t] == []
    assert any(REDACTED in text for text in answers)

    query = """query($a: String!, $ns: String!) { viewer { accounts(filter: {accountTag: $a}) {
      artifactsEventsAdaptiveGroups(limit: 100, filter: {repositoryNamespace: $ns}) {
        count dimensions { repositoryName errorMessage } } } } }"""
    response = _graphql(server, query, {"a": server.account_id, "ns": namespace})
    assert response.status_code == 200, response.text
    groups = response.json()["data"]["viewer"]["accounts"][0]["artifactsEventsAdaptiveGroups"]
    assert sum(g["count"] for g in groups) >= 9
    assert secret not in response.text and REDACTED in response.text

    marker = f"/repos/marker-{os.urandom(4).hex()}"
    with server.client() as c:
        c.get(marker)
    deadline = time.monotonic() + 10
    while marker not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert marker in log
    assert f"{namespace}/repos/{REDACTED}" in log
    assert secret not in log
