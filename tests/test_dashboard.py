"""Dashboard security over plain HTTP against a real server: sessions (server-side, expiring,
holding no token), CSRF on every form, read tokens refused on every write, headers."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.dashboardutil import csrf_of, signed_in
from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Server, start_server
from tests.seed import push

COOKIE = "artifactd_session"


def _ns(unique_name: str) -> str:
    return "dash-" + unique_name[-6:]


def _repo_names(server: Server, ns: str) -> list[str]:
    with server.client() as c:
        r = c.get(server.ns_url(ns) + "/repos")
        if r.status_code == 404:
            return []
        return [repo["name"] for repo in r.json()["result"]]


def _create(server: Server, ns: str, name: str) -> None:
    with server.client() as c:
        assert c.post(server.ns_url(ns) + "/repos", json={"name": name}).status_code == 200


def test_signed_out_pages_redirect_to_sign_in_and_root_redirects(sqlite_server: Server) -> None:
    with httpx.Client(base_url=sqlite_server.url) as c:
        assert c.get("/").headers["location"] == "/dashboard"
        r = c.get("/dashboard/ns/default?sort=name")
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fns%2Fdefault%3Fsort%3Dname"
        login = c.get("/dashboard/login")
        assert login.status_code == 200
        csp = login.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert 'name="token"' in login.text


def test_session_cookie_flags_and_sign_out(sqlite_server: Server) -> None:
    form = httpx.get(sqlite_server.url + "/dashboard/login")
    r = httpx.post(sqlite_server.url + "/dashboard/login", data={
        "csrf": csrf_of(form.text), "token": sqlite_server.token, "next": "https://evil.example/"},
        cookies=form.cookies)
    assert r.status_code == 303
    assert r.headers["location"] == "/dashboard"  # no open redirect
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
    assert "Secure" not in cookie  # plain http here; https requests get Secure (tests/test_tls.py shape)
    client = signed_in(sqlite_server)
    page = client.get("/dashboard")
    assert page.status_code == 200
    out = client.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert client.get("/dashboard").status_code == 303


def test_login_needs_its_form_token_and_a_valid_api_token(sqlite_server: Server) -> None:
    # A cross-site sign-in (login CSRF): no cookie from the form page, so refused.
    r = httpx.post(sqlite_server.url + "/dashboard/login", data={"csrf": "x" * 32, "token": sqlite_server.token})
    assert r.status_code == 403 and COOKIE not in r.headers.get("set-cookie", "")
    form = httpx.get(sqlite_server.url + "/dashboard/login")
    bad = httpx.post(sqlite_server.url + "/dashboard/login", cookies=form.cookies,
                     data={"csrf": csrf_of(form.text), "token": "art_api_" + "0" * 40})
    assert bad.status_code == 401 and "not valid" in bad.text


def test_cross_site_post_without_csrf_token_changes_nothing(sqlite_server: Server, unique_name: str) -> None:
    ns = _ns(unique_name)
    _create(sqlite_server, ns, "keep")
    client = signed_in(sqlite_server)
    for data in ({"name": "made"}, {"name": "made", "csrf": "forged"}):
        r = client.post(f"/dashboard/ns/{ns}/repos", data=data)
        assert r.status_code == 403 and "CSRF" in r.text
        r = client.post(f"/dashboard/ns/{ns}/r/keep/delete", data={**data, "confirm": "keep"})
        assert r.status_code == 403
    # The browser's side: a cross-site form carries no cookie at all (SameSite=Strict).
    r = httpx.post(sqlite_server.url + f"/dashboard/ns/{ns}/r/keep/delete", data={"confirm": "keep"})
    assert r.status_code == 403 and "sign in again" in r.text
    assert _repo_names(sqlite_server, ns) == ["keep"]


def test_tampered_and_expired_cookies_are_no_session(sqlite_server: Server, unique_name: str) -> None:
    ns = _ns(unique_name)
    _create(sqlite_server, ns, "keep")
    client = signed_in(sqlite_server)
    csrf = csrf_of(client.get("/dashboard").text)
    good = client.cookies[COOKIE]
    tampered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    expiring = signed_in(sqlite_server)
    expired = expiring.cookies[COOKIE]
    with _db(sqlite_server) as db:  # the server's clock decides, whatever the browser keeps
        db.execute("UPDATE dashboard_sessions SET expires_us = ? WHERE id_hash = ?",
                   (int(time.time() * 1e6) - 1, hashlib.sha256(expired.encode()).hexdigest()))
    for value in (tampered, expired, "garbage", "x" * 5000, ""):
        with httpx.Client(base_url=sqlite_server.url, cookies={COOKIE: value}) as c:
            r = c.get("/dashboard")
            assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/login")
            r = c.post(f"/dashboard/ns/{ns}/r/keep/delete", data={"csrf": csrf, "confirm": "keep"})
            assert r.status_code == 403 and "sign in again" in r.text
    assert _repo_names(sqlite_server, ns) == ["keep"]
    assert client.get("/dashboard").status_code == 200  # the untouched session still works


def test_session_is_server_side_and_holds_no_token(sqlite_server: Server) -> None:
    minted = sqlite_server.new_api_token("edit")
    client = signed_in(sqlite_server, minted["token"])
    cookie = client.cookies[COOKIE]
    secret_part = minted["token"].rsplit("_", 1)[-1]
    assert secret_part not in cookie and len(cookie) < 64  # a random id, not signed data
    with _db(sqlite_server) as db:
        rows = db.execute("SELECT * FROM dashboard_sessions").fetchall()
        assert rows and not any(secret_part in str(row) for row in rows)
        assert not db.execute("SELECT 1 FROM server_settings WHERE value LIKE ?",
                              (f"%{secret_part}%",)).fetchall()
    # A copy of the cookie dies with the sign-out: the server deleted the session.
    copy = httpx.Client(base_url=sqlite_server.url, cookies={COOKIE: cookie})
    assert copy.get("/dashboard").status_code == 200
    out = client.post("/dashboard/logout", data={"csrf": csrf_of(client.get("/dashboard").text)})
    assert out.status_code == 303
    assert copy.get("/dashboard").status_code == 303
    copy.close()


@contextmanager
def _db(server: Server) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(server.data_dir / "artifactd.db", timeout=30)
    try:
        yield db
        db.commit()
    finally:
        db.close()


def test_read_token_is_refused_on_every_write(server: Server, unique_name: str) -> None:
    sqlite_server = server  # both databases
    ns = _ns(unique_name)
    _create(sqlite_server, ns, "keep")
    client = signed_in(sqlite_server, sqlite_server.read_token)
    page = client.get(f"/dashboard/ns/{ns}/r/keep")
    assert page.status_code == 200 and "Delete this repo" not in page.text
    csrf = csrf_of(page.text)
    writes = {
        "/dashboard/repos": {"namespace": ns, "name": "made"},
        f"/dashboard/ns/{ns}/repos": {"name": "made"},
        f"/dashboard/ns/{ns}/import": {"name": "made", "url": "https://example.com/x.git"},
        f"/dashboard/ns/{ns}/r/keep/fork": {"name": "made"},
        f"/dashboard/ns/{ns}/r/keep/delete": {"confirm": "keep"},
        f"/dashboard/ns/{ns}/r/keep/tokens": {"scope": "write", "ttl": "60"},
        f"/dashboard/ns/{ns}/r/keep/tokens/0123456789abcdef/revoke": {},
        f"/dashboard/ns/{ns}/r/keep/merge": {"head": "keep:main", "expected_head": "0" * 40},
        "/dashboard/subscriptions": {"name": "made", "destination": "queue"},
        "/dashboard/subscriptions/0123456789abcdef/pause": {},
        "/dashboard/subscriptions/0123456789abcdef/resume": {},
        "/dashboard/subscriptions/0123456789abcdef/redeliver": {"event_id": "evt_x"},
        "/dashboard/subscriptions/0123456789abcdef/delete": {"confirm": "made"},
    }
    for path, data in writes.items():
        r = client.post(path, data={**data, "csrf": csrf})
        assert r.status_code == 403 and "read permission" in r.text, path
    assert _repo_names(sqlite_server, ns) == ["keep"]
    with sqlite_server.client() as c:
        listed = c.get(sqlite_server.account_url + "/subscriptions")
        assert all(s["name"] != "made" for s in listed.json()["result"])


def test_revoked_api_token_ends_the_session(sqlite_server: Server) -> None:
    minted = sqlite_server.new_api_token("edit")
    client = signed_in(sqlite_server, minted["token"])
    assert client.get("/dashboard").status_code == 200
    assert sqlite_server.admin("api-token", "revoke", minted["id"]).returncode == 0
    assert client.get("/dashboard").status_code == 303


def test_bad_input_pages_say_what_happened(sqlite_server: Server, unique_name: str) -> None:
    ns = _ns(unique_name)
    _create(sqlite_server, ns, "keep")
    client = signed_in(sqlite_server)
    csrf = csrf_of(client.get("/dashboard").text)
    cases = {
        f"/dashboard/ns/{ns}/r/keep/file?path=../../etc/passwd": (400, "&#39;..&#39;"),
        f"/dashboard/ns/{ns}/r/missing": (404, "not found"),
        f"/dashboard/ns/{ns}/r/keep/commit/not-a-hash": (400, "40 hexadecimal"),
        f"/dashboard/ns/{ns}?sort=nope": (400, "sort must be"),
        f"/dashboard/ns/{ns}?cursor=forged": (400, "cursor"),
    }
    for path, (status, text) in cases.items():
        r = client.get(path)
        assert r.status_code == status and text in r.text, (path, r.status_code)
        assert "text/html" in r.headers["content-type"]
    r = client.post(f"/dashboard/ns/{ns}/repos", data={"csrf": csrf, "name": "bad name!"})
    assert r.status_code == 400 and "name" in r.text
    r = client.post(f"/dashboard/ns/{ns}/r/keep/tokens", data={"csrf": csrf, "scope": "write", "ttl": "soon"})
    assert r.status_code == 400 and "ttl" in r.text
    r = client.post(f"/dashboard/ns/{ns}/repos", content=b"name=x&csrf=" + csrf.encode() + b"&pad=" + b"a" * (70 << 10),
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413
    assert _repo_names(sqlite_server, ns) == ["keep"]


def test_activity_charts_are_server_rendered_svg(server: Server, unique_name: str) -> None:
    sqlite_server = server  # both databases
    ns = _ns(unique_name)
    _create(sqlite_server, ns, "busy")
    _create(sqlite_server, ns, "quiet")
    with sqlite_server.client() as c:
        for _ in range(3):
            assert c.get(sqlite_server.ns_url(ns) + "/repos/busy").status_code == 200
    client = signed_in(sqlite_server)
    repo_page = client.get(f"/dashboard/ns/{ns}/r/busy/analytics")
    assert repo_page.status_code == 200
    assert repo_page.text.count('<rect class="bar"') == 24
    assert "<td>create</td>" in repo_page.text
    # Each event type's share is an SVG bar; the busiest type's is full width.
    widths = [float(w) for w in re.findall(r'<svg class="meter"[^>]*><rect class="share" x="0" y="0" height="10" width="([0-9.]+)"', repo_page.text)]
    assert widths and max(widths) == 100.0
    ns_page = client.get(f"/dashboard/ns/{ns}/analytics")
    assert ns_page.status_code == 200
    rows = re.findall(r'/r/([a-z]+)/analytics">[a-z]+</a></td><td>(\d+)</td>', ns_page.text)
    assert dict(rows).keys() == {"busy", "quiet"}
    assert int(dict(rows)["busy"]) >= 1
    # The busiest hour's bar is full height (its title names the count).
    titles = [int(n) for n in re.findall(r"<title>\d\d:00: (\d+)</title>", ns_page.text)]
    assert len(titles) == 24 and max(titles) >= 2


def test_cookies_are_secure_behind_an_https_public_url(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", extra_env={"ARTIFACTD_PUBLIC_URL": "https://dash.example"})
    try:
        form = httpx.get(server.url + "/dashboard/login")
        assert "Secure" in form.headers["set-cookie"]
        # httpx keeps a Secure cookie for https only: send it by hand over this plain http.
        r = httpx.post(server.url + "/dashboard/login", cookies={"artifactd_login": form.cookies["artifactd_login"]},
                       data={"csrf": csrf_of(form.text), "token": server.token})
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE))
        assert "Secure" in cookie and "HttpOnly" in cookie
    finally:
        server.stop()


def test_repo_search_is_a_name_prefix_in_name_order(server: Server, unique_name: str) -> None:
    sqlite_server = server  # both databases: the range must be exact under each collation
    ns = _ns(unique_name)
    for name in ("alpha-2", "alpha-1", "beta-alpha", "a_b", "axb", "alpha.z", "Alpha-3"):
        _create(sqlite_server, ns, name)
    client = signed_in(sqlite_server)

    def names(query: str) -> list[str]:
        r = client.get(f"/dashboard/ns/{ns}?{query}")
        assert r.status_code == 200, r.text
        return re.findall(r'<td><a href="[^"]+">([^<]+)</a>', r.text)

    assert names("search=alpha") == ["alpha-1", "alpha-2", "alpha.z"]
    assert names("search=alpha&direction=desc") == ["alpha.z", "alpha-2", "alpha-1"]
    assert names("search=a_") == ["a_b"]  # no wildcard: '_' is itself
    assert names("search=%25") == []
    assert names("search=Alpha") == ["Alpha-3"]
    r = client.get(f"/dashboard/ns/{ns}?search=alpha&cursor=forged")
    assert r.status_code == 400 and "cursor" in r.text
    r = client.get(f"/dashboard/ns/{ns}?search=" + "a" * 65)
    assert r.status_code == 400 and "search" in r.text


def test_merge_form_refuses_a_moved_target_a_conflict_and_bad_fields(
        sqlite_server: Server, unique_name: str, tmp_path: Path) -> None:
    server = sqlite_server
    parent_name, fork_name = "mg-" + unique_name[-6:], "mg-" + unique_name[-6:] + "-f"
    git = Git(tmp_path / "home")
    parent = create_repo(server, parent_name)
    pwork = tmp_path / "p"
    git.new_work(pwork, {"a.txt": "base\n"})
    push(git, parent, pwork, "HEAD:refs/heads/main")
    with server.client() as c:
        made = c.post(f"/repos/{parent_name}/fork", json={"name": fork_name}).json()["result"]
    fork = Repo(server, fork_name, made["id"], made["remote"], made["token"])
    fwork = tmp_path / "f"
    git.run("-c", bearer(fork.token), "clone", "-q", fork.remote, str(fwork))
    git.commit_files(fwork, {"a.txt": "fork\n"}, "Fork edits a")
    push(git, fork, fwork, "HEAD:refs/heads/main")
    client = signed_in(server)
    page = client.get(f"/dashboard/ns/default/r/{fork_name}/compare")
    assert page.status_code == 200 and "Merges cleanly" in page.text
    compared = re.search(r'name="expected_head" value="([0-9a-f]{40})"', page.text)
    assert compared
    form = {"csrf": csrf_of(page.text), "head": f"{fork_name}:main", "target": "main",
            "expected_head": compared.group(1)}
    # The parent moves (an edit of the same line) after the page was shown.
    git.commit_files(pwork, {"a.txt": "parent\n"}, "Parent edits a")
    push(git, parent, pwork, "HEAD:refs/heads/main")
    moved = git.out("rev-parse", "HEAD", cwd=pwork)
    merge_url = f"/dashboard/ns/default/r/{parent_name}/merge"
    r = client.post(merge_url, data=form)
    assert r.status_code == 409 and "expected_head" in r.text
    for bad, status, text in (({"expected_head": ""}, 400, "compared with"),
                              ({"head": "../x:main"}, 400, "head"),
                              ({"strategy": "octopus"}, 400, "strategy")):
        r = client.post(merge_url, data={**form, "expected_head": moved, **bad})
        assert r.status_code == status and text in r.text, (bad, r.status_code, r.text[-500:])
    # Compared again, the page names the conflict and offers no merge form.
    page = client.get(f"/dashboard/ns/default/r/{fork_name}/compare")
    assert "Conflicts in 1 file(s)" in page.text and "a.txt" in page.text
    assert 'action="/dashboard/ns/default/r/' + parent_name + '/merge"' not in page.text
    r = client.post(merge_url, data={**form, "expected_head": moved})
    assert r.status_code == 409 and "conflict" in r.text.lower()
    listed = git.out("-c", bearer(parent.token), "ls-remote", parent.remote, "refs/heads/main")
    assert listed.split() == [moved, "refs/heads/main"]  # nothing was merged
