"""The ``s3`` repo store on one node (SQLite, which the backend allows for a single node) and
a real SeaweedFS: start-up checks, the bucket going away and coming back, a pack deleted
behind the server's back, storage limits on a cold cache, the catalog's compare-and-swap
and maintenance lease on a real PostgreSQL."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifactd.storage.db import make_engine, migrate
from artifactd.storage.s3store.catalog import Catalog, StaleRef
from tests.gitutil import Git, Repo, basic_header, bearer, create_repo
from tests.harness import Postgres, Server, artifactd_cmd, free_port
from tests.multinode import s3_env, start_node
from tests.seaweed import SeaweedFS
from tests.tcpgate import Gate

MAX_REPO_BYTES = 1_000_000
CACHE_MAX_BYTES = 1_500_000


@pytest.fixture(scope="module")
def gate(seaweedfs: SeaweedFS) -> Iterator[Gate]:
    opening = Gate(seaweedfs.s3_port)
    yield opening
    opening.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS, gate: Gate) -> Iterator[Server]:
    bucket = seaweedfs.new_bucket()
    env = s3_env(seaweedfs, bucket, ARTIFACTD_S3_ENDPOINT_URL=gate.url,
                 ARTIFACTD_MAX_REPO_BYTES=str(MAX_REPO_BYTES),
                 ARTIFACTD_CACHE_MAX_BYTES=str(CACHE_MAX_BYTES),
                 # No maintenance thread: a pass landing between a test's pushes and its
                 # reads would bring an evicted repo back into the cache (its repack needs
                 # it) and reorder the LRU (tests/test_multinode.py runs maintenance).
                 ARTIFACTD_MAINTENANCE_INTERVAL="0")
    server = start_node(tmp_path_factory.mktemp("s3node"), None, env)
    server.env["TEST_BUCKET"] = bucket
    yield server
    server.stop()


def _serve_fails(tmp_path: Path, env: dict[str, str]) -> str:
    """Start ``artifactd serve`` with ``env``; it must refuse to start. Returns its output."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ARTIFACTD_", "AWS_"))}
    full.update(env)
    result = subprocess.run(
        [*artifactd_cmd(), "serve", "--data-dir", str(tmp_path / "data"), "--port",
         str(free_port())], env=full, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_start_up_refuses_wrong_credentials_and_a_missing_bucket(
        tmp_path: Path, seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.new_bucket()
    wrong = {**s3_env(seaweedfs, bucket), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    output = _serve_fails(tmp_path, wrong)
    assert "credentials" in output and "AWS_SECRET_ACCESS_KEY" in output, output
    assert "not-the-secret" not in output
    assert "Traceback" not in output
    output = _serve_fails(tmp_path, s3_env(seaweedfs, "no-such-bucket-here"))
    assert "'no-such-bucket-here' does not exist" in output, output
    output = _serve_fails(tmp_path, {"ARTIFACTD_STORAGE_BACKEND": "s3"})
    assert "s3_bucket" in output, output


def _push(git: Git, repo: Repo, work: Path, files: dict[str, str | bytes]) -> str:
    sha = git.commit_files(work, files, "more") if work.exists() else git.new_work(work, files)
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)
    return sha


def _wipe_cache(server: Server) -> None:
    for entry in (server.data_dir / "repos").iterdir():
        shutil.rmtree(entry, ignore_errors=True)


def test_bucket_unreachable_answers_503_and_service_resumes_by_itself(
        node: Server, gate: Gate, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(node, unique_name)
    git = Git(tmp_path / "home")
    first = _push(git, repo, tmp_path / "w", {"a.txt": "one\n"})
    auth = {"Authorization": basic_header(repo.token)}
    gate.shut()
    try:
        # A push while the bucket is away is refused before any ref moves...
        git.commit_files(tmp_path / "w", {"a.txt": "two\n"}, "two")
        result = git.run("-c", bearer(repo.token), "push", repo.remote, "main",
                         cwd=tmp_path / "w", check=False)
        assert result.returncode != 0
        assert "object store is unavailable" in result.stderr, result.stderr
        # ...and the next ones get a 503 with Retry-After up front.
        r = httpx.get(f"{repo.remote}/info/refs?service=git-receive-pack", headers=auth)
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.text
        # A cold read (the cache wiped) cannot be served either: 503 too.
        _wipe_cache(node)
        r = httpx.get(f"{repo.remote}/info/refs?service=git-upload-pack", headers=auth)
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), r.text
        with node.client() as c:
            r = c.get(f"/repos/{repo.name}/raw/main/a.txt")
            assert r.status_code == 503, r.text
            assert r.json()["errors"][0]["code"] == 12400
    finally:
        gate.reopen()
    # Nothing half-written is visible, and the service is back without a restart.
    listed = git.out("-c", bearer(repo.token), "ls-remote", repo.remote, "refs/heads/main")
    assert listed.split()[0] == first
    second = git.commit_files(tmp_path / "w", {"a.txt": "three\n"}, "three")
    result = git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w",
                     check=False)
    if result.returncode != 0:  # the first push after the outage may still see the probe's window
        assert "503" in result.stderr or "unavailable" in result.stderr, result.stderr
        git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w")
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(tmp_path / "c"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == second
    git.run("fsck", "--strict", "--no-progress", cwd=tmp_path / "c")
    assert node.metric("artifactd_s3_object_store_errors_total") > 0


def test_the_control_plane_of_empty_repos_needs_no_bucket(node: Server, gate: Gate,
                                                         unique_name: str) -> None:
    """A create is rows in SQL only (issue 16's creates/s): with the bucket unreachable, creating,
    reading, listing, minting a token for and deleting empty repos all still work; the first
    push is what needs the bucket."""
    gate.shut()
    try:
        with node.client() as c:
            names = [f"{unique_name}-{n}" for n in range(3)]
            for name in names:
                r = c.post("/repos", json={"name": name})
                assert r.status_code == 200, r.text
            assert c.get(f"/repos/{names[0]}").status_code == 200
            listed = c.get("/repos", params={"search": unique_name}).json()["result"]
            assert {repo["name"] for repo in listed} == set(names)
            r = c.post("/tokens", json={"repo": names[1], "scope": "read", "ttl": 60})
            assert r.status_code == 200, r.text
            assert c.delete(f"/repos/{names[2]}").status_code == 202
    finally:
        gate.reopen()


def test_a_pack_deleted_behind_our_back_fails_that_repo_only(
        node: Server, seaweedfs: SeaweedFS, tmp_path: Path, unique_name: str) -> None:
    broken = create_repo(node, f"{unique_name}-b")
    healthy = create_repo(node, f"{unique_name}-h")
    git = Git(tmp_path / "home")
    client = seaweedfs.client()
    bucket = node.env["TEST_BUCKET"]
    keys_before = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    _push(git, broken, tmp_path / "b", {"b.txt": os.urandom(1000)})
    keys_after = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    _push(git, healthy, tmp_path / "h", {"h.txt": "fine\n"})
    for key in keys_after - keys_before:
        client.delete_object(Bucket=bucket, Key=key)
    _wipe_cache(node)
    r = httpx.get(f"{broken.remote}/info/refs?service=git-upload-pack",
                  headers={"Authorization": basic_header(broken.token)})
    assert r.status_code == 500 and "missing from the object store" in r.text, r.text
    with node.client() as c:
        r = c.get(f"/repos/{broken.name}/raw/main/b.txt")
        assert r.status_code == 500 and r.json()["errors"][0]["code"] == 12401, r.text
    assert node.metric("artifactd_s3_packs_missing_total") >= 2
    assert "missing from the bucket" in node.log_text()
    git.run("-c", bearer(healthy.token), "clone", "-q", healthy.remote, str(tmp_path / "hc"))
    assert (tmp_path / "hc" / "h.txt").read_text() == "fine\n"


def test_a_push_over_the_storage_limit_through_a_cold_cache_is_refused(
        node: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(node, unique_name)
    git = Git(tmp_path / "home")
    first = _push(git, repo, tmp_path / "w", {"small.txt": "small\n"})
    _wipe_cache(node)
    git.commit_files(tmp_path / "w", {"big.bin": os.urandom(MAX_REPO_BYTES + 200_000)}, "big")
    result = git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w",
                     check=False)
    # Refused by the room left (receive-pack's size cap from the limit, or the reservation).
    assert result.returncode != 0, result.stderr
    assert "Storage limit reached" in result.stderr or "exceeds maximum allowed size" \
        in result.stderr, result.stderr
    listed = git.out("-c", bearer(repo.token), "ls-remote", repo.remote, "refs/heads/main")
    assert listed.split()[0] == first
    with node.client() as c:
        assert c.get(f"/repos/{repo.name}").json()["result"]["size"] < MAX_REPO_BYTES


def test_the_cache_stays_within_its_bound_evicting_least_recently_used_repos(
        node: Server, tmp_path: Path, unique_name: str) -> None:
    git = Git(tmp_path / "home")
    repos = [create_repo(node, f"{unique_name}-{i}") for i in range(3)]
    for i, repo in enumerate(repos):
        _push(git, repo, tmp_path / f"w{i}", {"blob.bin": os.urandom(600_000)})
    _wipe_cache(node)

    def cached(repo: Repo) -> bool:
        return (node.data_dir / "repos" / repo.id[:2] / repo.id[2:4] / f"{repo.id}.git").exists()

    for i, repo in enumerate(repos):
        git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(tmp_path / f"c{i}"))
    # Three repos of ~600 KB do not fit in 1.5 MB: the least recently used one went.
    assert not cached(repos[0]) and cached(repos[2])
    total = sum(f.stat().st_size for f in (node.data_dir / "repos").rglob("*") if f.is_file())
    assert total <= CACHE_MAX_BYTES
    git.run("-c", bearer(repos[0].token), "clone", "-q", repos[0].remote, str(tmp_path / "again"))
    assert (tmp_path / "again" / "blob.bin").stat().st_size == 600_000


def test_rest_commit_with_the_bucket_unreachable_is_503_and_moves_nothing(
        node: Server, gate: Gate, tmp_path: Path, unique_name: str) -> None:
    create_repo(node, unique_name)
    url = f"/repos/{unique_name}/commits"

    def commit(text: str) -> httpx.Response:
        return c.post(url, json={"branch": "main", "message": text,
                                 "changes": [{"op": "put", "path": "x.txt", "content": text}]})

    with node.client() as c:
        r = commit("one")
        assert r.status_code == 200, r.text
        first = r.json()["result"]["sha"]
        gate.shut()
        try:
            for attempt in ("two", "three"):  # the upload fails; then the probe answers first
                r = commit(attempt)
                assert r.status_code == 503, r.text
                assert r.headers["Retry-After"].isdigit()
                assert r.json()["errors"][0]["code"] == 12400
        finally:
            gate.reopen()
        # Nothing moved, and writes resume by themselves once the bucket answers again.
        r = c.get(f"/repos/{unique_name}/refs")
        assert [ref["target"] for ref in r.json()["result"]] == [first], r.text
        deadline = time.monotonic() + 60
        while (r := commit("four")).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["parents"] == [first]
        assert c.get(f"/repos/{unique_name}/raw/main/x.txt").text == "four"


def test_rest_writes_on_s3_keep_the_storage_limit_and_read_only_mode(
        node: Server, unique_name: str) -> None:
    create_repo(node, unique_name)
    create_repo(node, f"{unique_name}-ro", read_only=True)

    def commit(name: str, content: str) -> httpx.Response:
        return c.post(f"/repos/{name}/commits", json={
            "branch": "main", "message": "m",
            "changes": [{"op": "put", "path": "x.txt", "content": content}]})

    with node.client() as c:
        assert commit(unique_name, "small").status_code == 200
        r = commit(unique_name, "x" * (MAX_REPO_BYTES + 1))
        assert r.status_code == 413 and r.json()["errors"][0]["code"] == 11070, r.text
        r = commit(f"{unique_name}-ro", "x")
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == 11033, r.text
        assert c.get(f"/repos/{unique_name}/raw/main/x.txt").text == "small"
        assert c.get(f"/repos/{unique_name}-ro/refs").json()["result"] == []


@pytest.fixture(scope="module")
def catalogs(postgres: Postgres) -> Iterator[tuple[Catalog, Catalog]]:
    """Two catalogs (as two nodes have) on one real PostgreSQL database."""
    url = postgres.new_database()
    engines = [make_engine(url), make_engine(url)]
    migrate(engines[0])
    yield Catalog(engines[0]), Catalog(engines[1])
    for engine in engines:
        engine.dispose()


def test_catalog_compare_and_swap_lets_one_of_racing_updates_win(
        catalogs: tuple[Catalog, Catalog]) -> None:
    repo_id = os.urandom(16).hex()
    zero, base = "0" * 40, "b" * 40
    catalogs[0].commit_push(repo_id, [(zero, base, "refs/heads/main")], [], 1)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def racer(index: int) -> None:
        barrier.wait()
        try:
            catalogs[index % 2].commit_push(
                repo_id, [(base, f"{index + 1:040x}", "refs/heads/main")], [], 2)
            outcomes.append(f"{index + 1:040x}")
        except StaleRef:
            outcomes.append("stale")

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o != "stale"]
    assert len(winners) == 1 and len(outcomes) == 8
    assert catalogs[1].read_refs(repo_id, ["refs/heads/main"]) == {"refs/heads/main": winners[0]}
    # A ref created twice: the second create is stale too; a delete needs the current value.
    with pytest.raises(StaleRef):
        catalogs[0].commit_push(repo_id, [(zero, base, "refs/heads/main")], [], 3)
    with pytest.raises(StaleRef):
        catalogs[0].commit_push(repo_id, [(base, zero, "refs/heads/main")], [], 3)
    # A pack a push names must have been announced (and not swept) first.
    with pytest.raises(LookupError):
        catalogs[0].commit_push(repo_id, [(winners[0], base, "refs/heads/main")], ["f" * 40], 4)
    assert catalogs[0].read_refs(repo_id, ["refs/heads/main"]) == {"refs/heads/main": winners[0]}


