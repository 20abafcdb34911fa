"""Events (issue 14): every event type from a real operation, against the published examples;
subscriptions, the pull queue, signed webhooks and their failures, and the bad-input list."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gitsource import GitSource
from tests.gitutil import Git, create_repo
from tests.harness import Server, start_server
from tests.seed import clone, push

# The published examples (cloudflare-docs, src/content/partials/queues/event-subscriptions/
# artifacts-events.mdx), embedded as data: tests read nothing outside the repository.
_ACCOUNT_META = {"accountId": "f9f79265f388666de8122cfb508d7776",
                 "eventSubscriptionId": "1830c4bb612e43c3af7f4cada31fbf3f",
                 "eventSchemaVersion": 1, "eventTimestamp": "2026-05-18T15:53:48.187Z"}
_REPO_PAYLOAD = {"repoId": "0tvugavnogssnwzk", "defaultBranch": "main",
                 "description": "My Artifacts repository", "readOnly": False,
                 "createdAt": "2026-05-18T15:53:46.833Z", "updatedAt": "2026-05-18T15:53:46.833Z",
                 "lastPushAt": None}
_SRC = {"type": "artifacts", "namespace": "my-namespace", "repoName": "my-repo"}
_RSRC = {"type": "artifacts.repo", "namespace": "my-namespace", "repoName": "my-repo"}
PUBLISHED: dict[str, dict[str, Any]] = {
    "cf.artifacts.repo.created": {"type": "cf.artifacts.repo.created", "source": _SRC,
                                  "payload": _REPO_PAYLOAD, "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.deleted": {"type": "cf.artifacts.repo.deleted", "source": _SRC,
                                  "payload": _REPO_PAYLOAD, "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.forked": {
        "type": "cf.artifacts.repo.forked",
        "source": {"type": "artifacts", "namespace": "source-namespace", "repoName": "source-repo"},
        "payload": {"namespace": "target-namespace", "repoName": "target-repo",
                    "repoId": "5ankv1vhl4xnw7wq", "defaultBranch": "main",
                    "description": "Fork of source-repo", "readOnly": False,
                    "createdAt": "2026-05-18T15:53:52.384Z",
                    "updatedAt": "2026-05-18T15:53:54.579Z", "lastPushAt": None},
        "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.imported": {
        "type": "cf.artifacts.repo.imported", "source": _SRC,
        "payload": {"repoId": "d7nd72k964cv9kub", "defaultBranch": "main", "description": None,
                    "readOnly": False, "createdAt": "2026-05-18T15:53:54.864Z",
                    "updatedAt": "2026-05-18T15:53:57.737Z", "lastPushAt": None,
                    "sourceUrl": "https://github.com/example/repo.git", "branch": "main"},
        "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.pushed": {
        "type": "cf.artifacts.repo.pushed", "source": _RSRC,
        "payload": {
            "ref": "refs/heads/main", "before": "abc123def456abc123def456abc123def456abc1",
            "after": "def789ghi012def789ghi012def789ghi012def7",
            "commits": [{
                "id": "def789ghi012def789ghi012def789ghi012def7",
                "message": "Fix bug in authentication", "messageTruncated": False,
                "timestamp": "2025-05-01T02:48:57.000Z",
                "author": {"name": "Developer Name", "email": "developer@example.com"},
                "committer": {"name": "Developer Name", "email": "developer@example.com"},
                "parents": ["abc123def456abc123def456abc123def456abc1"]}],
            "totalCommitsCount": 1, "commitsTruncated": False},
        "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.cloned": {"type": "cf.artifacts.repo.cloned", "source": _RSRC,
                                 "payload": {}, "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.fetched": {"type": "cf.artifacts.repo.fetched", "source": _RSRC,
                                  "payload": {}, "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.token.created": {
        "type": "cf.artifacts.repo.token.created",
        "source": {"type": "artifacts.repo", "namespace": "default", "repoName": "token-evt-repo"},
        "payload": {"tokenId": "7ngdf3ww3u84t33x", "scope": "read",
                    "expiresAt": "2026-05-20T16:58:14.548Z"},
        "metadata": _ACCOUNT_META},
    "cf.artifacts.repo.token.revoked": {
        "type": "cf.artifacts.repo.token.revoked",
        "source": {"type": "artifacts.repo", "namespace": "default", "repoName": "token-evt-repo"},
        "payload": {"tokenId": "7ngdf3ww3u84t33x"}, "metadata": _ACCOUNT_META},
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ZERO = "0" * 40


def same_shape(ours: Any, published: Any, path: str = "") -> None:
    """Field by field: the same keys, the same JSON types (timestamps in the same form)."""
    if isinstance(published, dict):
        assert isinstance(ours, dict), path
        assert set(ours) == set(published), (path, sorted(ours), sorted(published))
        for key in published:
            same_shape(ours[key], published[key], f"{path}/{key}")
    elif isinstance(published, list):
        assert isinstance(ours, list), path
        for item in ours:
            same_shape(item, published[0], f"{path}[]")
    elif published is None:
        assert ours is None or isinstance(ours, str), path
    elif isinstance(published, str) and ISO_MS.match(published):
        assert isinstance(ours, str) and ISO_MS.match(ours), (path, ours)
    else:
        assert type(ours) is type(published), (path, ours, published)


# -- fixtures ---------------------------------------------------------------------------


class Receiver:
    """A webhook receiver on 127.0.0.1 whose answer a test chooses per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answer: Callable[[BaseHTTPRequestHandler], None] = lambda h: _reply(h, 204)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                              body))
                receiver.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"",
           headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("content-length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture(scope="module")
def events_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("events"), extra_env={
        "ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
        "ARTIFACTD_IMPORT_ALLOW_HOSTS": "127.0.0.1",
        "ARTIFACTD_WEBHOOK_RETRY_BASE": "0.2",
        "ARTIFACTD_WEBHOOK_TIMEOUT": "1",
        "ARTIFACTD_WEBHOOK_GIVE_UP_AFTER": "3",
    })
    yield server
    server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def subs(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.account_url, timeout=60,
                        headers={"Authorization": f"Bearer {server.token}"})


