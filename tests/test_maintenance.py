"""Maintenance and garbage collection against real repos, real git clients and real load."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactd.config import Settings
from artifactd.services.backend import Backend
from artifactd.services.repos.maintenance import clean_stale_tmp, maintain_repo
from artifactd.storage.repomaint import count_packs
from tests.gitutil import Git
from tests.harness import Server, start_server


@pytest.fixture(scope="module")
def quiet_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Background maintenance off: the tests drive it themselves."""
    server = start_server(tmp_path_factory.mktemp("maint"),
                          extra_env={"ARTIFACTD_MAINTENANCE_INTERVAL": "0"})
    yield server
    server.stop()


def open_backend(server: Server) -> Backend:
    return Backend.open(Settings(data_dir=str(server.data_dir)), run_migrations=False)


def make_repo(server: Server, name: str) -> dict:
    with server.client() as c:
        result = c.post("/repos", json={"name": name})
        assert result.status_code == 200, result.text
        return result.json()["result"]


def header(token: str) -> str:
    return f"http.extraHeader=Authorization: Bearer {token}"


def push_n(git: Git, repo: dict, work: Path, n: int, branch: str = "main") -> None:
    if not work.exists():
        git.new_work(work, {"f0.txt": "0"})
        git.run("checkout", "-q", "-B", branch, cwd=work)
    for i in range(n):
        git.commit_files(work, {f"f{i % 7}.txt": f"{branch} {i} {time.time_ns()}"}, f"c{i}")
        git.run("-c", header(repo["token"]), "push", "-q", repo["remote"], f"HEAD:{branch}", cwd=work)


