"""Imports against real servers, from a local ``git http-backend`` (there is no internet here).

The importing servers admit 127.0.0.1 and ::1 through ``ARTIFACTD_IMPORT_ALLOW_HOSTS``; the
refusal tests run on the shared server, whose allowlist is empty, and prove each refusal.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitsource import GitSource
from tests.gitutil import Git, Repo, bearer
from tests.harness import Server, start_server
from tests.seed import clone
from tests.test_control_plane import TOKEN, assert_token_expiry, envelope_error

ALLOW = "127.0.0.1,::1"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitSource]:
    base = tmp_path_factory.mktemp("upstream")
    git = Git(base / "home")
    src = GitSource(base / "root")
    work = base / "work"
    git.new_work(work, {"README.md": "# upstream\n"})
    for i in range(4):
        git.commit_files(work, {"n.txt": f"{i}\n"}, f"commit {i}")
    git.run("tag", "-a", "v1", "-m", "v1", cwd=work)
    git.run("tag", "light", "HEAD~2", cwd=work)
    git.run("checkout", "-q", "-b", "dev", cwd=work)
    git.commit_files(work, {"dev.txt": "dev\n"}, "dev work")
    git.run("checkout", "-q", "main", cwd=work)
    for name in ("upstream", "slow", "flaky", "restart", "crash"):
        git.run("clone", "-q", "--bare", str(work), str(src.root / f"{name}.git"))
    git.run("clone", "-q", "--bare", str(work), str(src.root / "trunky.git"))
    git.run("branch", "-m", "main", "trunk", cwd=src.root / "trunky.git")
    git.run("symbolic-ref", "HEAD", "refs/heads/trunk", cwd=src.root / "trunky.git")
    git.run("init", "-q", "--bare", str(src.root / "empty.git"))
    big = base / "big-work"
    git.new_work(big, {"blob.bin": os.urandom(600_000)})
    git.run("clone", "-q", "--bare", str(big), str(src.root / "big.git"))
    src.start()
    yield src
    src.stop()


@pytest.fixture(scope="module")
def importer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("importer"),
                          extra_env={"ARTIFACTD_IMPORT_ALLOW_HOSTS": ALLOW})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def git(tmp_path_factory: pytest.TempPathFactory) -> Git:
    return Git(tmp_path_factory.mktemp("import-git-home"))


def start_import(server: Server, name: str, url: str, **fields: object) -> dict:
    with server.client() as c:
        r = c.post(f"/repos/{name}/import", json={"url": url, **fields})
        assert r.status_code == 200, r.text
        return dict(r.json()["result"])


def wait_done(server: Server, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while time.monotonic() < deadline:
            info = c.get(f"/repos/{name}").json()["result"]
            if info["status"] != "importing":
                return dict(info)
            time.sleep(0.1)
    raise AssertionError(f"{name} still importing after {timeout}s:\n{server.log_text()[-3000:]}")


def as_repo(server: Server, result: dict) -> Repo:
    return Repo(server, result["name"], result["id"], result["remote"], result["token"])


def upstream_refs(source: GitSource, name: str) -> dict[str, str]:
    out = subprocess.run(["git", f"--git-dir={source.root / (name + '.git')}", "for-each-ref",
                          "--format=%(objectname) %(refname)"], capture_output=True, text=True,
                         check=True).stdout
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines())}


# -- success ---------------------------------------------------------------------------------


def test_full_import(importer: Server, source: GitSource, git: Git, tmp_path: Path,
                     unique_name: str) -> None:
    url = f"{source.url}/upstream.git"
    result = start_import(importer, unique_name, url)
    assert set(result) == {"id", "name", "description", "default_branch", "remote", "token",
                           "expires_at"}
    assert_token_expiry(result)
    assert result["default_branch"] == "main" and TOKEN.fullmatch(result["token"])
    info = wait_done(importer, unique_name)
    assert info["status"] == "ready" and info["status_reason"] is None, info
    assert info["source"] == url and info["size"] > 0
    repo = as_repo(importer, result)
    assert repo.refs() == upstream_refs(source, "upstream")  # every branch and tag
    repo.fsck()
    dest = clone(git, repo, tmp_path / "clone")
    assert git.out("log", "-1", "--format=%s", cwd=dest) == "commit 3"
    with importer.client() as c:
        log = c.get(f"/repos/{unique_name}/log").json()["result"]
        assert len(log) == 5
        assert c.get(f"/repos/{unique_name}/file", params={"ref": "dev", "path": "dev.txt"}).content == b"dev\n"
        # An imported repo forks like any other.
        forked = c.post(f"/repos/{unique_name}/fork", json={"name": f"{unique_name}-fork"})
        assert forked.status_code == 200, forked.text
    # The import is an ordinary repo now: pushes work.
    git.commit_files(dest, {"local.txt": "x\n"}, "after import")
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "HEAD:main", cwd=dest)


def test_branch_import(importer: Server, source: GitSource, git: Git, tmp_path: Path,
                       unique_name: str) -> None:
    result = start_import(importer, unique_name, f"{source.url}/upstream.git", branch="dev",
                          read_only=True, description="dev only")
    assert result["default_branch"] == "dev" and result["description"] == "dev only"
    info = wait_done(importer, unique_name)
    assert info["status"] == "ready" and info["default_branch"] == "dev" and info["read_only"] is True
    repo = as_repo(importer, result)
    assert repo.refs() == {"refs/heads/dev": upstream_refs(source, "upstream")["refs/heads/dev"]}
    dest = clone(git, repo, tmp_path / "clone")
    assert git.out("rev-parse", "--abbrev-ref", "HEAD", cwd=dest) == "dev"
    pushed = git.run("-c", bearer(repo.token), "push", repo.remote, "HEAD:dev", cwd=dest, check=False)
    assert pushed.returncode != 0  # read_only


def test_depth_import(importer: Server, source: GitSource, git: Git, tmp_path: Path,
                      unique_name: str) -> None:
    result = start_import(importer, unique_name, f"{source.url}/upstream.git", branch="main", depth=2)
    assert wait_done(importer, unique_name)["status"] == "ready"
    repo = as_repo(importer, result)
    assert (repo.git_dir / "shallow").is_file()
    with importer.client() as c:
        log = c.get(f"/repos/{unique_name}/log").json()["result"]
        assert [x["message"] for x in log] == ["commit 3\n", "commit 2\n"]
    dest = clone(git, repo, tmp_path / "clone")
    assert git.out("rev-list", "--count", "HEAD", cwd=dest) == "2"


def test_remote_default_branch_and_empty_remote(importer: Server, source: GitSource,
                                                unique_name: str) -> None:
    result = start_import(importer, unique_name, f"{source.url}/trunky.git")
    assert result["default_branch"] == "trunk"
    assert wait_done(importer, unique_name)["default_branch"] == "trunk"
    empty = start_import(importer, f"{unique_name}-e", f"{source.url}/empty.git")
    info = wait_done(importer, f"{unique_name}-e")
    assert info["status"] == "ready" and empty["default_branch"] == "main"
    with importer.client() as c:
        envelope_error(c.get(f"/repos/{unique_name}-e/log"), 404, 11201)


def test_hostname_source_is_pinned_to_a_checked_address(importer: Server, source: GitSource,
                                                        unique_name: str) -> None:
    """``localhost`` resolves to allowed addresses only; git is pinned with curloptResolve."""
    result = start_import(importer, unique_name, f"http://localhost:{source.port}/upstream.git/")
    info = wait_done(importer, unique_name)
    assert info["status"] == "ready", info
    assert as_repo(importer, result).refs() == upstream_refs(source, "upstream")


# -- in progress, failure, retry -------------------------------------------------------------


def test_conflict_while_importing(importer: Server, source: GitSource, git: Git, tmp_path: Path,
                                  unique_name: str) -> None:
    source.hold("slow")
    try:
        result = start_import(importer, unique_name, f"{source.url}/slow.git")
        with importer.client() as c:
            assert c.get(f"/repos/{unique_name}").json()["result"]["status"] == "importing"
            listed = c.get("/repos", params={"search": unique_name}).json()["result"]
            assert [(r["name"], r["status"]) for r in listed] == [(unique_name, "importing")]
            for path in ("log", "commit/" + "a" * 40, "tree/" + "a" * 40, "blob/" + "a" * 40,
                         "file?path=README.md", "raw/main/README.md"):
                err = envelope_error(c.get(f"/repos/{unique_name}/{path}"), 409, 10302)
                assert err["retriable"] is True and "importing" in err["message"]
            err = envelope_error(c.post(f"/repos/{unique_name}/fork", json={"name": f"{unique_name}-f"}),
                                 409, 10302)
            assert err["retriable"] is True
            again = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/slow.git"})
            assert envelope_error(again, 409, 10302)["retriable"] is True
        cloned = git.run("-c", bearer(result["token"]), "clone", result["remote"],
                         str(tmp_path / "early"), check=False)
        assert cloned.returncode != 0
    finally:
        source.release("slow")
    assert wait_done(importer, unique_name)["status"] == "ready"
    with importer.client() as c:
        assert c.get(f"/repos/{unique_name}/log").status_code == 200


def test_failed_import_then_retry_and_delete(importer: Server, source: GitSource,
                                             unique_name: str) -> None:
    source.fail("flaky")
    try:
        first = start_import(importer, unique_name, f"{source.url}/flaky.git")
        info = wait_done(importer, unique_name)
    finally:
        source.fail("flaky", False)
    assert info["status"] == "failed" and "git fetch failed" in info["status_reason"], info
    with importer.client() as c:
        listed = c.get("/repos", params={"search": unique_name}).json()["result"]
        assert listed[0]["status"] == "failed" and listed[0]["status_reason"]
        err = envelope_error(c.get(f"/repos/{unique_name}/log"), 409, 11034)
        assert "retry the import" in err["message"]
        assert not list((importer.data_dir / "tmp").glob(f"import-{first['id']}-*"))
        # Retry: POST the import again to the same name.
        r = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/flaky.git",
                                                          "branch": "dev"})
        assert r.status_code == 200, r.text
        retried = r.json()["result"]
        assert retried["id"] == first["id"] and retried["token"] != first["token"]
        assert retried["default_branch"] == "dev"
        info = wait_done(importer, unique_name)
        assert info["status"] == "ready" and info["status_reason"] is None
        assert c.get(f"/repos/{unique_name}/log").status_code == 200
        # A ready repo is not re-imported.
        envelope_error(c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/flaky.git"}),
                       409, 10201)
    # A failed import can be deleted instead.
    source.fail("flaky")
    try:
        start_import(importer, f"{unique_name}-d", f"{source.url}/flaky.git")
        assert wait_done(importer, f"{unique_name}-d")["status"] == "failed"
    finally:
        source.fail("flaky", False)
    with importer.client() as c:
        assert c.delete(f"/repos/{unique_name}-d").status_code == 202
        envelope_error(c.get(f"/repos/{unique_name}-d"), 404, 10200)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a small storage cap and a short import time limit; tests restart it."""
    server = start_server(tmp_path_factory.mktemp("limited"), extra_env={
        "ARTIFACTD_IMPORT_ALLOW_HOSTS": ALLOW, "ARTIFACTD_MAX_REPO_BYTES": "300000",
        "ARTIFACTD_MAX_ACCOUNT_BYTES": "1000000", "ARTIFACTD_IMPORT_TIMEOUT": "5",
    })
    yield server
    server.stop()


