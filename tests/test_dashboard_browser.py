"""The dashboard in a real browser (Debian's chromium, headless, driven by Playwright) against a
real server: sign in, create, push with the git CLI, browse, diff, tokens, fork, delete, and
hostile names and contents that must render as text. Screenshots go to a temp directory
(printed); a few of them are kept in docs/ (dashboard-*.png)."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.dashboardutil import CHROMIUM, chromium
from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Server, start_server
from tests.seed import push
from tests.test_event_stream import Receiver, _reply


@pytest.fixture(autouse=True, scope="module")
def _chromium_installed() -> None:
    # A missing browser fails the tests, never skips them (Debian: apt-get install chromium).
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is not installed: the dashboard tests need Debian's chromium")

XSS = "<script>window.__xss=1</script>\"><img src=x onerror=\"window.__xss=2\">"
RLO = "\u202e"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("ARTIFACTD_TEST_ARTIFACTS") or tmp_path_factory.mktemp("dashboard-shots"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots in {path}")
    return path


def new_page(browser: Any, server: Server, token: str, width: int = 1100) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    page.goto(server.url + "/")  # `/` redirects to the dashboard, which asks for a sign-in
    assert page.url.startswith(server.url + "/dashboard/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(server.url + "/dashboard")
    return page


def assert_labelled(page: Any) -> None:
    """Every form control has a label (or an aria-label), for screen readers and keyboards."""
    unlabelled = page.evaluate("""[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)""")
    assert unlabelled == [], page.url
    assert page.evaluate("[...document.querySelectorAll('button')].filter(b => !b.innerText.trim() && !b.getAttribute('aria-label')).length") == 0


def tab(page: Any, name: str) -> None:
    page.get_by_role("navigation", name="Repo").get_by_role("link", name=name, exact=True).click()


def test_sign_in_create_push_browse_tokens_fork_delete(browser: Any, sqlite_server: Server,
                                                     unique_name: str, tmp_path: Path, shots: Path) -> None:
    server, ns, name = sqlite_server, "ui-" + unique_name[-6:], "demo"
    page = new_page(browser, server, server.token)
    assert_labelled(page)
    # Create a repo from the namespaces page.
    page.get_by_label("Namespace").fill(ns)
    page.get_by_label("Repo name").fill(name)
    page.get_by_label("Description").fill("A repo made in the browser")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(rf".*/dashboard/ns/{ns}/r/{name}$"))
    remote = page.locator("#remote").inner_text()
    assert remote.endswith(f"/{ns}/{name}.git")
    # Mint a write token in the Tokens tab: shown once, then push with it from the git CLI.
    tab(page, "Tokens")
    page.get_by_label("Scope").select_option("write")
    page.get_by_label("Lifetime (seconds)").fill("3600")
    page.get_by_role("button", name="Mint").click()
    token = page.locator("#minted").inner_text().strip()
    assert_labelled(page)
    assert token.startswith("art_v1_")
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"README.md": "# Demo\n\nHello from the browser test.\n",
                        "src/app.py": "def main() -> None:\n    print('hello')\n"}, message="First commit")
    git.commit_files(work, {"src/app.py": "def main() -> None:\n    print('hello, world')\n"}, "Say hello, world")
    push(git, Repo(server, name, "", remote, token, ns), work, "HEAD:refs/heads/main")
    # Browse: the repo page lists the files; open one, highlighted.
    tab(page, "Overview")
    page.get_by_role("link", name="src/").click()
    page.get_by_role("link", name="app.py").click()
    assert "print" in page.locator(".source").inner_text()
    assert page.locator(".source .hl").count() == 1  # pygments markup
    page.screenshot(path=str(shots / "file.png"))
    # The commit log and a commit's diff.
    tab(page, "Commits")
    page.get_by_role("link", name=re.compile(r"^[0-9a-f]{12}$")).first.click()
    assert page.locator(".diff .add").filter(has_text="hello, world").count() == 1
    assert page.locator(".diff .del").filter(has_text="print('hello')").count() == 1
    page.screenshot(path=str(shots / "commit.png"), full_page=True)
    # Revoke the token: it is listed as revoked and git is refused with it.
    tab(page, "Tokens")
    page.get_by_role("button", name=re.compile("^Revoke token")).first.click()
    page.get_by_role("link", name="revoked").click()
    assert page.locator("table.tokens tbody tr").filter(has_text="revoked").count() >= 1
    refused = git.run("-c", bearer(token), "ls-remote", remote, check=False)
    assert refused.returncode != 0
    # Fork: the fork names its parent.
    tab(page, "Overview")
    page.get_by_label("New repo name").fill("demo-fork")
    page.get_by_role("button", name="Fork").click()
    page.wait_for_url(re.compile(r".*/r/demo-fork$"))
    assert page.get_by_role("link", name=f"{ns}/{name}").count() == 1
    fork_url = page.url
    page.get_by_role("link", name=f"{ns}/{name}").click()  # the parent lists its forks
    assert page.locator("dl.facts dd").get_by_role("link", name="demo-fork", exact=True).count() == 1
    assert "Hello from the browser test." in page.locator(".readme").inner_text()
    page.goto(fork_url)
    page.screenshot(path=str(shots / "repo.png"), full_page=True)
    assert_labelled(page)
    # Delete asks for the name: a wrong one changes nothing, the right one deletes.
    page.get_by_label("to confirm").fill("demo")
    page.get_by_role("button", name="Delete this repo").click()
    assert "type its name exactly" in page.locator("main").inner_text()
    page.go_back()
    page.get_by_label("to confirm").fill("demo-fork")
    page.get_by_role("button", name="Delete this repo").click()
    page.wait_for_url(re.compile(rf".*/dashboard/ns/{ns}$"))
    assert_labelled(page)
    names = page.locator("table.repos tbody td:first-child a").all_inner_texts()
    assert names == [name]
    page.screenshot(path=str(shots / "repos.png"))
    # A phone-width view of the repo list has no horizontal scroll.
    phone = page.context.browser.new_context(viewport={"width": 380, "height": 800},
                                             storage_state=page.context.storage_state())
    small = phone.new_page()
    small.goto(page.url)
    assert small.evaluate("document.documentElement.scrollWidth") <= 380
    phone.close()
    assert page.dialogs == []
    page.context.close()


def test_hostile_names_and_contents_render_as_text(browser: Any, sqlite_server: Server,
                                                   unique_name: str, tmp_path: Path) -> None:
    server = sqlite_server
    ns = "xss-" + unique_name[-6:]
    with server.client() as c:
        r = c.post(server.ns_url(ns) + "/repos", json={"name": "hostile", "description": XSS + RLO + "gpj.exe"})
        assert r.status_code == 200, r.text
        created = r.json()["result"]
    repo = Repo(server, "hostile", created["id"], created["remote"], created["token"], ns)
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    evil_file = f"\"><img src=x onerror=alert(1)>{RLO}txt.js"
    git.new_work(work, {
        evil_file: XSS + "\n",
        "page.html": "<html><body><script>alert('raw')</script></body></html>\n",
        "long.txt": "x" * (10 << 20) + "\n",
        "data.bin": bytes(range(256)) * 4,
    }, message=XSS + "\n\njavascript:alert(1)")
    git.run("branch", "<script>alert(1)</script>", cwd=work)
    push(git, repo, work, "HEAD:refs/heads/main", "refs/heads/*:refs/heads/*")
    page = new_page(browser, server, server.token)
    base = f"{server.url}/dashboard/ns/{ns}/r/hostile"
    urls = [f"{server.url}/dashboard/ns/{ns}"] + [base + tail for tail in (
        "", "/refs", "/log", "/tree", "/file?path=" + quote(evil_file), "/file?path=page.html",
        "/file?path=long.txt", "/file?path=data.bin",
        "/compare?base=main&head=" + quote("<script>alert(1)</script>"))]
    for url in urls:
        page.goto(url)
        assert page.evaluate("window.__xss") is None, url
        # The only scripts are the dashboard's own; no element carries an event handler.
        scripts = page.evaluate("[...document.scripts].map(s => s.src)")
        assert scripts == [server.url + "/dashboard/static/dashboard.js"], url
        assert page.evaluate("document.querySelectorAll('[onerror],[onload],[onclick]').length") == 0, url
        # Bidi overrides are shown as escapes, never applied to the text.
        assert RLO not in page.locator("body").inner_text(), url
        assert page.evaluate("[...document.links].filter(a => a.protocol === 'javascript:').length") == 0, url
    page.goto(base + "/log")
    assert "<script>window.__xss=1</script>" in page.locator("ol.log").inner_text()
    page.get_by_role("link", name=re.compile(r"^[0-9a-f]{12}$")).first.click()
    assert "onerror" in page.locator(".diff").first.inner_text()
    page.goto(base + "/file?path=long.txt")
    assert "download it" in page.locator("main").inner_text()
    page.goto(base + "/file?path=data.bin")
    assert "download it" in page.locator("main").inner_text()
    # The raw page of an HTML file is not a document of this origin: sandboxed, inert type.
    raw = page.request.get(base + "/raw?path=page.html")
    assert raw.headers["content-type"].startswith("text/plain")
    assert "sandbox" in raw.headers["content-security-policy"]
    # A path with `..` is an error page that says so.
    page.goto(base + "/file?path=../../etc/passwd")
    assert "'..'" in page.locator("main").inner_text()
    assert page.dialogs == []
    page.context.close()


def test_read_token_sees_no_write_buttons(browser: Any, sqlite_server: Server, unique_name: str) -> None:
    server = sqlite_server
    ns = "ro-" + unique_name[-6:]
    with server.client() as c:
        assert c.post(server.ns_url(ns) + "/repos", json={"name": "seen"}).status_code == 200
    page = new_page(browser, server, server.read_token)
    with server.client() as c:
        sub = c.post(server.account_url + "/subscriptions", json={
            "name": "seen-sub", "source": {"type": "artifacts"}, "destination": {"type": "queue"}})
        assert sub.status_code == 201, sub.text
    for path in ("/dashboard", f"/dashboard/ns/{ns}", f"/dashboard/ns/{ns}/r/seen", f"/dashboard/ns/{ns}/r/seen/tokens",
                 "/dashboard/subscriptions", "/dashboard/subscriptions/" + sub.json()["result"]["id"]):
        page.goto(server.url + path)
        buttons = page.locator("main button").all_inner_texts()
        assert [b for b in buttons if b not in ("Apply", "Copy", "Compare")] == [], (path, buttons)
        assert page.locator("main form[method=post]").count() == 0, path
    page.context.close()


def test_fork_push_compare_merge_shows_on_parent(browser: Any, sqlite_server: Server,
                                                  unique_name: str, tmp_path: Path, shots: Path) -> None:
    server = sqlite_server
    parent_name, fork_name = "cm-" + unique_name[-6:], "cm-" + unique_name[-6:] + "-f"
    git = Git(tmp_path / "home")
    parent = create_repo(server, parent_name)
    push(git, parent, _work(git, tmp_path / "p", {"notes.txt": "one\n"}), "HEAD:refs/heads/main")
    with server.client() as c:
        r = c.post(f"/repos/{parent_name}/fork", json={"name": fork_name})
        assert r.status_code == 200, r.text
        made = r.json()["result"]
    fork = Repo(server, fork_name, made["id"], made["remote"], made["token"])
    work = tmp_path / "f"
    git.run("-c", bearer(fork.token), "clone", "-q", fork.remote, str(work))
    git.commit_files(work, {"notes.txt": "one\ntwo from the fork\n"}, "The fork adds a line")
    push(git, fork, work, "HEAD:refs/heads/main")
    page = new_page(browser, server, server.token)
    base = f"{server.url}/dashboard/ns/default/r/"
    page.goto(base + fork_name)
    page.get_by_role("link", name="Compare with the parent and merge").click()
    assert page.locator("#ahead-behind").inner_text() == "1 ahead, 0 behind"
    assert "The fork adds a line" in page.locator("ol.commits").inner_text()
    assert page.locator(".diff .add").filter(has_text="two from the fork").count() == 1
    assert "Merges cleanly" in page.locator("#merge-state").inner_text()
    assert_labelled(page)
    page.screenshot(path=str(shots / "compare.png"), full_page=True)
    page.get_by_label("Strategy").select_option("merge")
    page.get_by_role("button", name="Merge").click()
    page.wait_for_url(re.compile(rf".*/r/{parent_name}/commit/[0-9a-f]{{40}}$"))
    assert f"Merge {fork_name}:main into main" in page.locator("pre.message").inner_text()
    page.goto(base + parent_name + "/file?path=notes.txt")
    assert "two from the fork" in page.locator(".source").inner_text()
    # Compared again, nothing is left to merge, and the form is gone.
    page.goto(base + fork_name + "/compare")
    assert "Nothing to merge" in page.locator("#merge-state").inner_text()
    assert page.get_by_role("button", name="Merge").count() == 0
    # A read token sees the comparison but no merge button.
    git.commit_files(work, {"notes.txt": "one\ntwo from the fork\nthree\n"}, "And a third")
    push(git, fork, work, "HEAD:refs/heads/main")
    reader = new_page(browser, server, server.read_token)
    reader.goto(base + fork_name + "/compare")
    assert "Merges cleanly" in reader.locator("#merge-state").inner_text()
    assert reader.get_by_role("button", name="Merge").count() == 0
    reader.context.close()
    assert page.dialogs == []
    page.context.close()


def _work(git: Git, work: Path, files: dict[str, str | bytes]) -> Path:
    git.new_work(work, files)
    return work


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("dash-hooks"), extra_env={
        "ARTIFACTD_WEBHOOK_ALLOW_HOSTS": "127.0.0.1", "ARTIFACTD_WEBHOOK_RETRY_BASE": "0.2",
        "ARTIFACTD_WEBHOOK_TIMEOUT": "1"})
    yield server
    server.stop()


def test_subscriptions_and_delivery_log(browser: Any, hooks_server: Server, unique_name: str,
                                        shots: Path) -> None:
    server = hooks_server
    name = "hook " + unique_name[-6:] + XSS
    receiver = Receiver()
    receiver.answer = lambda h: _reply(h, 500, XSS.encode())
    try:
        page = new_page(browser, server, server.token)
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
        assert_labelled(page)
        page.get_by_label("Name", exact=True).fill(name)
        page.get_by_label("Namespace").fill("default")
        page.get_by_label("Event types").fill("cf.artifacts.repo.created")
        page.get_by_label("Destination").select_option("webhook")
        page.get_by_label("Webhook URL").fill(receiver.url)
        page.get_by_role("button", name="Subscribe").click()
        assert page.locator("#secret").inner_text().startswith("whsec_")  # shown once
        page.get_by_role("link", name=name).first.click()
        assert "No deliveries yet." in page.locator("table.deliveries").inner_text()
        with server.client() as c:
            assert c.post("/repos", json={"name": "hooked-" + unique_name[-6:]}).status_code == 200
        # The receiver answers 500: the failed attempt is in the log, its body shown as text.
        for _ in range(100):
            page.reload()
            if page.locator("table.deliveries .status.failed").count():
                break
            page.wait_for_timeout(200)
        row = page.locator("table.deliveries tbody tr").first
        assert "failed" in row.inner_text() and "500" in row.inner_text()
        assert "<script>" in row.inner_text()
        assert page.evaluate("window.__xss") is None
        assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
        assert_labelled(page)
        page.get_by_role("button", name="Pause").click()
        assert "paused" in page.locator("h1 .status").inner_text()
        receiver.answer = lambda h: _reply(h, 204)
        page.get_by_role("button", name="Resume").click()
        assert "active" in page.locator("h1 .status").inner_text()
        for _ in range(100):
            page.reload()
            if page.locator("table.deliveries .status.ready").count():
                break
            page.wait_for_timeout(200)
        assert "delivered" in page.locator("table.deliveries tbody tr").first.inner_text()
        page.screenshot(path=str(shots / "subscription.png"), full_page=True)
        assert page.evaluate("document.documentElement.scrollWidth") <= 1100  # a long name wraps
        page.get_by_label("to confirm").fill(name)
        page.get_by_role("button", name="Delete this subscription").click()
        page.wait_for_url(server.url + "/dashboard/subscriptions")
        assert page.get_by_role("link", name=name).count() == 0
        page.context.close()
    finally:
        receiver.stop()


def _session_cookie(page: Any) -> dict[str, Any]:
    return next(c for c in page.context.cookies() if c["name"] == "artifactd_session")


def _repo_exists(server: Server, ns: str, name: str) -> bool:
    with server.client() as c:
        return c.get(server.ns_url(ns) + f"/repos/{name}").status_code == 200


def test_cross_site_forged_tampered_and_expired_sessions_change_nothing(
        browser: Any, sqlite_server: Server, unique_name: str) -> None:
    server, ns = sqlite_server, "sec-" + unique_name[-6:]
    with server.client() as c:
        assert c.post(server.ns_url(ns) + "/repos", json={"name": "keep"}).status_code == 200
    page = new_page(browser, server, server.token)
    delete_url = f"{server.url}/dashboard/ns/{ns}/r/keep/delete"
    # Another site's page posts the delete form on load: the browser sends no cookie with it
    # (SameSite=Strict) and the form has no CSRF token; an error page, the repo stays.
    evil = (f'<form id="f" method="post" action="{delete_url}"><input name="confirm" value="keep">'
            '</form><script>document.getElementById("f").submit()</script>')
    page.route("http://evil.example/**", lambda route: route.fulfill(body=evil, content_type="text/html"))
    page.goto("http://evil.example/")
    page.wait_for_url(delete_url)
    assert "sign in again" in page.locator("main").inner_text()
    assert _repo_exists(server, ns, "keep")
    # The dashboard's own delete form with its CSRF field taken out: refused, nothing changed.
    page.goto(f"{server.url}/dashboard/ns/{ns}/r/keep")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    page.get_by_label("to confirm").fill("keep")
    page.get_by_role("button", name="Delete this repo").click()
    assert "CSRF" in page.locator("main").inner_text()
    assert _repo_exists(server, ns, "keep")
    # A tampered cookie is no session: the sign-in page, and the session is still good after.
    good = _session_cookie(page)
    page.context.add_cookies([{**good, "value": good["value"][:-3] + ("xyz" if good["value"][-3:] != "xyz" else "abc")}])
    page.goto(f"{server.url}/dashboard/ns/{ns}")
    assert page.url.startswith(server.url + "/dashboard/login")
    assert page.get_by_label("API token").count() == 1
    page.context.add_cookies([good])
    page.goto(f"{server.url}/dashboard/ns/{ns}")
    assert page.url == f"{server.url}/dashboard/ns/{ns}"
    # The server expires the session (its clock, not the browser's): the sign-in page again,
    # which sends the reader back after signing in.
    id_hash = hashlib.sha256(good["value"].encode()).hexdigest()
    db = sqlite3.connect(server.data_dir / "artifactd.db", timeout=30)
    try:
        db.execute("UPDATE dashboard_sessions SET expires_us = 1 WHERE id_hash = ?", (id_hash,))
        db.commit()
    finally:
        db.close()
    page.reload()
    assert page.url.startswith(server.url + "/dashboard/login?next=")
    page.get_by_label("API token").fill(server.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/dashboard/ns/{ns}")
    assert page.dialogs == []
    page.context.close()


def test_keyboard_only_and_phone_width(browser: Any, sqlite_server: Server, unique_name: str,
                                       tmp_path: Path, shots: Path) -> None:
    server, ns = sqlite_server, "kb-" + unique_name[-6:]
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server.url + "/dashboard/login")
    # The token field has the focus (autofocus, which Chromium applies a moment after the
    # load: keys typed before that are lost); Enter submits.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.type(server.token)
    page.keyboard.press("Enter")
    page.wait_for_url(server.url + "/dashboard")
    # The first Tab reaches the skip link, which moves to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    # Every control is reachable with Tab, and shows where the focus is.
    reached: list[str] = []
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate("""(() => { const e = document.activeElement;
            const s = getComputedStyle(e);
            return [e.id || e.getAttribute('href') || e.textContent.trim(), s.outlineStyle]; })()""")
        reached.append(focused[0])
        assert focused[1] != "none", focused
        if focused[0] == "rn":
            break
    assert reached[-1] == "rn", reached
    page.keyboard.type("typed")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Control+a")
    page.keyboard.type(ns)
    page.keyboard.press("Enter")  # submits the create form
    page.wait_for_url(re.compile(rf".*/dashboard/ns/{ns}/r/typed$"))
    git = Git(tmp_path / "home")
    with server.client() as c:
        made = c.get(server.ns_url(ns) + "/repos/typed").json()["result"]
        minted = c.post(server.ns_url(ns) + "/tokens", json={"repo": "typed", "scope": "write"}).json()["result"]
    work = tmp_path / "work"
    git.new_work(work, {"README.md": "# typed\n", "src/wide.py": "x = '" + "w" * 400 + "'\n"})
    push(git, Repo(server, "typed", made["id"], made["remote"], minted["plaintext"], ns), work,
         "HEAD:refs/heads/main")
    # At a phone's width no page scrolls sideways (wide code scrolls inside its own box).
    phone = browser.new_context(viewport={"width": 380, "height": 800}, storage_state=context.storage_state())
    small = phone.new_page()
    base = f"{server.url}/dashboard/ns/{ns}/r/typed"
    for url in (server.url + "/dashboard", f"{server.url}/dashboard/ns/{ns}", base, base + "/tree",
                base + "/file?path=src/wide.py", base + "/log", base + "/refs", base + "/tokens",
                base + "/compare", base + "/analytics", server.url + "/dashboard/subscriptions"):
        small.goto(url)
        assert small.evaluate("document.documentElement.scrollWidth") <= 380, url
        assert_labelled(small)
    small.goto(base)
    small.screenshot(path=str(shots / "phone-repo.png"), full_page=True)
    phone.close()
    context.close()