def test_catalog_maintenance_lease_is_held_by_one_node_at_a_time(
        catalogs: tuple[Catalog, Catalog]) -> None:
    repo_id = os.urandom(16).hex()
    now = 10**15
    assert catalogs[0].take_lease(repo_id, "node-a", now, 60)
    assert not catalogs[1].take_lease(repo_id, "node-b", now + 1, 60)
    # A node a few seconds ahead (clock skew) still waits for the lease to expire.
    assert not catalogs[1].take_lease(repo_id, "node-b", now + 5_000_000, 60)
    assert catalogs[1].take_lease(repo_id, "node-b", now + 61_000_000, 60)  # expired: taken over
    catalogs[1].release_lease(repo_id, "node-b")
    assert catalogs[0].take_lease(repo_id, "node-a", now + 62_000_000, 60)


def _generations(server: Server, repo: Repo) -> tuple[int, int]:
    """(the node's cache, the catalog): the generation each says the repo is at."""
    rid = repo.id
    cached = server.data_dir / "repos" / rid[:2] / rid[2:4] / f"{rid}.git" / "artifactd-generation"
    engine = make_engine(f"sqlite:///{server.data_dir / 'artifactd.db'}")
    try:
        with engine.connect() as conn:
            stored = conn.exec_driver_sql(
                "SELECT generation FROM s3_repos WHERE repo_id = ?", (rid,)).scalar_one()
    finally:
        engine.dispose()
    return int(cached.read_text()), int(stored)


def test_a_push_leaves_the_pushing_nodes_cache_current(
        node: Server, tmp_path: Path, unique_name: str) -> None:
    """After its own push a node has nothing to sync: the next push or fetch through it costs
    one indexed read, not a snapshot of the refs and packs and a rewrite of packed-refs."""
    repo = create_repo(node, unique_name)
    git = Git(tmp_path / "home")
    current = 0
    for i in range(5):
        # Maintenance swapping the pack list right after a push bumps the catalog alone; a
        # lagging cache after every one of five pushes is this node not marking its own.
        sha = _push(git, repo, tmp_path / "w", {"n.txt": f"{i}\n"})
        cached, stored = _generations(node, repo)
        current += cached == stored
    assert current, "the cache lagged the catalog after every push"
    assert git.out("-c", bearer(repo.token), "ls-remote", repo.remote,
                   "refs/heads/main").split()[0] == sha