def test_limits(limited: Server, source: GitSource, unique_name: str) -> None:
    """The per-repo storage cap and the time limit stop an import and mark it failed."""
    server = limited
    start_import(server, unique_name, f"{source.url}/big.git")
    info = wait_done(server, unique_name)
    assert info["status"] == "failed" and "storage limit" in info["status_reason"], info
    source.hold("slow")
    try:
        start_import(server, f"{unique_name}-t", f"{source.url}/slow.git")
        info = wait_done(server, f"{unique_name}-t")
    finally:
        source.release("slow")
    assert info["status"] == "failed" and "timed out" in info["status_reason"], info
    assert not list((server.data_dir / "tmp").glob("import-*"))


def test_fork_counts_against_storage_limits(limited: Server, tmp_path: Path, unique_name: str) -> None:
    """A fork is accounted its parent's bytes: forks stop when the account limit is reached."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"data.bin": os.urandom(250_000)})
    with limited.client() as c:
        created = c.post("/repos", json={"name": unique_name}).json()["result"]
        git.run("-c", bearer(created["token"]), "push", "-q", created["remote"], "main", cwd=work)
        statuses = [c.post(f"/repos/{unique_name}/fork", json={"name": f"{unique_name}-{i}"}).status_code
                    for i in range(4)]
        assert statuses[0] == 200 and statuses[-1] == 413, statuses
        refused = c.post(f"/repos/{unique_name}/fork", json={"name": f"{unique_name}-x"})
        envelope_error(refused, 413, 11070)
        envelope_error(c.get(f"/repos/{unique_name}-x"), 404, 10200)
        for i in range(4):  # free the account for the other tests on this server
            c.delete(f"/repos/{unique_name}-{i}")
        c.delete(f"/repos/{unique_name}")


# -- restarts --------------------------------------------------------------------------------


def test_restart_mid_import_resumes(limited: Server, source: GitSource, unique_name: str) -> None:
    server = limited
    try:
        source.hold("restart")
        result = start_import(server, unique_name, f"{source.url}/restart.git")
        deadline = time.monotonic() + 30
        while source.count("POST /restart.git/git-upload-pack") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop()  # SIGTERM while git fetch waits on the source
        probes_before = source.count("GET /restart.git/info/refs")
        source.release("restart")
        server.start()
        info = wait_done(server, unique_name)
        assert info["status"] == "ready", info
        assert source.count("GET /restart.git/info/refs") > probes_before  # it ran again
        repo = as_repo(server, result)
        assert repo.refs() == upstream_refs(source, "restart")
        repo.fsck()
        assert not list((server.data_dir / "tmp").glob("import-*"))
    finally:
        source.release("restart")


def test_crash_mid_import_then_source_gone_marks_failed(limited: Server, source: GitSource,
                                                        unique_name: str) -> None:
    server = limited
    try:
        source.hold("crash")
        start_import(server, unique_name, f"{source.url}/crash.git")
        assert server.process is not None
        server.process.kill()  # no shutdown hook runs: like a crash or OOM kill
        server.process.wait()
        source.pages["/crash.git/info/refs"] = (404, "text/plain", b"gone\n")
        server.start()
        info = wait_done(server, unique_name)
        assert info["status"] == "failed" and "not a git repository" in info["status_reason"], info
    finally:
        source.pages.pop("/crash.git/info/refs", None)
        source.release("crash")


# -- refusals: a clear 4xx, nothing created --------------------------------------------------


PRIVATE_TEST_HOST = "private-import.artifactd.test"  # .ci/run maps it to 10.255.255.1 in /etc/hosts


def _private_hostname() -> str | None:
    """A name that resolves only to private (non-loopback) addresses: the test host that
    .ci/run puts in /etc/hosts, else this machine's own name. Nothing ever connects to it:
    the import is refused when the name is resolved."""
    import ipaddress

    for name in (PRIVATE_TEST_HOST, socket.gethostname()):
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, 443)}
        except OSError:
            continue
        parsed = [ipaddress.ip_address(a.split("%")[0]) for a in addresses]
        if parsed and all(a.is_private and not a.is_loopback for a in parsed):
            return name
    return None


REFUSED = [
    "ftp://example.com/repo.git",
    "file:///etc",
    "file:///etc/passwd",
    "ext::sh -c id",
    "ext::sh -c touch% /tmp/pwned",
    "ssh://git@example.com/repo.git",
    "git://example.com/repo.git",
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/repo.git",
    "https://[::1]/",
    "https://169.254.169.254/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00:ec2::254]/",
    "https://100.100.100.200/",
    "https://10.1.2.3/repo.git",
    "https://192.168.0.1/repo.git",
    "https://172.16.0.1/repo.git",
    "https://0.0.0.0/",
    "https://2130706433/",  # 127.0.0.1 as one number
    "https://0x7f000001/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://localhost/repo.git",  # a host name that resolves to loopback
    "http://example.com/repo.git",  # plain http, host not on the allowlist
    "https://user:secret@example.com/repo.git",
]
INVALID = ["not a url", "example.com/repo.git", "https://", "https:///path", "https://exa mple.com/",
           "https://example.com:99999/x", "https://example.com/x?y=1", "https://example.com/x#f"]


@pytest.mark.parametrize("url", REFUSED)
def test_refused_urls(sqlite_server: Server, url: str, unique_name: str) -> None:
    with sqlite_server.client() as c:
        err = envelope_error(c.post(f"/repos/{unique_name}/import", json={"url": url}), 400, 11090)
        assert err["source"]["pointer"] == "/url"
        envelope_error(c.get(f"/repos/{unique_name}"), 404, 10200)


def test_private_hostname_refused(sqlite_server: Server, unique_name: str) -> None:
    name = _private_hostname()
    if name is None:
        pytest.skip("this machine's host name does not resolve to a private address")
    with sqlite_server.client() as c:
        err = envelope_error(c.post(f"/repos/{unique_name}/import",
                                    json={"url": f"https://{name}/repo.git"}), 400, 11090)
        assert "private" in err["message"]


@pytest.mark.parametrize("url", INVALID)
def test_invalid_urls(sqlite_server: Server, url: str, unique_name: str) -> None:
    with sqlite_server.client() as c:
        err = envelope_error(c.post(f"/repos/{unique_name}/import", json={"url": url}), 400)
        assert err["code"] in (10100, 10104) and err["source"]["pointer"] == "/url"
        envelope_error(c.get(f"/repos/{unique_name}"), 404, 10200)


def test_refused_redirects_and_non_git_sources(importer: Server, source: GitSource,
                                               unique_name: str) -> None:
    source.redirects["/to-metadata.git/"] = "https://169.254.169.254/x.git/"
    source.redirects["/to-private.git/"] = "http://10.0.0.7/x.git/"
    source.redirects["/to-file.git/"] = "file:///etc/x.git/"
    source.redirects["/to-elsewhere.git/"] = "http://127.0.0.1:1/not-git"
    source.redirects["/to-good.git/"] = f"{source.url}/upstream.git/"
    source.pages["/html.git/info/refs"] = (200, "text/html", b"<html>hi</html>")
    source.pages["/private.git/info/refs"] = (401, "text/plain", b"auth please")
    source.pages["/broken.git/info/refs"] = (200, "application/x-git-upload-pack-advertisement",
                                             b"garbage")
    cases = [
        ("/to-metadata.git", 11090), ("/to-private.git", 11090), ("/to-file.git", 11090),
        ("/to-elsewhere.git", 10104), ("/html.git", 10104), ("/private.git", 10106),
        ("/broken.git", 10104), ("/missing.git", 10200),
    ]
    with importer.client() as c:
        for path, code in cases:
            r = c.post(f"/repos/{unique_name}/import", json={"url": source.url + path})
            envelope_error(r, 400, code)
            envelope_error(c.get(f"/repos/{unique_name}"), 404, 10200)
        # The artifactd API itself is not a git repository either.
        r = c.post(f"/repos/{unique_name}/import", json={"url": importer.ns_url()})
        envelope_error(r, 400, 10200)
        # A nonexistent branch, and bad depths.
        r = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/upstream.git",
                                                          "branch": "nope"})
        assert envelope_error(r, 400, 11092)["source"]["pointer"] == "/branch"
        for depth in (0, -5, "3", 1.5, True, 2**40):
            r = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/upstream.git",
                                                              "depth": depth})
            assert envelope_error(r, 400, 10100)["source"]["pointer"] == "/depth"
        for body in ({}, {"url": 5}, {"url": f"{source.url}/upstream.git", "branch": "a..b"},
                     {"url": 5, "extra": 1}):
            envelope_error(c.post(f"/repos/{unique_name}/import", json=body), 400, 10100)
        envelope_error(c.post("/repos/bad name/import", json={"url": f"{source.url}/upstream.git"}),
                       400, 10101)
        envelope_error(c.get(f"/repos/{unique_name}"), 404, 10200)
        c.post("/repos", json={"name": f"{unique_name}-taken"})
        envelope_error(c.post(f"/repos/{unique_name}-taken/import",
                              json={"url": f"{source.url}/upstream.git"}), 409, 10201)
        # A redirect to an allowed git remote is followed.
        ok = c.post(f"/repos/{unique_name}/import", json={"url": f"{source.url}/to-good.git"})
        assert ok.status_code == 200, ok.text
    assert wait_done(importer, unique_name)["status"] == "ready"
    with importer.client(importer.read_token) as c:
        envelope_error(c.post(f"/repos/{unique_name}-r/import",
                              json={"url": f"{source.url}/upstream.git"}), 403, 11012)
