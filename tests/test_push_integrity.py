"""Push integrity under concurrency and failure (issue 18, defects 1-4; issue 12 item 1).

Every test drives real git pushes (or raw receive-pack requests) at a real server with low
limits, then compares what the server recorded with what is on its disk.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gitsource import GitSource
from tests.gitutil import (
    ZERO,
    Git,
    Repo,
    bearer,
    create_repo,
    object_files,
    pkt,
    wait_no_processes,
)
from tests.harness import Postgres, Server, start_server

MAX_REPO_BYTES = 250_000
MAX_ACCOUNT_BYTES = 600_000
BLOB = 100_000  # incompressible bytes per push: two fit in a repo, five in an account
# Hour-long windows, so that a test's burst almost never straddles two of them.
GIT_RATE = 40  # git requests per repo per hour (a push makes two)
CONTROL_RATE = 40  # control-plane requests per namespace per hour
WRITERS = 8


LIMITED_ENV = {
    "ARTIFACTD_MAX_REPO_BYTES": str(MAX_REPO_BYTES),
    "ARTIFACTD_MAX_ACCOUNT_BYTES": str(MAX_ACCOUNT_BYTES),
    "ARTIFACTD_MAINTENANCE_INTERVAL": "0",
    "ARTIFACTD_IMPORT_ALLOW_HOSTS": "127.0.0.1",
}


@pytest.fixture(scope="module")
def limited_pg(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Server]:
    """The same limits on PostgreSQL (row locks instead of SQLite's database lock)."""
    server = start_server(tmp_path_factory.mktemp("push-integrity-pg"),
                          database_url=postgres.new_database(), extra_env=LIMITED_ENV,
                          args=("--workers", "2"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def any_limited(request: pytest.FixtureRequest) -> Server:
    name = "limited" if request.param == "sqlite" else "limited_pg"
    server: Server = request.getfixturevalue(name)
    return server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("push-integrity"),
        extra_env={**LIMITED_ENV, "ARTIFACTD_RATE_LIMIT_GIT": f"{GIT_RATE}/1h",
                   "ARTIFACTD_RATE_LIMIT_CONTROL": f"{CONTROL_RATE}/1h"},
        args=("--workers", "2"),
    )
    yield server
    server.stop()


def disk_bytes(repo: Repo) -> int:
    """What the repo's objects take on disk (no push is running when this is called)."""
    return sum(f.stat().st_size for f in object_files(repo.git_dir)
               if not f.relative_to(repo.git_dir / "objects").parts[0].startswith("tmp_objdir-"))


def quarantines(repo: Repo) -> list[Path]:
    return list((repo.git_dir / "objects").glob("tmp_objdir-*"))


def account_client(server: Server, account: str, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/client/v4/accounts/{account}/artifacts/namespaces/default",
        headers={"Authorization": f"Bearer {token}"}, timeout=60,
    )


def new_account(server: Server) -> tuple[str, str]:
    account = os.urandom(16).hex()
    return account, server.new_api_token("edit", account=account)["token"]


def account_repo(server: Server, client: httpx.Client, name: str) -> Repo:
    r = client.post("/repos", json={"name": name})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    return Repo(server, name, result["id"], result["remote"], result["token"])


def prepared_pushes(tmp_path: Path, git: Git, targets: list[Repo]) -> list[list[str]]:
    """One work tree per push, each with its own ``BLOB`` incompressible bytes on a branch."""
    commands = []
    for i, repo in enumerate(targets):
        work = tmp_path / f"w{i}"
        git.new_work(work, {"blob.bin": os.urandom(BLOB)}, f"push {i}")
        commands.append(["git", "-C", str(work), "-c", "pack.compression=0", "-c",
                         bearer(repo.token), "push", "-q", repo.remote, f"HEAD:refs/heads/b{i}"])
    return commands


def push_all(git: Git, commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Start every push at once, then wait for all of them."""
    procs = [subprocess.Popen(c, env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in commands]
    results = []
    for proc, command in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def assert_recorded_matches_disk(repo: Repo, client: httpx.Client | None = None) -> dict[str, object]:
    if client is None:
        info = repo.info()
    else:
        r = client.get(f"/repos/{repo.name}")
        assert r.status_code == 200, r.text
        info = r.json()["result"]
    assert quarantines(repo) == []
    assert info["size"] == disk_bytes(repo), (info, disk_bytes(repo))
    return info


def test_concurrent_pushes_hold_the_repo_limit(any_limited: Server, tmp_path: Path) -> None:
    repo = create_repo(any_limited, "crowded")
    git = Git(tmp_path / "home")
    results = push_all(git, prepared_pushes(tmp_path, git, [repo] * WRITERS))
    accepted = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert 1 <= len(accepted) <= MAX_REPO_BYTES // BLOB, [r.stderr for r in results]
    assert all("Storage limit reached" in r.stderr or "maximum allowed size" in r.stderr
               for r in refused), [r.stderr for r in refused]
    info = assert_recorded_matches_disk(repo)
    assert int(str(info["size"])) <= MAX_REPO_BYTES
    assert len(repo.refs()) == len(accepted)  # a refused push moved no ref
    repo.fsck()


def test_concurrent_pushes_hold_the_account_limit(any_limited: Server, tmp_path: Path) -> None:
    account, token = new_account(any_limited)
    git = Git(tmp_path / "home")
    with account_client(any_limited, account, token) as client:
        targets = [account_repo(any_limited, client, f"share-{i}") for i in range(WRITERS)]
        results = push_all(git, prepared_pushes(tmp_path, git, targets))
        accepted = [r for r in results if r.returncode == 0]
        assert 1 <= len(accepted) <= MAX_ACCOUNT_BYTES // BLOB, [r.stderr for r in results]
        sizes = [int(str(assert_recorded_matches_disk(repo, client)["size"])) for repo in targets]
        assert sum(sizes) <= MAX_ACCOUNT_BYTES
        # Room left for a fork is what the running total says, not more: forks of a full
        # repo run together with one more round of pushes, and the total still holds.
        full = next(repo for repo, size in zip(targets, sizes, strict=True) if size > 0)
        forks = [threading.Thread(target=client.post, args=(f"/repos/{full.name}/fork",),
                                  kwargs={"json": {"name": f"fork-{i}"}}) for i in range(4)]
        more = prepared_pushes(tmp_path / "again", git, targets[:4])
        for thread in forks:
            thread.start()
        push_all(git, more)
        for thread in forks:
            thread.join()
        listed = client.get("/repos", params={"limit": 100}).json()["result"]
        assert sum(int(r["size"]) for r in listed) <= MAX_ACCOUNT_BYTES
        for repo in targets:
            assert_recorded_matches_disk(repo, client)


def account_totals(server: Server, account: str) -> tuple[int, int]:
    with sqlite3.connect(server.data_dir / "artifactd.db") as db:
        row = db.execute("SELECT used_bytes, reserved_bytes FROM account_storage "
                         "WHERE account_id = ?", (account,)).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def test_running_total_follows_pushes_forks_and_deletes(limited: Server, tmp_path: Path) -> None:
    account, token = new_account(limited)
    git = Git(tmp_path / "home")
    with account_client(limited, account, token) as client:
        repo = account_repo(limited, client, "counted")
        push_all(git, prepared_pushes(tmp_path, git, [repo]))
        size = int(str(assert_recorded_matches_disk(repo, client)["size"]))
        assert size >= BLOB and account_totals(limited, account) == (size, 0)
        assert client.post(f"/repos/{repo.name}/fork", json={"name": "counted-fork"}).status_code == 200
        assert account_totals(limited, account) == (2 * size, 0)
        for name in (repo.name, "counted-fork"):
            assert client.delete(f"/repos/{name}").status_code in (200, 202)
    assert account_totals(limited, account) == (0, 0)


def test_concurrent_git_requests_hold_the_rate_limit(limited: Server) -> None:
    repo = create_repo(limited, "rated-git")
    wait_for_fresh_window()
    statuses: list[int] = []
    url = repo.remote + "/info/refs?service=git-upload-pack"

    def fetch_refs() -> None:
        statuses.append(httpx.get(url, headers={"Authorization": f"Bearer {repo.token}"},
                                  timeout=60).status_code)

    threads = [threading.Thread(target=fetch_refs) for _ in range(GIT_RATE + WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * GIT_RATE + [429] * WRITERS


def test_concurrent_control_requests_hold_the_rate_limit(limited: Server) -> None:
    account, token = new_account(limited)
    wait_for_fresh_window()
    statuses: list[int] = []

    def create(i: int) -> None:
        with account_client(limited, account, token) as client:
            statuses.append(client.post("/repos", json={"name": f"rated-{i}"}).status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(CONTROL_RATE + WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * CONTROL_RATE + [429] * WRITERS


def wait_for_fresh_window() -> None:
    left = 3600 - time.time() % 3600
    if left < 30:
        time.sleep(left + 0.2)


def raw_push_body(git: Git, work: Path, new: str, capabilities: str) -> bytes:
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs", "-q"], input=f"{new}\n".encode(),
                          cwd=work, env=git.env, capture_output=True, check=True).stdout
    line = f"{ZERO} {new} refs/heads/main"
    if capabilities:
        line += "\0" + capabilities
    return pkt(line + "\n") + b"0000" + pack


def test_push_without_report_status_is_recorded(limited: Server, tmp_path: Path) -> None:
    account, token = new_account(limited)  # room of its own, whatever other tests stored
    with account_client(limited, account, token) as client:
        repo = account_repo(limited, client, "quiet-push")
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    head = git.new_work(work, {"blob.bin": os.urandom(BLOB)})
    body = raw_push_body(git, work, head, capabilities="")  # no report-status: no "ok" lines
    r = httpx.post(f"{repo.remote}/git-receive-pack", content=body, timeout=60,
                   headers={"Authorization": f"Bearer {repo.token}",
                            "Content-Type": "application/x-git-receive-pack-request"})
    assert r.status_code == 200
    assert repo.refs() == {"refs/heads/main": head}
    with account_client(limited, account, token) as client:
        info = assert_recorded_matches_disk(repo, client)
    assert int(str(info["size"])) >= BLOB
    assert info["last_push_at"] is not None
    assert account_totals(limited, account) == (info["size"], 0)


def test_push_whose_client_hangs_up_leaves_nothing(limited: Server, tmp_path: Path) -> None:
    account, token = new_account(limited)
    with account_client(limited, account, token) as client:
        repo = account_repo(limited, client, "hang-up")
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"README.md": "x\n"})
    for i in range(5):
        head = git.commit_files(work, {f"blob{i}.bin": os.urandom(BLOB // 2)}, f"c{i}")
        body = raw_push_body(git, work, head, capabilities="report-status side-band-64k")
        path = repo.remote.split(str(limited.port), 1)[1] + "/git-receive-pack"
        request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Authorization: Bearer {repo.token}\r\n"
                   "Content-Type: application/x-git-receive-pack-request\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", limited.port)) as sock:
            sock.sendall(request + body)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        # The whole body arrived, then the client reset the connection.
    assert wait_no_processes(repo.git_dir, needle="receive-pack") == []
    deadline = time.monotonic() + 10
    while quarantines(repo) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert quarantines(repo) == []
    # Whatever the pushes did, the record agrees with the disk and the next push fits.
    with account_client(limited, account, token) as client:
        info = assert_recorded_matches_disk(repo, client)
    assert int(str(info["size"])) <= MAX_REPO_BYTES
    clean = tmp_path / "clean"
    git.new_work(clean, {"small.txt": "fits\n"})
    git.run("-C", str(clean), "-c", bearer(repo.token), "push", "-q", "-f", repo.remote,
            "HEAD:refs/heads/after")
    with account_client(limited, account, token) as client:
        assert_recorded_matches_disk(repo, client)


def hold_lock_while_admitted(db: sqlite3.Connection, git: Git, work: Path, repo: Repo) -> bool:
    """Push, and once the push is admitted (its intent row exists) take the database's write
    lock: git then moves the ref, and the server's record of it waits for the lock. False
    (lock released, push done) when the push was recorded before the lock was taken."""
    push = subprocess.Popen(
        ["git", "-C", str(work), "-c", bearer(repo.token), "push", "-q", repo.remote,
         "HEAD:main"], env=git.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not db.execute("SELECT count(*) FROM push_intents").fetchone()[0]:
        if push.poll() is not None:  # admitted and recorded between two looks: try again
            assert push.returncode == 0
            return False
        assert time.monotonic() < deadline
        time.sleep(0.001)
    db.execute("BEGIN IMMEDIATE")
    if db.execute("SELECT count(*) FROM push_intents").fetchone()[0] == 1:
        return True
    db.execute("ROLLBACK")
    push.wait(timeout=30)
    return False


def test_crash_between_ref_update_and_record_converges(tmp_path: Path) -> None:
    """kill -9 while the push's record waits on the database; the restart settles it."""
    server = start_server(tmp_path / "data", extra_env={"ARTIFACTD_MAINTENANCE_INTERVAL": "0"})
    try:
        repo = create_repo(server, "crashed")
        git = Git(tmp_path / "home")
        work = tmp_path / "w"
        git.new_work(work, {"README.md": "x\n"})
        db = sqlite3.connect(server.data_dir / "artifactd.db", isolation_level=None, timeout=30)
        for attempt in range(10):
            head = git.commit_files(work, {f"blob{attempt}.bin": os.urandom(BLOB)}, "big")
            if hold_lock_while_admitted(db, git, work, repo):
                break
        else:
            pytest.fail("every push was recorded before the test could hold the lock")
        deadline = time.monotonic() + 30
        while repo.refs().get("refs/heads/main") != head:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        db.execute("ROLLBACK")
        db.close()
        assert wait_no_processes(repo.git_dir) == []

        server.start()
        info = repo.info()
        assert info["last_push_at"] is not None
        assert info["size"] == disk_bytes(repo) > 0
        with sqlite3.connect(server.data_dir / "artifactd.db") as check:
            assert check.execute("SELECT count(*) FROM push_intents").fetchone()[0] == 0
            assert check.execute("SELECT reserved_bytes FROM repos WHERE id = ?",
                                 (repo.id,)).fetchone()[0] == 0
            used, reserved = check.execute(
                "SELECT used_bytes, reserved_bytes FROM account_storage WHERE account_id = ?",
                (server.account_id,)).fetchone()
        assert (used, reserved) == (info["size"], 0)
        # The maintenance counter saw the push too (and the attempts recorded before it).
        git.commit_files(work, {"more.txt": "more\n"}, "more")
        git.run("-C", str(work), "-c", bearer(repo.token), "push", "-q", repo.remote, "HEAD:main")
        with sqlite3.connect(server.data_dir / "artifactd.db") as check:
            assert check.execute("SELECT pushes_since_maintenance FROM repos WHERE id = ?",
                                 (repo.id,)).fetchone()[0] == attempt + 2
    finally:
        server.stop()


def test_concurrent_imports_hold_the_account_limit(limited: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    source = GitSource(tmp_path / "upstream")
    work = tmp_path / "w"
    git.new_work(work, {"blob.bin": os.urandom(BLOB)})
    git.run("clone", "-q", "--bare", str(work), str(source.root / "big.git"))
    source.start()
    account, token = new_account(limited)
    try:
        # Every import starts its fetch (and reads the room left) before any may finish.
        source.hold("big")
        with account_client(limited, account, token) as client:
            for i in range(WRITERS):
                r = client.post(f"/repos/imported-{i}/import", json={"url": f"{source.url}/big.git"})
                assert r.status_code == 200, r.text
            deadline = time.monotonic() + 60
            while source.count("git-upload-pack") < WRITERS and time.monotonic() < deadline:
                time.sleep(0.05)
            source.release("big")
            infos = []
            for i in range(WRITERS):
                while (info := client.get(f"/repos/imported-{i}").json()["result"])["status"] == "importing":
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                infos.append(info)
    finally:
        source.release("big")
        source.stop()
    ready = [info for info in infos if info["status"] == "ready"]
    assert 1 <= len(ready) <= MAX_ACCOUNT_BYTES // BLOB, infos
    assert all("storage limit" in str(info["status_reason"]) for info in infos if info not in ready)
    assert sum(int(info["size"]) for info in ready) <= MAX_ACCOUNT_BYTES
    assert account_totals(limited, account) == (sum(int(info["size"]) for info in ready), 0)