def subscribe(server: Server, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "test")
    with subs(server) as c:
        r = c.post("/subscriptions", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json()["result"])


def drain(server: Server, sub_id: str, want: int, wait: float = 20) -> list[dict[str, Any]]:
    """Read the queue until ``want`` events arrived (long polls, bounded)."""
    got: list[dict[str, Any]] = []
    cursor = ""
    deadline = time.monotonic() + wait
    with subs(server) as c:
        while len(got) < want and time.monotonic() < deadline:
            r = c.get(f"/subscriptions/{sub_id}/events", params={"cursor": cursor, "wait": 2, "limit": 100})
            assert r.status_code == 200, r.text
            got += r.json()["result"]
            cursor = r.json()["result_info"]["cursor"]
        if cursor:  # the next drain goes on from here
            assert c.post(f"/subscriptions/{sub_id}/ack", json={"cursor": cursor}).status_code == 200
    return got


def wait_for(condition: Callable[[], Any], seconds: float = 20) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


# -- every event type from a real operation ---------------------------------------------


def test_every_event_type_matches_the_published_examples(
    events_server: Server, tmp_path: Path, unique_name: str,
) -> None:
    server = events_server
    git = Git(tmp_path / "home")
    account = subscribe(server, source={"type": "artifacts"}, destination={"type": "queue"})
    name = unique_name
    repo_level = subscribe(server, source={"type": "artifacts.repo", "namespace": "default",
                                           "repo_name": name}, destination={"type": "queue"})
    assert "secret" not in account and account["state"] == "active"
    # Account level: created, forked, imported, deleted.
    repo = create_repo(server, name, description="My Artifacts repository")
    work = tmp_path / "work"
    first = git.new_work(work, {"a.txt": "1\n"}, "First commit")
    push(git, repo, work, "HEAD:refs/heads/main")
    second = git.commit_files(work, {"a.txt": "2\n"}, "Fix bug in authentication")
    push(git, repo, work, "HEAD:refs/heads/main")
    push(git, repo, work, "HEAD:refs/heads/topic")
    push(git, repo, work, ":refs/heads/topic")
    dest = clone(git, repo, tmp_path / "clone")
    git.commit_files(work, {"a.txt": "3\n"}, "Third")
    push(git, repo, work, "HEAD:refs/heads/main")
    git.run("-c", f"http.extraHeader=Authorization: Bearer {repo.token}", "fetch", "-q",
            "origin", cwd=dest)
    with server.client() as c:
        minted = c.post("/tokens", json={"repo": name, "scope": "read", "ttl": 3600})
        assert minted.status_code == 200, minted.text
        token_id = minted.json()["result"]["id"]
        assert c.delete(f"/tokens/{token_id}").status_code == 200
        forked = c.post(f"/repos/{name}/fork", json={"name": f"{name}-fork"})
        assert forked.status_code == 200, forked.text
    upstream = tmp_path / "upstream"
    source = GitSource(upstream)
    git.run("clone", "-q", "--bare", str(work), str(upstream / "up.git"))
    source.start()
    try:
        with server.client() as c:
            r = c.post(f"/repos/{name}-imp/import", json={"url": f"{source.url}/up.git"})
            assert r.status_code == 200, r.text
        account_events = drain(server, account["id"], 4)  # created, forked, imported, ...
    finally:
        source.stop()
    with server.client() as c:
        assert c.delete(f"/repos/{name}-fork").status_code == 202
    account_events += drain(server, account["id"], 1)  # ... deleted
    repo_events = drain(server, repo_level["id"], 8)

    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in account_events + repo_events:
        by_type.setdefault(event["type"], []).append(event)
    assert set(by_type) == set(PUBLISHED), sorted(by_type)
    for event_type, events in by_type.items():
        for event in events:
            body = {k: v for k, v in event.items() if k != "id"}
            same_shape(body, PUBLISHED[event_type])
            assert re.fullmatch(r"evt_[0-9a-f]{32}", event["id"])
            assert event["metadata"]["accountId"] == server.account_id
            assert event["metadata"]["eventSchemaVersion"] == 1
            assert event["source"]["type"] == PUBLISHED[event_type]["source"]["type"]
    ids = [e["id"] for e in account_events + repo_events]
    assert len(ids) == len(set(ids))
    for event in account_events:
        assert event["metadata"]["eventSubscriptionId"] == account["id"]
    for event in repo_events:
        assert event["metadata"]["eventSubscriptionId"] == repo_level["id"]
        assert event["source"] == {"type": "artifacts.repo", "namespace": "default",
                                   "repoName": name}

    created = by_type["cf.artifacts.repo.created"][0]
    assert created["source"]["repoName"] == name
    assert created["payload"]["repoId"] == repo.id
    assert created["payload"]["description"] == "My Artifacts repository"
    assert created["payload"]["lastPushAt"] is None
    fork = by_type["cf.artifacts.repo.forked"][0]
    assert fork["source"]["repoName"] == name and fork["payload"]["repoName"] == f"{name}-fork"
    imported = by_type["cf.artifacts.repo.imported"][0]
    assert imported["payload"]["sourceUrl"] == f"{source.url}/up.git"
    assert imported["payload"]["branch"] == "main"
    assert by_type["cf.artifacts.repo.deleted"][0]["source"]["repoName"] == f"{name}-fork"

    pushes = by_type["cf.artifacts.repo.pushed"]
    assert [(p["payload"]["ref"], p["payload"]["before"], p["payload"]["after"])
            for p in pushes][:4] == [
        ("refs/heads/main", ZERO, first), ("refs/heads/main", first, second),
        ("refs/heads/topic", ZERO, second), ("refs/heads/topic", second, ZERO)]
    commit = pushes[1]["payload"]["commits"][0]
    assert commit["id"] == second and commit["message"] == "Fix bug in authentication"
    assert commit["parents"] == [first] and commit["messageTruncated"] is False
    assert commit["author"] == {"name": "Test", "email": "test@example.com"} or \
        commit["author"]["email"]
    assert pushes[1]["payload"]["totalCommitsCount"] == 1
    assert [c["id"] for c in pushes[0]["payload"]["commits"]] == [first]  # a new repo's branch
    assert pushes[2]["payload"]["commits"] == []  # nothing new on the new branch
    assert pushes[3]["payload"]["commits"] == [] and pushes[3]["payload"]["after"] == ZERO
    assert len(by_type["cf.artifacts.repo.cloned"]) == 1
    assert len(by_type["cf.artifacts.repo.fetched"]) == 1
    assert by_type["cf.artifacts.repo.token.created"][0]["payload"]["tokenId"] == token_id
    assert by_type["cf.artifacts.repo.token.created"][0]["payload"]["scope"] == "read"
    assert by_type["cf.artifacts.repo.token.revoked"][0]["payload"] == {"tokenId": token_id}


