"""The REST control plane against a real server, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import time
from datetime import datetime

import httpx
import pytest

from tests.harness import Server

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
TOKEN = re.compile(r"art_v1_[0-9a-f]{40}\?expires=\d+")


def envelope_error(response: httpx.Response, status: int, code: int | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["result"] is None
    assert body["messages"] == []
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert isinstance(error["code"], int) and error["message"]
    if code is not None:
        assert error["code"] == code, body
    return error


def assert_token_expiry(result: dict[str, object]) -> None:
    """``expires_at`` beside a returned token is the expiry its ``?expires=`` suffix encodes."""
    token, expires_at = result["token"], result["expires_at"]
    assert isinstance(token, str) and isinstance(expires_at, str) and ISO.fullmatch(expires_at)
    stamp = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    assert int(stamp) == int(token.rsplit("=", 1)[1])


def create(client: httpx.Client, name: str, **fields: object) -> httpx.Response:
    return client.post("/repos", json={"name": name, **fields})


def test_create_get_list_delete_shapes(server: Server, unique_name: str) -> None:
    with server.client() as c:
        r = create(c, unique_name, description="Repository for automation experiments",
                   default_branch="main", read_only=False)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True and body["errors"] == [] and body["messages"] == []
        result = body["result"]
        assert set(result) == {"id", "name", "description", "default_branch", "remote", "token",
                               "expires_at"}
        assert_token_expiry(result)
        assert result["name"] == unique_name
        assert result["description"] == "Repository for automation experiments"
        assert result["default_branch"] == "main"
        assert TOKEN.fullmatch(result["token"])
        assert result["remote"] == (
            f"{server.url}/git/{server.account_id}/default/{unique_name}.git"
        )

        got = c.get(f"/repos/{unique_name}").json()["result"]
        for key in ("id", "name", "description", "default_branch", "created_at", "updated_at",
                    "last_push_at", "source", "read_only", "remote"):
            assert key in got
        assert got["id"] == result["id"]
        assert ISO.fullmatch(got["created_at"]) and ISO.fullmatch(got["updated_at"])
        assert got["last_push_at"] is None and got["source"] is None
        assert got["read_only"] is False and got["status"] == "ready"

        listed = c.get("/repos", params={"search": unique_name}).json()
        assert [r["name"] for r in listed["result"]] == [unique_name]
        # Spec 001 types the cursor as a string: the last page's is empty.
        assert listed["result_info"] == {"cursor": "", "per_page": 50, "count": 1,
                                         "total_count": 1}

        deleted = c.delete(f"/repos/{unique_name}")
        assert deleted.status_code == 202
        assert deleted.json()["result"] == {"id": result["id"]}
        envelope_error(c.get(f"/repos/{unique_name}"), 404, 10200)
        envelope_error(c.delete(f"/repos/{unique_name}"), 404, 10200)
        # The name is free again at once.
        again = create(c, unique_name)
        assert again.status_code == 200 and again.json()["result"]["id"] != result["id"]


def test_defaults_and_duplicate(server: Server, unique_name: str) -> None:
    with server.client() as c:
        result = create(c, unique_name).json()["result"]
        assert result["description"] is None and result["default_branch"] == "main"
        dup = create(c, unique_name, description="other")
        envelope_error(dup, 409, 10201)
        assert c.get(f"/repos/{unique_name}").json()["result"]["description"] is None


def test_same_name_in_two_namespaces(server: Server, unique_name: str) -> None:
    with server.client() as c:
        a = c.post(server.ns_url("prod") + "/repos", json={"name": unique_name})
        b = c.post(server.ns_url("staging") + "/repos", json={"name": unique_name})
        assert a.status_code == b.status_code == 200
        assert a.json()["result"]["id"] != b.json()["result"]["id"]
        assert "/prod/" in a.json()["result"]["remote"]


def test_namespaces(server: Server, unique_name: str) -> None:
    namespace = f"ns-{unique_name}"[:60]
    with server.client() as c:
        assert c.get(server.ns_url(namespace)).status_code == 404
        envelope_error(c.get(server.ns_url(namespace)), 404, 11020)
        assert c.post(server.ns_url(namespace) + "/repos", json={"name": "r1"}).status_code == 200
        ns = c.get(server.ns_url(namespace)).json()["result"]
        assert ns["name"] == namespace and ns["repo_count"] == 1 and ISO.fullmatch(ns["created_at"])
        names: list[str] = []
        cursor = None
        while True:
            params = {"limit": 1}
            if cursor:
                params["cursor"] = cursor
            page = c.get(server.account_url + "/namespaces", params=params).json()
            names += [n["name"] for n in page["result"]]
            cursor = page["result_info"]["cursor"]
            if not cursor:
                break
        assert namespace in names and names == sorted(names)


@pytest.mark.parametrize("sort", ["created_at", "updated_at", "last_push_at", "name"])
@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_list_pagination_every_sort(server: Server, sort: str, direction: str) -> None:
    namespace = f"page-{sort}-{direction}".replace("_", "-")
    with server.client() as c:
        base = server.ns_url(namespace) + "/repos"
        if c.get(server.ns_url(namespace)).status_code == 404:
            for i in range(7):
                assert c.post(base, json={"name": f"repo-{i}"}).status_code == 200
        seen: list[dict] = []
        cursor = None
        for _ in range(10):
            params: dict[str, object] = {"limit": 3, "sort": sort, "direction": direction}
            if cursor:
                params["cursor"] = cursor
            page = c.get(base, params=params).json()
            assert page["result_info"]["per_page"] == 3
            assert page["result_info"]["count"] == len(page["result"])
            seen += page["result"]
            cursor = page["result_info"]["cursor"]
            if cursor == "":  # the last page (spec 001: the cursor is a string)
                break
        assert len(seen) == 7 and len({r["id"] for r in seen}) == 7
        key = {"created_at": "created_at", "updated_at": "updated_at",
               "last_push_at": "id", "name": "name"}[sort]
        if sort != "last_push_at":
            values = [r[key] for r in seen]
            assert values == sorted(values, reverse=direction == "desc")
        # A cursor is bound to its query: changing the sort makes it invalid.
        first = c.get(base, params={"limit": 3, "sort": sort, "direction": direction}).json()
        other = "name" if sort != "name" else "created_at"
        bad = c.get(base, params={"limit": 3, "sort": other, "direction": direction,
                                  "cursor": first["result_info"]["cursor"]})
        envelope_error(bad, 400, 11050)


def test_tokens_mint_list_revoke(server: Server, unique_name: str) -> None:
    with server.client() as c:
        create(c, unique_name)
        before = time.time()
        minted = c.post("/tokens", json={"repo": unique_name, "scope": "read", "ttl": 3600})
        assert minted.status_code == 200, minted.text
        token = minted.json()["result"]
        assert set(token) == {"id", "plaintext", "scope", "expires_at"}
        assert re.fullmatch(r"[0-9a-f]{16}", token["id"]) and token["scope"] == "read"
        assert TOKEN.fullmatch(token["plaintext"])
        expires = int(token["plaintext"].split("=")[1])
        assert before + 3590 < expires < before + 3610
        default = c.post("/tokens", json={"repo": unique_name}).json()["result"]
        assert default["scope"] == "write"
        assert before + 86390 < int(default["plaintext"].split("=")[1]) < before + 86410

        listed = c.get(f"/repos/{unique_name}/tokens").json()
        ids = {t["id"] for t in listed["result"]}
        assert token["id"] in ids and default["id"] in ids and len(ids) == 3  # + create's token
        assert listed["result_info"] == {"page": 1, "per_page": 30, "total_pages": 1,
                                         "count": 3, "total_count": 3}
        for item in listed["result"]:
            assert set(item) == {"id", "scope", "state", "created_at", "expires_at"}
            assert item["state"] == "active" and "plaintext" not in item

        revoked = c.delete(f"/tokens/{token['id']}")
        assert revoked.status_code == 200 and revoked.json()["result"] == {"id": token["id"]}
        envelope_error(c.delete(f"/tokens/{token['id']}"), 409, 11041)
        active = {t["id"] for t in c.get(f"/repos/{unique_name}/tokens").json()["result"]}
        assert token["id"] not in active
        revoked_list = c.get(f"/repos/{unique_name}/tokens", params={"state": "revoked"}).json()
        assert [t["id"] for t in revoked_list["result"]] == [token["id"]]
        assert revoked_list["result"][0]["state"] == "revoked"
        every = c.get(f"/repos/{unique_name}/tokens", params={"state": "all", "per_page": 2})
        info = every.json()["result_info"]
        assert info["total_count"] == 3 and info["total_pages"] == 2 and info["count"] == 2
        page2 = c.get(f"/repos/{unique_name}/tokens",
                      params={"state": "all", "per_page": 2, "page": 2}).json()
        assert page2["result_info"]["count"] == 1 and page2["result_info"]["page"] == 2
        envelope_error(c.get(f"/repos/{unique_name}/tokens", params={"state": "bogus"}), 400)
        envelope_error(c.get(f"/repos/{unique_name}/tokens", params={"per_page": 101}), 400)


def test_token_of_other_namespace_is_unknown(server: Server, unique_name: str) -> None:
    with server.client() as c:
        c.post(server.ns_url("other-ns") + "/repos", json={"name": unique_name})
        token = c.post(server.ns_url("other-ns") + "/tokens", json={"repo": unique_name}).json()
        token_id = token["result"]["id"]
        envelope_error(c.delete(f"/tokens/{token_id}"), 404, 11040)
        envelope_error(c.delete("/tokens/0123456789abcdef"), 404, 11040)
        envelope_error(c.delete("/tokens/not-an-id"), 404, 11040)
        # Still active in its own namespace.
        listed = c.get(server.ns_url("other-ns") + f"/repos/{unique_name}/tokens").json()
        assert token_id in {t["id"] for t in listed["result"]}


def test_delete_revokes_tokens_and_hides_repo(server: Server, unique_name: str) -> None:
    with server.client() as c:
        create(c, unique_name)
        token_id = c.post("/tokens", json={"repo": unique_name}).json()["result"]["id"]
        c.delete(f"/repos/{unique_name}")
        envelope_error(c.get(f"/repos/{unique_name}/tokens"), 404, 10200)
        envelope_error(c.delete(f"/tokens/{token_id}"), 404, 11040)
        assert unique_name not in [r["name"] for r in c.get("/repos", params={"limit": 200}).json()["result"]]


# -- authentication matrix -------------------------------------------------------------------

ROUTES = [
    ("GET", "/namespaces", None, False),
    ("GET", "/namespaces/default", None, False),
    ("GET", "/namespaces/default/repos", None, False),
    ("POST", "/namespaces/default/repos", {"name": "authz-probe"}, True),
    ("GET", "/namespaces/default/repos/authz-target", None, False),
    ("DELETE", "/namespaces/default/repos/authz-target", None, True),
    ("GET", "/namespaces/default/repos/authz-target/tokens", None, False),
    ("POST", "/namespaces/default/tokens", {"repo": "authz-target"}, True),
    ("DELETE", "/namespaces/default/tokens/0123456789abcdef", None, True),
]


@pytest.mark.parametrize(("method", "path", "body", "writes"), ROUTES)
def test_auth_matrix(server: Server, method: str, path: str, body: dict | None, writes: bool) -> None:
    with server.client() as c:
        if c.get("/repos/authz-target").status_code == 404:
            create(c, "authz-target")
    url = server.account_url + path
    with httpx.Client(timeout=30) as http:
        def call(headers: dict[str, str], account_url: str | None = None) -> httpx.Response:
            target = (account_url + path) if account_url else url
            return http.request(method, target, json=body, headers=headers)

        envelope_error(call({}), 401, 11010)
        assert call({}).headers["www-authenticate"].startswith("Bearer")
        envelope_error(call({"Authorization": "Bearer artd_" + "0" * 40}), 401, 11011)
        envelope_error(call({"Authorization": "Bearer nonsense"}), 401, 11011)
        envelope_error(call({"Authorization": "Basic eDp5"}), 401, 11011)
        read = call({"Authorization": f"Bearer {server.read_token}"})
        if writes:
            envelope_error(read, 403, 11012)
        else:
            assert read.status_code == 200, read.text
        # Another account's token and an unknown account get the same answer.
        other = server.new_api_token("edit", account="f" * 32)
        other_answer = call({"Authorization": f"Bearer {other['token']}"})
        unknown_answer = call({"Authorization": f"Bearer {server.token}"},
                              account_url=f"{server.url}/client/v4/accounts/{'e' * 32}/artifacts")
        envelope_error(other_answer, 403, 11013)
        assert other_answer.json() == unknown_answer.json()
        assert other_answer.status_code == unknown_answer.status_code


def test_revoked_api_token_stops_working(server: Server) -> None:
    token = server.new_api_token("edit")
    with server.client(token["token"]) as c:
        assert c.get("/repos").status_code == 200
        result = server.admin("api-token", "revoke", token["id"])
        assert result.returncode == 0, result.stderr
        envelope_error(c.get("/repos"), 401, 11011)


# -- bad input ---------------------------------------------------------------------------

BAD_NAMES = ["a/b", "..", "../x", "-lead", ".hidden", "with space", "ünïcode", "x" * 1001, "",
             "a\x00b", "a%2Fb", "_under"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_repo_names(server: Server, name: str) -> None:
    with server.client() as c:
        before = c.get("/repos", params={"limit": 200}).json()["result"]
        # INVALID_REPO_NAME; a NUL is refused earlier, in any JSON string (INVALID_INPUT).
        error = envelope_error(create(c, name), 400, 10100 if "\x00" in name else 10101)
        assert error["source"]["pointer"] == "/name"
        assert c.get("/repos", params={"limit": 200}).json()["result"] == before


def test_name_length_limit(server: Server) -> None:
    with server.client() as c:
        ok = "n" + "x" * 63
        assert create(c, ok).status_code == 200
        envelope_error(create(c, ok + "y"), 400, 10101)


@pytest.mark.parametrize("raw", [b"{", b"[]", b"\"name\"", b"null", b"", b"\xff\xfe"])
def test_malformed_json(server: Server, raw: bytes) -> None:
    with server.client() as c:
        envelope_error(c.post("/repos", content=raw, headers={"Content-Type": "application/json"}),
                       400, 11003)


@pytest.mark.parametrize(("body", "pointer"), [
    ({"name": 5}, "/name"),
    ({"name": "ok-name", "read_only": "yes"}, "/read_only"),
    ({"name": "ok-name", "description": 7}, "/description"),
    ({"name": "ok-name", "default_branch": "bad..branch"}, "/default_branch"),
    ({"name": "ok-name", "default_branch": "-x"}, "/default_branch"),
    ({"name": 5, "unknown": 1}, "/name"),  # unknown fields are ignored, types still checked
    ({}, "/name"),
])
def test_create_validation(server: Server, body: dict, pointer: str) -> None:
    with server.client() as c:
        error = envelope_error(c.post("/repos", json=body), 400, 10100)
        assert error["source"]["pointer"] == pointer
        envelope_error(c.get("/repos/ok-name"), 404)


# A ttl out of range is INVALID_TTL (10103); a wrong type or any other field INVALID_INPUT.
@pytest.mark.parametrize(("body", "pointer", "code"), [
    ({"repo": "tok-target", "ttl": 59}, "/ttl", 10103),
    ({"repo": "tok-target", "ttl": 31536001}, "/ttl", 10103),
    ({"repo": "tok-target", "ttl": "3600"}, "/ttl", 10100),
    ({"repo": "tok-target", "ttl": 60.5}, "/ttl", 10100),
    ({"repo": "tok-target", "scope": "admin"}, "/scope", 10100),
    ({"repo": 3}, "/repo", 10100),
    ({"scope": "read"}, "/repo", 10100),
])
def test_token_validation(server: Server, body: dict, pointer: str, code: int) -> None:
    with server.client() as c:
        if c.get("/repos/tok-target").status_code == 404:
            create(c, "tok-target")
        before = c.get("/repos/tok-target/tokens", params={"state": "all"}).json()["result_info"]
        error = envelope_error(c.post("/tokens", json=body), 400, code)
        assert error["source"]["pointer"] == pointer
        after = c.get("/repos/tok-target/tokens", params={"state": "all"}).json()["result_info"]
        assert before["total_count"] == after["total_count"]


def test_token_ttl_bounds_accepted(server: Server, unique_name: str) -> None:
    with server.client() as c:
        create(c, unique_name)
        for ttl in (60, 31536000):
            assert c.post("/tokens", json={"repo": unique_name, "ttl": ttl}).status_code == 200


def test_token_for_unknown_repo(server: Server) -> None:
    with server.client() as c:
        envelope_error(c.post("/tokens", json={"repo": "does-not-exist"}), 404, 10200)
        envelope_error(c.get("/repos/does-not-exist/tokens"), 404, 10200)


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5", "99999999999999999999"])
def test_bad_limits(server: Server, limit: str) -> None:
    with server.client() as c:
        error = envelope_error(c.get("/repos", params={"limit": limit}), 400, 10100)
        assert error["source"]["pointer"] == "/limit"
        envelope_error(c.get(server.account_url + "/namespaces", params={"limit": limit}), 400)


@pytest.mark.parametrize("params", [
    {"sort": "size"}, {"direction": "sideways"}, {"search": "x" * 300},
])
def test_bad_list_params(server: Server, params: dict) -> None:
    with server.client() as c:
        envelope_error(c.get("/repos", params=params), 400, 10100)


def test_garbage_and_tampered_cursors(server: Server) -> None:
    with server.client() as c:
        for i in range(3):
            c.post(server.ns_url("cursor-ns") + "/repos", json={"name": f"c{i}"})
        base = server.ns_url("cursor-ns") + "/repos"
        cursor = c.get(base, params={"limit": 1}).json()["result_info"]["cursor"]
        assert cursor
        payload, signature = cursor.split(".")
        tampered = [
            "garbage", "a.b", "....", payload + "." + signature[:-2] + "AA",
            payload[:-2] + "AA." + signature, "x" * 5000, "%%%", cursor + "x",
        ]
        for bad in tampered:
            envelope_error(c.get(base, params={"limit": 1, "cursor": bad}), 400, 11050)
            envelope_error(c.get(server.account_url + "/namespaces", params={"cursor": bad}), 400, 11050)


def test_unknown_route_wrong_method_and_big_body(server: Server) -> None:
    with server.client() as c:
        envelope_error(c.get(server.url + "/nope"), 404, 11001)
        envelope_error(c.put("/repos"), 405, 11002)
        envelope_error(c.patch("/repos/x"), 405, 11002)
        # Allow names every method of the path, though each has a route of its own.
        assert c.put("/repos").headers["allow"] == "GET, HEAD, POST"
        assert c.patch("/repos/x").headers["allow"] == "DELETE, GET, HEAD"
        big = {"name": "big-body", "description": "x" * (2 << 20)}
        envelope_error(c.post("/repos", json=big), 413, 11005)
        envelope_error(c.get("/repos/big-body"), 404)


def test_unknown_namespace_and_repo(server: Server) -> None:
    with server.client() as c:
        envelope_error(c.get(server.ns_url("no-such-ns")), 404, 11020)
        envelope_error(c.get(server.ns_url("bad..ns/")), 404)
        envelope_error(c.get("/repos/nope-nope"), 404, 10200)
        assert c.get(server.ns_url("never-used") + "/repos").json()["result"] == []
        envelope_error(c.post(server.ns_url("-bad") + "/repos", json={"name": "x"}), 400, 10100)


def test_concurrent_first_creates_in_a_new_namespace(server: Server, unique_name: str) -> None:
    """Regression: racing first creates in a namespace must all succeed (namespace upsert)."""
    from concurrent.futures import ThreadPoolExecutor

    namespaces = [f"race-{unique_name}-{i}"[:64] for i in range(4)]

    def create_in(args: tuple[str, int]) -> int:
        namespace, i = args
        with server.client() as c:
            return c.post(server.ns_url(namespace) + "/repos", json={"name": f"r{i}"}).status_code

    jobs = [(ns, i) for ns in namespaces for i in range(8)]
    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(create_in, jobs)) == [200] * len(jobs)
    with server.client() as c:
        for ns in namespaces:
            assert c.get(server.ns_url(ns)).json()["result"]["repo_count"] == 8