def fsck(path: Path) -> None:
    result = subprocess.run(["git", f"--git-dir={path}", "fsck", "--strict", "--no-dangling"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_maintenance_in_a_loop_under_load(quiet_server: Server, tmp_path: Path) -> None:
    server = quiet_server
    repo = make_repo(server, "busy")
    git = Git(tmp_path / "home")
    push_n(git, repo, tmp_path / "seed", 10)
    backend = open_backend(server)
    path = backend.repos.path(repo["id"])
    errors: list[str] = []
    stop = threading.Event()
    runs = 0

    def maintainer() -> None:
        nonlocal runs
        while not stop.is_set():
            row = backend.meta.get_repo_by_id(repo["id"])
            assert row is not None
            try:
                if maintain_repo(backend, row, full=runs % 2 == 0) is not None:
                    runs += 1
            except Exception as exc:
                errors.append(f"maintenance: {exc}")

    deadline = time.monotonic() + 180

    def cloner(k: int) -> None:
        # At least 4 clones each, and on until maintenance has run a few times under them.
        i = 0
        while i < 4 or (runs < 3 and time.monotonic() < deadline):
            i += 1
            target = tmp_path / f"clone-{k}-{i}"
            result = git.run("-c", header(repo["token"]), "clone", "-q", repo["remote"],
                             str(target), check=False)
            if result.returncode != 0:
                errors.append(f"clone: {result.stderr}")

    def pusher(k: int) -> None:
        try:
            push_n(git, repo, tmp_path / f"push-{k}", 6, branch=f"agent-{k}")
        except AssertionError as exc:
            errors.append(f"push: {exc}")

    threads = [threading.Thread(target=maintainer)]
    threads += [threading.Thread(target=cloner, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=pusher, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(timeout=300)
    stop.set()
    threads[0].join(timeout=120)
    try:
        assert errors == []
        assert runs >= 2
        maintain_repo(backend, backend.meta.get_repo_by_id(repo["id"]), full=True)  # type: ignore[arg-type]
        fsck(path)
        assert count_packs(path) <= 2  # one pack (+ a cruft pack at most)
        heads = git.out("ls-remote", "--heads", repo["remote"].replace("://", f"://x:{repo['token'].split('?')[0]}@"))
        assert len(heads.splitlines()) == 5  # main + 4 agent branches, every push landed
        with server.client() as c:
            got = c.get("/repos/busy").json()["result"]
        assert got["maintained_at"] is not None
    finally:
        backend.close()


def loose_object(path: Path, content: bytes) -> Path:
    sha = subprocess.run(["git", f"--git-dir={path}", "hash-object", "-w", "--stdin"],
                         input=content, capture_output=True, check=True).stdout.decode().strip()
    return path / "objects" / sha[:2] / sha[2:]


@pytest.mark.parametrize("full", [False, True])
def test_prune_respects_the_grace_period(quiet_server: Server, tmp_path: Path, full: bool) -> None:
    server = quiet_server
    repo = make_repo(server, f"gc-{int(full)}")
    git = Git(tmp_path / "home")
    push_n(git, repo, tmp_path / "w", 3)
    backend = open_backend(server)
    try:
        path = backend.repos.path(repo["id"])
        young = loose_object(path, b"unreachable but young\n")
        old = loose_object(path, b"unreachable and old\n")
        two_hours_ago = time.time() - 7200
        os.utime(old, (two_hours_ago, two_hours_ago))
        young_sha = young.parent.name + young.name
        old_sha = old.parent.name + old.name
        row = backend.meta.get_repo_by_id(repo["id"])
        assert row is not None
        assert maintain_repo(backend, row, full=full) is not None  # grace: 3600 s (default)

        def present(sha: str) -> bool:
            return subprocess.run(["git", f"--git-dir={path}", "cat-file", "-e", sha]).returncode == 0

        assert present(young_sha), "an object younger than the grace period was pruned"
        assert not present(old_sha), "an unreachable object past the grace period survived"
        fsck(path)
        clone = tmp_path / "after"
        git.run("-c", header(repo["token"]), "clone", "-q", repo["remote"], str(clone))
    finally:
        backend.close()


def test_scheduler_maintains_busy_repos(tmp_path: Path) -> None:
    server = start_server(tmp_path / "d", extra_env={
        "ARTIFACTD_MAINTENANCE_AFTER_PUSHES": "3", "ARTIFACTD_MAINTENANCE_INTERVAL": "0.5",
    })
    try:
        repo = make_repo(server, "sched")
        git = Git(tmp_path / "home")
        # A first push makes a repo due (compacted); wait for that run to be done.
        push_n(git, repo, tmp_path / "w", 1)
        deadline = time.monotonic() + 120  # a bound on a loaded host, not an expected time
        with server.client() as c:
            while time.monotonic() < deadline and not c.get("/repos/sched").json()["result"][
                    "maintained_at"]:
                time.sleep(0.3)
        # Then exactly the threshold: the scheduler's one run then covers every push, so what
        # it left on disk is what the assertions below see, however the host schedules it.
        push_n(git, repo, tmp_path / "w", 3)
        deadline = time.monotonic() + 120  # a bound on a loaded host, not an expected time
        with server.client() as c:
            while time.monotonic() < deadline:
                got = c.get("/repos/sched").json()["result"]
                if got["maintained_at"] and got["maintained_at"] >= got["last_push_at"]:
                    break
                time.sleep(0.3)
        assert got["maintained_at"], "the scheduler never maintained a repo with 3 pushes"
        path = server.data_dir / "repos" / repo["id"][:2] / f"{repo['id']}.git"
        assert count_packs(path) == 1
        assert (path / "objects" / "info" / "commit-graph").exists()
        fsck(path)
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "artifactd_maintenance_runs_total" in metrics
    finally:
        server.stop()


def test_deleted_repo_storage_is_reclaimed(quiet_server: Server, tmp_path: Path) -> None:
    server = quiet_server
    repo = make_repo(server, "doomed")
    push_n(Git(tmp_path / "home"), repo, tmp_path / "w", 1)
    live = server.data_dir / "repos" / repo["id"][:2] / f"{repo['id']}.git"
    assert live.exists()
    with server.client() as c:
        assert c.delete("/repos/doomed").status_code == 202
    assert not live.exists()
    trash = server.data_dir / "trash"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(p.name.startswith(repo["id"]) for p in trash.iterdir()):
        time.sleep(0.25)
    assert not any(p.name.startswith(repo["id"]) for p in trash.iterdir())


def test_a_delete_wakes_the_sweeper(quiet_server: Server, tmp_path: Path) -> None:
    """The sweeper's idle pass comes every 5 s (app.TRASH_SWEEP_INTERVAL); a delete wakes it.
    Right after a pass removed a first repo, a second one deleted is gone long before the
    next idle pass would have come."""
    server = quiet_server
    trash = server.data_dir / "trash"

    def delete_and_wait(name: str, seconds: float) -> None:
        repo = make_repo(server, name)
        push_n(Git(tmp_path / "home"), repo, tmp_path / name, 1)  # a directory on disk
        assert (server.data_dir / "repos" / repo["id"][:2] / f"{repo['id']}.git").exists()
        with server.client() as c:
            assert c.delete(f"/repos/{name}").status_code == 202
        started = time.monotonic()
        while any(p.name.startswith(repo["id"]) for p in trash.iterdir()):
            assert time.monotonic() - started < seconds, f"{name} was not swept"
            time.sleep(0.02)

    delete_and_wait("swept-first", 20)  # whichever pass removes it
    # 2.5 s: half the idle interval, ten times what a woken pass takes on a loaded machine.
    delete_and_wait("swept-second", 2.5)


def test_stale_work_areas_are_cleaned(quiet_server: Server) -> None:
    backend = open_backend(quiet_server)
    try:
        stale = backend.repos.tmp_root / "fork-crashed-staging"
        fresh = backend.repos.tmp_root / "import-running-staging"
        for d in (stale, fresh):
            (d / "objects").mkdir(parents=True)
        old = time.time() - 7 * 3600
        os.utime(stale, (old, old))
        assert clean_stale_tmp(backend) >= 1
        assert not stale.exists() and fresh.exists()
    finally:
        backend.close()