def test_push_lists_commits_newest_last_and_caps_them(
    events_server: Server, tmp_path: Path, unique_name: str,
) -> None:
    server = events_server
    git = Git(tmp_path / "home")
    repo = create_repo(server, unique_name)
    sub = subscribe(server, source={"type": "artifacts.repo", "namespace": "default",
                                    "repo_name": unique_name},
                    event_types=["cf.artifacts.repo.pushed"], destination={"type": "queue"})
    work = tmp_path / "work"
    shas = [git.new_work(work, {"f": "0\n"}, "c0")]
    for i in range(1, 25):
        shas.append(git.commit_files(work, {"f": f"{i}\n"}, f"c{i}"))
    push(git, repo, work, "HEAD:refs/heads/main")
    (event,) = drain(server, sub["id"], 1)
    payload = event["payload"]
    assert payload["totalCommitsCount"] == 25 and payload["commitsTruncated"] is True
    assert [c["id"] for c in payload["commits"]] == shas[-20:]  # newest last


# -- the pull queue ---------------------------------------------------------------------


def test_queue_ack_and_cursor(events_server: Server, unique_name: str) -> None:
    server = events_server
    sub = subscribe(server, source={"type": "artifacts", "namespace": "default"},
                    event_types=["cf.artifacts.repo.created"], destination={"type": "queue"})
    for i in range(3):
        create_repo(server, f"{unique_name}-{i}")
    with subs(server) as c:
        url = f"/subscriptions/{sub['id']}"
        events = wait_for(lambda: (lambda got: got if len(got) == 3 else None)(
            c.get(f"{url}/events", params={"wait": 1}).json()["result"]))
        assert [e["source"]["repoName"] for e in events] == [f"{unique_name}-{i}" for i in range(3)]
        first = c.get(f"{url}/events", params={"limit": 1}).json()
        assert [e["id"] for e in first["result"]] == [events[0]["id"]]
        # Unacknowledged events are read again; after the ack, only the rest.
        assert c.get(f"{url}/events").json()["result"] == events
        r = c.post(f"{url}/ack", json={"cursor": first["result_info"]["cursor"]})
        assert r.status_code == 200, r.text
        page = c.get(f"{url}/events").json()
        assert [e["id"] for e in page["result"]] == [e["id"] for e in events[1:]]
        # Garbage cursors are a clear 400 and change nothing.
        for bad in ("garbage", "q-1", "q" + "9" * 30, "'; drop table"):
            r = c.get(f"{url}/events", params={"cursor": bad})
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0]["code"] == 12302
            assert r.json()["errors"][0]["source"]["pointer"] == "/cursor"
        r = c.post(f"{url}/ack", json={"cursor": "q999999999999"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == 12302
        for params in ({"wait": "nan"}, {"wait": "100"}, {"limit": "0"}, {"limit": "x"}):
            assert c.get(f"{url}/events", params=params).status_code == 400, params
        # An empty queue answers after the bounded wait, with the cursor it was given.
        end = page["result_info"]["cursor"]
        r = c.get(f"{url}/events", params={"cursor": end, "wait": 0.2})
        assert r.status_code == 200 and r.json()["result"] == []
        assert r.json()["result_info"]["cursor"] == end


def test_stream_serves_server_sent_events(events_server: Server, unique_name: str) -> None:
    server = events_server
    sub = subscribe(server, source={"type": "artifacts"}, destination={"type": "queue"},
                    event_types=["cf.artifacts.repo.created"])
    url = f"{server.account_url}/subscriptions/{sub['id']}/stream"
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        create_repo(server, unique_name)
        data = None
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                break
    assert data is not None and data["source"]["repoName"] == unique_name
    r = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert r.status_code in (401, 403)


# -- webhooks ---------------------------------------------------------------------------


def check_signature(headers: dict[str, str], body: bytes, secret: str) -> None:
    """An independent Standard Webhooks check, by hand with hmac."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = headers["webhook-signature"].split(" ")
    assert f"v1,{expected}" in versions
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300


def test_webhook_is_signed_and_delivered(
    events_server: Server, receiver: Receiver, unique_name: str,
) -> None:
    server = events_server
    sub = subscribe(server, source={"type": "artifacts"}, destination={
        "type": "webhook", "url": receiver.url}, event_types=["cf.artifacts.repo.created"])
    secret = sub["secret"]
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{44}", secret)
    create_repo(server, unique_name)
    wait_for(lambda: receiver.requests)
    headers, body = receiver.requests[0]
    check_signature(headers, body, secret)
    # And the reference implementation of the convention agrees, and refuses a replay of
    # the same signed request once its timestamp is old.
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    assert Webhook(secret).verify(body, headers)["id"] == json.loads(body)["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    replayed = {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, replayed)
    event = json.loads(body)
    assert headers["webhook-id"] == event["id"]
    assert event["source"]["repoName"] == unique_name
    assert event["metadata"]["eventSubscriptionId"] == sub["id"]
    # The secret is never shown again; rotation shows the new one once.
    with subs(server) as c:
        assert "secret" not in c.get(f"/subscriptions/{sub['id']}").json()["result"]
        rotated = c.patch(f"/subscriptions/{sub['id']}", json={"rotate_secret": True}).json()["result"]
        assert rotated["secret"] != secret
        log = wait_for(lambda: c.get(f"/subscriptions/{sub['id']}/deliveries").json()["result"])
        assert log[0]["outcome"] == "delivered" and log[0]["status_code"] == 204
        assert log[0]["event_id"] == event["id"] and log[0]["latency_ms"] >= 0
        # Manual redelivery of that event.
        r = c.post(f"/subscriptions/{sub['id']}/redeliver", json={"event_id": event["id"]})
        assert r.status_code == 202 and r.json()["result"]["queued"] == 1
    wait_for(lambda: len(receiver.requests) >= 2)
    headers2, body2 = receiver.requests[1]
    assert json.loads(body2)["id"] == event["id"]
    check_signature(headers2, body2, rotated["secret"])


def test_webhook_retries_after_500_and_pauses_on_410(
    events_server: Server, receiver: Receiver, unique_name: str,
) -> None:
    server = events_server
    answers = iter([500, 500, 200])
    receiver.answer = lambda h: _reply(h, next(answers, 200), b"busy")
    sub = subscribe(server, source={"type": "artifacts"}, destination={
        "type": "webhook", "url": receiver.url}, event_types=["cf.artifacts.repo.created"])
    metrics = {
        "written": 'artifactd_events_written_total{type="cf.artifacts.repo.created"}',
        "delivered": 'artifactd_event_deliveries_total{outcome="delivered"}',
        "failed": 'artifactd_event_deliveries_total{outcome="failed"}',
        "retried": 'artifactd_event_deliveries_total{outcome="retried"}',
        "latency": "artifactd_event_delivery_latency_seconds_count",
    }
    before = {name: server.metric(series) for name, series in metrics.items()}
    create_repo(server, unique_name)
    wait_for(lambda: len(receiver.requests) >= 3)
    # The metrics, on the server's /metrics (the counts of the delivery worker).
    wait_for(lambda: server.metric(metrics["latency"]) > before["latency"])
    grown = {name: server.metric(series) - before[name] for name, series in metrics.items()}
    assert grown["written"] >= 1 and grown["delivered"] >= 1 and grown["latency"] >= 1, grown
    assert grown["failed"] >= 2 and grown["retried"] >= 2, grown
    assert "artifactd_event_queue_depth" in httpx.get(f"{server.url}/metrics").text
    ids = {json.loads(b)["id"] for _, b in receiver.requests}
    assert len(ids) == 1  # the same event, again until it went through
    with subs(server) as c:
        log = wait_for(lambda: [d for d in c.get(f"/subscriptions/{sub['id']}/deliveries").json()["result"]
                                if d["outcome"] == "delivered"] and
                       c.get(f"/subscriptions/{sub['id']}/deliveries").json()["result"])
        outcomes = [(d["outcome"], d["status_code"]) for d in reversed(log)]
        assert outcomes[:3] == [("failed", 500), ("failed", 500), ("delivered", 200)]
        assert log[-1]["response_snippet"] == "busy"
        receiver.answer = lambda h: _reply(h, 410)
        create_repo(server, f"{unique_name}-2")
        paused = wait_for(lambda: (lambda s: s if s["state"] == "paused" else None)(
            c.get(f"/subscriptions/{sub['id']}").json()["result"]))
        assert "410" in paused["paused_reason"]
        # Resuming starts again from the undelivered event.
        receiver.answer = lambda h: _reply(h, 200)
        before = len(receiver.requests)
        assert c.post(f"/subscriptions/{sub['id']}/resume").json()["result"]["state"] == "active"
        wait_for(lambda: len(receiver.requests) > before)
        assert json.loads(receiver.requests[-1][1])["source"]["repoName"] == f"{unique_name}-2"


def test_receivers_that_hang_close_or_flood_are_recorded_failures(
    events_server: Server, receiver: Receiver, unique_name: str,
) -> None:
    server = events_server
    healthy = Receiver()
    try:
        other = subscribe(server, source={"type": "artifacts"}, destination={
            "type": "webhook", "url": healthy.url}, event_types=["cf.artifacts.repo.created"])
        stop = threading.Event()
        modes = iter(["hang", "close", "flood", "redirect"])

        def answer(h: BaseHTTPRequestHandler) -> None:
            mode = next(modes, "ok")
            if mode == "hang":
                stop.wait(5)
            elif mode == "close":
                h.close_connection = True
                h.connection.shutdown(2)
            elif mode == "flood":  # announces a gigabyte; the server reads a snippet
                h.send_response(200)
                h.send_header("content-length", str(1 << 30))
                h.end_headers()
                try:
                    for _ in range(64):
                        h.wfile.write(b"x" * 65536)
                except OSError:
                    pass
            elif mode == "redirect":
                _reply(h, 302, headers={"location": "http://169.254.169.254/"})
            else:
                _reply(h, 200)

        receiver.answer = answer
        sub = subscribe(server, source={"type": "artifacts"}, destination={
            "type": "webhook", "url": receiver.url}, event_types=["cf.artifacts.repo.created"])
        create_repo(server, unique_name)
        create_repo(server, f"{unique_name}-b")
        # The healthy subscription is not held up by the broken one.
        wait_for(lambda: len(healthy.requests) >= 2)
        with subs(server) as c:
            log = wait_for(lambda: (lambda rows: rows if sum(
                d["outcome"] == "delivered" for d in rows) >= 2 else None)(
                c.get(f"/subscriptions/{sub['id']}/deliveries", params={"limit": 50}).json()["result"]), 40)
            attempts = list(reversed(log))
            assert attempts[0]["outcome"] == "failed" and "timeout" in attempts[0]["error"]
            assert attempts[1]["outcome"] == "failed" and attempts[1]["status_code"] is None
            assert attempts[2]["outcome"] == "delivered"  # 200, body cut at the snippet
            assert len(attempts[2]["response_snippet"]) <= 2048
            assert attempts[3]["outcome"] == "failed" and attempts[3]["status_code"] == 302
            assert "redirect" in attempts[3]["error"]
            assert c.get(f"/subscriptions/{other['id']}").json()["result"]["state"] == "active"
        stop.set()
        assert httpx.get(f"{server.url}/healthz").status_code == 200
    finally:
        healthy.stop()


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code", "pointer"), [
    ({"source": {"type": "artifacts"}, "destination": {"type": "webhook", "url": "file:///etc/passwd"}},
     12301, "/destination/url"),
    ({"source": {"type": "artifacts"}, "destination": {"type": "webhook", "url": "http://127.0.0.2/x"}},
     12301, "/destination/url"),
    ({"source": {"type": "artifacts"},
      "destination": {"type": "webhook", "url": "http://169.254.169.254/latest"}},
     12301, "/destination/url"),
    ({"source": {"type": "artifacts"},
      "destination": {"type": "webhook", "url": "https://10.1.2.3/hook"}}, 12301, "/destination/url"),
    ({"source": {"type": "artifacts"}, "destination": {"type": "webhook"}}, 10100, "/destination/url"),
    ({"source": {"type": "artifacts"}, "destination": {"type": "carrier-pigeon"}},
     10100, "/destination/type"),
    ({"source": {"type": "artifacts"}, "event_types": ["cf.artifacts.repo.exploded"],
      "destination": {"type": "queue"}}, 12303, "/event_types/0"),
    ({"source": {"type": "artifacts"}, "event_types": ["cf.artifacts.repo.pushed"],
      "destination": {"type": "queue"}}, 12303, "/event_types/0"),
    ({"source": {"type": "artifacts.repo", "namespace": "default"},
      "destination": {"type": "queue"}}, 10100, "/source/repo_name"),
    ({"source": {"type": "artifacts", "namespace": "../etc"}, "destination": {"type": "queue"}},
     10100, "/source/namespace"),
    ({"source": {"type": "git"}, "destination": {"type": "queue"}}, 10100, "/source/type"),
])
def test_bad_subscription_bodies(events_server: Server, body: dict[str, Any], code: int,
                                 pointer: str) -> None:
    with subs(events_server) as c:
        # Ids only: the delivery thread may pause an earlier test's failing subscription meanwhile.
        before = {sub["id"] for sub in c.get("/subscriptions").json()["result"]}
        r = c.post("/subscriptions", json={"name": "bad", **body})
        assert r.status_code == 400, r.text
        error = r.json()["errors"][0]
        assert error["code"] == code, error
        assert error["source"]["pointer"] == pointer, error
        assert {sub["id"] for sub in c.get("/subscriptions").json()["result"]} == before


def test_webhook_host_resolving_to_a_private_address(sqlite_server: Server) -> None:
    """A name (not an address literal) that resolves to loopback, on a server without a
    webhook allowlist: refused at create and at update, nothing stored."""
    with subs(sqlite_server) as c:
        before = {sub["id"] for sub in c.get("/subscriptions").json()["result"]}
        r = c.post("/subscriptions", json={"name": "private", "source": {"type": "artifacts"},
                                           "destination": {"type": "webhook",
                                                           "url": "https://localhost/hook"}})
        assert r.status_code == 400, r.text
        error = r.json()["errors"][0]
        assert error["code"] == 12301 and error["source"]["pointer"] == "/destination/url"
        assert "localhost (127.0.0.1)" in error["message"]
        # Loopback as a literal, with plain http, is refused the same way.
        r = c.post("/subscriptions", json={"name": "loopback", "source": {"type": "artifacts"},
                                           "destination": {"type": "webhook",
                                                           "url": "http://127.0.0.1/hook"}})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == 12301, r.text
        assert {sub["id"] for sub in c.get("/subscriptions").json()["result"]} == before


def test_unknown_subscription_and_read_token(events_server: Server) -> None:
    with subs(events_server) as c:
        r = c.get("/subscriptions/0123456789abcdef0123456789abcdef")
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == 12300
    read = httpx.post(f"{events_server.account_url}/subscriptions",
                      headers={"Authorization": f"Bearer {events_server.read_token}"},
                      json={"name": "x", "source": {"type": "artifacts"},
                            "destination": {"type": "queue"}})
    assert read.status_code == 403


# -- SDK and CLI ------------------------------------------------------------------------


def test_sdk_verify_webhook_and_subscriptions(
    events_server: Server, receiver: Receiver, unique_name: str,
) -> None:
    from artifactd import Artifacts, WebhookVerificationError, verify_webhook

    server = events_server
    with Artifacts(server.url, server.account_id, server.token) as sdk:
        sub = sdk.create_subscription(
            "sdk", source={"type": "artifacts"}, event_types=["cf.artifacts.repo.created"],
            destination={"type": "webhook", "url": receiver.url})
        assert sub["id"] in [s["id"] for s in sdk.list_subscriptions()]
        sdk.create(unique_name)
        wait_for(lambda: receiver.requests)
        headers, body = receiver.requests[0]
        event = verify_webhook(headers, body, sub["secret"])
        assert event["source"]["repoName"] == unique_name
        # Forged, tampered, replayed later, or missing headers: refused.
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers, body + b" ", sub["secret"])
        with pytest.raises(WebhookVerificationError):
            verify_webhook(headers, body, "whsec_" + base64.b64encode(b"k" * 32).decode())
        with pytest.raises(WebhookVerificationError, match="too old"):
            verify_webhook(headers, body, sub["secret"], now=time.time() + 3600)
        with pytest.raises(WebhookVerificationError):
            verify_webhook({"webhook-id": headers["webhook-id"]}, body, sub["secret"])
        # The rest of the API: the delivery log, redelivery, rotation, pause and resume.
        log = wait_for(lambda: sdk.deliveries(sub["id"], limit=5))
        assert log[0]["event_id"] == event["id"] and log[0]["outcome"] == "delivered"
        assert sdk.redeliver(sub["id"], event_id=event["id"]) == {"queued": 1}
        wait_for(lambda: len(receiver.requests) >= 2)
        rotated = sdk.update_subscription(sub["id"], name="sdk-2", rotate_secret=True)
        assert rotated["name"] == "sdk-2" and rotated["secret"] != sub["secret"]
        assert sdk.pause_subscription(sub["id"])["state"] == "paused"
        assert sdk.resume_subscription(sub["id"])["state"] == "active"
        queue = sdk.create_subscription("q", source={"type": "artifacts"},
                                        destination={"type": "queue"})
        sdk.create(f"{unique_name}-q")
        page = wait_for(lambda: (lambda p: p if p["events"] else None)(
            sdk.events(queue["id"], wait=1)))
        assert page["events"][0]["source"]["repoName"] == f"{unique_name}-q"
        sdk.ack_events(queue["id"], page["cursor"])
        assert sdk.events(queue["id"])["events"] == []
        sdk.delete_subscription(sub["id"])
        assert sub["id"] not in [s["id"] for s in sdk.list_subscriptions()]


def test_async_sdk_subscriptions(events_server: Server, receiver: Receiver,
                                 unique_name: str) -> None:
    """The same subscription methods on ``AsyncArtifacts``."""
    import anyio

    from artifactd import AsyncArtifacts

    server = events_server

    async def main() -> None:
        async with AsyncArtifacts(server.url, server.account_id, server.token) as sdk:
            hook = await sdk.create_subscription(
                "async", source={"type": "artifacts"}, event_types=["cf.artifacts.repo.created"],
                destination={"type": "webhook", "url": receiver.url})
            queue = await sdk.create_subscription("async-q", source={"type": "artifacts"},
                                                  destination={"type": "queue"})
            assert {hook["id"], queue["id"]} <= {s["id"] for s in await sdk.list_subscriptions()}
            await sdk.create(unique_name)
            page = await sdk.events(queue["id"], wait=5)
            assert page["events"][0]["source"]["repoName"] == unique_name
            await sdk.ack_events(queue["id"], page["cursor"])
            assert (await sdk.events(queue["id"]))["events"] == []
            while not await sdk.deliveries(hook["id"]):
                await anyio.sleep(0.05)
            event_id = (await sdk.deliveries(hook["id"], limit=1))[0]["event_id"]
            assert await sdk.redeliver(hook["id"], event_id=event_id) == {"queued": 1}
            assert (await sdk.update_subscription(hook["id"], name="async-2"))["name"] == "async-2"
            assert (await sdk.pause_subscription(hook["id"]))["state"] == "paused"
            assert (await sdk.resume_subscription(hook["id"]))["state"] == "active"
            assert (await sdk.get_subscription(hook["id"]))["id"] == hook["id"]
            # The event and its redelivery, before the subscription goes (a deleted
            # subscription's queued redelivery is not sent).
            with anyio.fail_after(20):
                while len(receiver.requests) < 2:
                    await anyio.sleep(0.05)
            for sub_id in (hook["id"], queue["id"]):
                await sdk.delete_subscription(sub_id)
            assert not {hook["id"], queue["id"]} & {s["id"] for s in await sdk.list_subscriptions()}

    anyio.run(main)


def test_cli_subscription_and_events_tail(
    events_server: Server, tmp_path: Path, unique_name: str,
) -> None:
    from tests.clientutil import client_env
    from tests.test_cli import run

    env = client_env(events_server, tmp_path / "home")
    created = json.loads(run(env, "subscription", "create", "cli", "--type",
                             "cf.artifacts.repo.created", "--json").stdout)
    assert created["destination"]["type"] == "queue"
    assert created["id"] in run(env, "subscription", "list").stdout
    create_repo(events_server, unique_name)
    wait_for(lambda: drain_peek(events_server, created["id"]))
    lines = run(env, "events", "tail", created["id"], "--no-follow", "--ack", "--json").stdout
    (event,) = [json.loads(line) for line in lines.splitlines()]
    assert event["source"]["repoName"] == unique_name
    assert run(env, "events", "tail", created["id"], "--no-follow").stdout == ""  # acked
    assert json.loads(run(env, "subscription", "delete", created["id"], "--json").stdout) == {
        "id": created["id"]}


def drain_peek(server: Server, sub_id: str) -> list[dict[str, Any]]:
    with subs(server) as c:
        return list(c.get(f"/subscriptions/{sub_id}/events").json()["result"])


# -- never lost -------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_no_event_is_lost_across_kill_9(tmp_path: Path, receiver: Receiver, database: str,
                                        request: pytest.FixtureRequest) -> None:
    """Creates while the server is killed with SIGKILL and restarted: every repo that exists
    has its event delivered to the webhook (duplicates allowed, counted). On PostgreSQL the
    killed server's open transactions must not hold the readers' horizon back."""
    url = request.getfixturevalue("postgres").new_database() if database == "postgres" else None
    server = start_server(tmp_path / "data", database_url=url, extra_env={
        "ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "ARTIFACTD_WEBHOOK_RETRY_BASE": "0.1"})
    try:
        subscribe(server, source={"type": "artifacts"}, destination={
            "type": "webhook", "url": receiver.url}, event_types=["cf.artifacts.repo.created"])
        stop = threading.Event()

        def burst() -> None:
            i = 0
            while not stop.is_set():
                try:
                    with httpx.Client(base_url=server.ns_url(), timeout=5, headers={
                            "Authorization": f"Bearer {server.token}"}) as c:
                        c.post("/repos", json={"name": f"k{i}-{time.monotonic_ns()}"})
                except httpx.HTTPError:
                    time.sleep(0.02)
                i += 1

        worker = threading.Thread(target=burst)
        worker.start()
        try:
            for _ in range(3):  # a bounded number of kills, each mid-burst
                seen = len(receiver.requests)
                # A claim of the killed process lapses after 10 s: then deliveries go on.
                wait_for(lambda: len(receiver.requests) >= seen + 3, 60)
                assert server.process is not None
                server.process.kill()
                server.process.wait()
                server.start()
        finally:
            stop.set()
            worker.join()
        with server.client() as c:
            names: set[str] = set()
            cursor = ""
            while True:
                page = c.get("/repos", params={"limit": 200, "cursor": cursor}).json()
                names |= {r["name"] for r in page["result"]}
                cursor = page["result_info"]["cursor"]
                if not cursor:
                    break
        assert len(names) > 5

        def delivered() -> set[str]:
            return {e["source"]["repoName"] for e in receiver.events()}

        wait_for(lambda: names <= delivered(), 60)
        ids = [e["id"] for e in receiver.events()]
        duplicates = len(ids) - len(set(ids))
        print(f"repos {len(names)}, deliveries {len(ids)}, duplicates {duplicates}")
        assert len(set(ids)) == len(delivered())  # one id per event, whatever the retries
    finally:
        server.stop()


def test_outbox_and_queue_on_both_databases(server: Server, unique_name: str) -> None:
    """The shared server fixture runs on SQLite and PostgreSQL: the outbox is written in the
    create's and the token's transactions on both, and the queue reads it."""
    sub = subscribe(server, source={"type": "artifacts.repo", "namespace": "default",
                                    "repo_name": unique_name}, destination={"type": "queue"})
    account = subscribe(server, source={"type": "artifacts", "namespace": "default"},
                        event_types=["cf.artifacts.repo.created"], destination={"type": "queue"})
    repo = create_repo(server, unique_name)
    minted = repo.mint("read")
    (created,) = drain(server, account["id"], 1)
    assert created["payload"]["repoId"] == repo.id
    (token,) = drain(server, sub["id"], 1)
    assert token["type"] == "cf.artifacts.repo.token.created"
    assert token["payload"]["tokenId"] == minted["id"]
    with subs(server) as c:
        for sub_id in (sub["id"], account["id"]):
            assert c.delete(f"/subscriptions/{sub_id}").status_code == 200
