"""Two artifactd nodes on PostgreSQL + SeaweedFS (the ``s3`` backend): any node serves any repo.

Real components only: a PostgreSQL cluster and a SeaweedFS S3 gateway started by the suite,
two server processes with separate cache dirs, the git CLI.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pygit2
import pytest
from dulwich import porcelain

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Postgres
from tests.multinode import Cluster, restart, start_cluster
from tests.seaweed import SeaweedFS


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres,
            seaweedfs: SeaweedFS) -> Iterator[Cluster]:
    # A short pack grace, so that a test sees the sweep of unlisted packs happen; both nodes'
    # maintenance schedulers on and eager, so that they compete for the same repos.
    nodes = start_cluster(tmp_path_factory.mktemp("multinode"), postgres, seaweedfs,
                          ARTIFACTD_GC_GRACE_SECONDS="3", ARTIFACTD_MAINTENANCE_AFTER_PUSHES="3",
                          ARTIFACTD_MAINTENANCE_INTERVAL="1")
    yield nodes
    nodes.stop()


def _fsck_clone(git: Git, remote: str, token: str, target: Path) -> str:
    git.run("-c", bearer(token), "clone", "-q", remote, str(target))
    git.run("fsck", "--strict", "--no-progress", cwd=target)
    return git.out("rev-parse", "HEAD", cwd=target)


def test_push_through_one_node_is_seen_through_the_other_at_once(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a = cluster.nodes[0]
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "w", {"a.txt": "one\n"})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "c1") == first
    # Each push through B is seen by a fetch through A right after its acknowledgement.
    for round_ in range(3):
        sha = git.commit_files(tmp_path / "c1", {"a.txt": f"round {round_}\n"}, f"r{round_}")
        git.run("-c", bearer(repo.token), "push", "-q", "origin", "main", cwd=tmp_path / "c1")
        listed = git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 0),
                         "refs/heads/main")
        assert listed.split()[0] == sha
    assert _fsck_clone(git, cluster.remote(repo, 0), repo.token, tmp_path / "c2") == sha
    # The data is in the bucket and the refs in SQL: no node's disk is the only copy.
    assert any(key.startswith("packs/") and key.endswith(".pack") for key in cluster.bucket_keys())


def test_racing_pushes_through_both_nodes_lose_nothing(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    """Clients push to one branch through alternating nodes, each retrying when refused: every
    acknowledged commit is in the final history, and refusals are git's stale-ref kind."""
    a = cluster.nodes[0]
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "seed")
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "seed")
    clients, pushes_each = 4, 3
    acked: list[str] = []
    refusals: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        work = tmp_path / f"client{index}"
        remote = cluster.remote(repo, index % 2)
        git.run("-c", bearer(repo.token), "clone", "-q", remote, str(work))
        for push in range(pushes_each):
            for _attempt in range(40):
                git.run("-c", bearer(repo.token), "fetch", "-q", "origin", cwd=work)
                git.run("reset", "-q", "--hard", "origin/main", cwd=work)
                sha = git.commit_files(work, {f"c{index}-{push}.txt": "x\n"}, f"{index}/{push}")
                result = git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=work,
                                 check=False)
                if result.returncode == 0:
                    with lock:
                        acked.append(sha)
                    break
                with lock:
                    refusals.append(result.stderr)
            else:
                raise AssertionError(f"client {index} never got a push in")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    errors: list[BaseException] = []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(acked) == clients * pushes_each
    for stderr in refusals:  # git's own non-fast-forward, or our CAS's stale-ref refusal
        assert "fetch first" in stderr or "stale info" in stderr or "non-fast-forward" in stderr, \
            stderr
    final = tmp_path / "final"
    _fsck_clone(git, cluster.remote(repo, 1), repo.token, final)
    history = set(git.out("rev-list", "HEAD", cwd=final).split())
    assert set(acked) <= history


def test_content_routes_and_blob_reads_through_the_other_node(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "w", {"docs/hello.txt": "hello from A\n"})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    with b.client() as c:
        r = c.get(f"/repos/{repo.name}/raw/main/docs/hello.txt")
        assert r.status_code == 200, r.text
        assert r.text == "hello from A\n"
        r = c.get(f"/repos/{repo.name}/log", params={"ref": "main"})
        assert r.status_code == 200, r.text
    # A partial clone through B fetches blobs on demand (the blob fast path).
    git.run("-c", bearer(repo.token), "clone", "-q", "--filter=blob:none",
            cluster.remote(repo, 1), str(tmp_path / "partial"))
    assert (tmp_path / "partial" / "docs" / "hello.txt").read_text() == "hello from A\n"


def test_fork_copies_rows_and_outlives_its_deleted_parent(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    parent = create_repo(a, f"{unique_name}-p")
    git = Git(tmp_path / "home")
    sha = git.new_work(tmp_path / "w", {"big.bin": os.urandom(200_000)})
    git.run("-c", bearer(parent.token), "push", "-q", cluster.remote(parent, 0), "main",
            cwd=tmp_path / "w")
    # The first push makes the parent due, and the eager schedulers compact it into a pack
    # of their own within a second or so: wait for that, or its upload can land between the
    # two listings below and look like bytes the fork copied.
    deadline = time.monotonic() + 120  # a bound on a loaded host, not an expected time
    while True:
        with a.client() as c:
            r = c.get(f"/repos/{parent.name}")
        if r.status_code == 200 and r.json()["result"]["maintained_at"]:
            break
        assert time.monotonic() < deadline, "the parent's first push was never compacted"
        time.sleep(0.2)
    before = cluster.bucket_keys()
    with b.client() as c:
        r = c.post(f"/repos/{parent.name}/fork", json={"name": f"{unique_name}-f"})
        assert r.status_code == 200, r.text
        fork_token = r.json()["result"]["token"]
        fork_id = r.json()["result"]["id"]
        fork_remote = r.json()["result"]["remote"]
    # No byte copied (the sweep may remove packs of earlier refused pushes meanwhile).
    assert cluster.bucket_keys() - before == set()
    # The parent is deleted; a canary repo with a pack of its own is deleted after it. Once
    # the canary's pack is swept, the sweep has looked at the parent's packs too.
    canary = create_repo(a, f"{unique_name}-c")
    git.new_work(tmp_path / "canary", {"c.bin": os.urandom(50_000)})
    git.run("-c", bearer(canary.token), "push", "-q", cluster.remote(canary, 0), "main",
            cwd=tmp_path / "canary")
    # The canary's own packs, read from the catalog: a bucket diff would also catch packs that
    # the eager maintenance of an earlier test's live repo uploads meanwhile, never swept.
    canary_keys = cluster.listed_keys(canary.id)
    assert canary_keys and canary_keys <= cluster.bucket_keys()
    with a.client() as c:
        assert c.delete(f"/repos/{parent.name}").status_code in (200, 202)
        assert c.delete(f"/repos/{canary.name}").status_code in (200, 202)
    # The sweeper passes every 5 s after a 3 s grace; on a loaded 2-core machine (the suite
    # beside other work) a pass can queue behind both nodes' eager maintenance.
    deadline = time.monotonic() + 120
    while cluster.bucket_keys() & canary_keys:
        assert time.monotonic() < deadline, "the sweep never removed the canary's pack"
        time.sleep(0.5)
    listed = cluster.listed_keys(fork_id)
    assert listed and listed <= cluster.bucket_keys()
    for node in (0, 1):
        remote = fork_remote.replace(f":{a.port}/", f":{cluster.nodes[node].port}/") \
            .replace(f":{b.port}/", f":{cluster.nodes[node].port}/")
        assert _fsck_clone(git, remote, fork_token, tmp_path / f"fork{node}") == sha


def test_a_wiped_cache_is_rebuilt_from_the_bucket(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    sha = git.new_work(tmp_path / "w", {"data.bin": os.urandom(2_000_000)})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "w")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "warm") == sha
    # Another client clones through B while B's whole cache is wiped.
    racing = subprocess.Popen(
        ["git", "-c", bearer(repo.token), "clone", "-q", cluster.remote(repo, 1),
         str(tmp_path / "racing")], env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for entry in (b.data_dir / "repos").iterdir():
        shutil.rmtree(entry, ignore_errors=True)
    racing.communicate(timeout=120)
    if racing.returncode == 0:  # it finished from open files, or from the rebuilt cache
        git.run("fsck", "--strict", "--no-progress", cwd=tmp_path / "racing")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "cold") == sha
    with b.client() as c:
        assert c.get(f"/repos/{repo.name}/raw/main/data.bin").status_code == 200


def _wait_for(condition: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.mark.parametrize("moment", ["receiving", "uploaded"])
def test_a_node_killed_mid_push_leaves_all_of_it_or_none(
        cluster: Cluster, tmp_path: Path, unique_name: str, moment: str) -> None:
    """kill -9 of the node taking a push: through the other node the push is fully there or
    not at all, and a fresh clone is fsck-clean (no ref to a missing object)."""
    a, b = cluster.nodes
    repo = create_repo(b, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "w", {"a.txt": "one\n"})
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 1), "main",
            cwd=tmp_path / "w")
    second = git.commit_files(tmp_path / "w", {"big.bin": os.urandom(6_000_000)}, "big")
    keys = cluster.bucket_keys()
    objects = a.data_dir / "repos" / repo.id[:2] / repo.id[2:4] / f"{repo.id}.git" / "objects"

    def reached() -> bool:
        if moment == "receiving":
            return any(objects.glob("tmp_objdir-*")) if objects.exists() else False
        return any(k.endswith(".pack") for k in cluster.bucket_keys() - keys)

    pusher = subprocess.Popen(
        ["git", "-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main"],
        cwd=tmp_path / "w", env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait_for(lambda: reached() or pusher.poll() is not None)
        assert a.process is not None
        a.process.kill()
        a.process.wait()
        pusher.communicate(timeout=60)
        listed = git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 1),
                         "refs/heads/main").split()[0]
        assert listed in (first, second)
        if pusher.returncode == 0:  # acknowledged: it must be there
            assert listed == second
        head = _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "after")
        assert head == listed
        if listed == second:
            assert (tmp_path / "after" / "big.bin").stat().st_size == 6_000_000
    finally:
        if pusher.poll() is None:
            pusher.kill()
        restart(a)
    # The restarted node serves the repo as the other one does.
    assert git.out("-c", bearer(repo.token), "ls-remote", cluster.remote(repo, 0),
                   "refs/heads/main").split()[0] == listed


def test_client_matrix_crossing_nodes(cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    """git CLI v0/v1/v2, shallow and partial clones, pygit2 and dulwich: each writes through
    one node and reads through the other."""
    repo = create_repo(cluster.nodes[0], unique_name)
    git = Git(tmp_path / "home")
    secret = repo.token.split("?expires=")[0]
    tip = git.new_work(tmp_path / "w", {"a.txt": "one\n"})
    for version in ("0", "1", "2"):
        node = int(version) % 2
        tip = git.commit_files(tmp_path / "w", {f"v{version}.txt": version}, f"v{version}")
        git.run("-c", bearer(repo.token), "-c", f"protocol.version={version}", "push", "-q",
                cluster.remote(repo, node), "main", cwd=tmp_path / "w")
        clone = tmp_path / f"clone-v{version}"
        git.run("-c", bearer(repo.token), "-c", f"protocol.version={version}", "clone", "-q",
                cluster.remote(repo, 1 - node), str(clone))
        assert git.out("rev-parse", "HEAD", cwd=clone) == tip
    shallow = tmp_path / "shallow"
    git.run("-c", bearer(repo.token), "clone", "-q", "--depth=1", cluster.remote(repo, 1),
            str(shallow))
    assert git.out("rev-list", "--count", "HEAD", cwd=shallow) == "1"
    partial = tmp_path / "partial"
    git.run("-c", bearer(repo.token), "clone", "-q", "--filter=blob:none",
            cluster.remote(repo, 0), str(partial))
    assert (partial / "v2.txt").read_text() == "2"

    # libgit2 clones through B and pushes through A.
    callbacks = pygit2.RemoteCallbacks(credentials=pygit2.UserPass("x", secret))
    cloned = pygit2.clone_repository(cluster.remote(repo, 1), str(tmp_path / "lg"),
                                     callbacks=callbacks)
    assert str(cloned.head.target) == tip
    signature = pygit2.Signature("L", "l@example.com")
    blob = cloned.create_blob(b"from libgit2\n")
    builder = cloned.TreeBuilder(cloned.head.peel(pygit2.Commit).tree)
    builder.insert("lg.txt", blob, pygit2.enums.FileMode.BLOB)
    tip = str(cloned.create_commit("refs/heads/main", signature, signature, "libgit2",
                                   builder.write(), [cloned.head.target]))
    remote = cloned.remotes.create_anonymous(cluster.remote(repo, 0))
    remote.push(["refs/heads/main"], callbacks=callbacks)

    # dulwich clones through B (and sees libgit2's push at once), then pushes through B.
    dw = tmp_path / "dw"
    with porcelain.clone(cluster.remote(repo, 1), str(dw), username="x", password=secret,
                         errstream=io.BytesIO()) as dulwich_repo:
        assert dulwich_repo.head().decode() == tip
        (dw / "dw.txt").write_text("from dulwich\n")
        porcelain.add(dulwich_repo, [str(dw / "dw.txt")])
        tip = porcelain.commit(dulwich_repo, message=b"dulwich", author=b"D <d@example.com>",
                               committer=b"D <d@example.com>").decode()
        porcelain.push(dulwich_repo, cluster.remote(repo, 1), b"HEAD:refs/heads/main",
                       username="x", password=secret, errstream=io.BytesIO())
    assert _fsck_clone(git, cluster.remote(repo, 0), repo.token, tmp_path / "final") == tip


def test_both_nodes_maintain_under_one_lease_and_the_pack_list_shrinks(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "w")
    pushes = 6
    for i in range(pushes):
        git.commit_files(tmp_path / "w", {f"f{i}.txt": f"{i}\n"}, f"c{i}")
        git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, i % 2), "main",
                cwd=tmp_path / "w")
    tip = git.out("rev-parse", "HEAD", cwd=tmp_path / "w")

    def compacted() -> bool:
        with b.client() as c:
            r = c.get(f"/repos/{repo.name}")
        if r.status_code != 200:  # e.g. a 503 while the loaded database is slow: ask again
            return False
        # Not "maintained after the last push": a maintenance that starts during the pushes
        # counts the pushes it saw, and the last one or two leave the repo short of due again
        # (``maintenance_after_pushes``), which on a loaded host, where pushes are slow, is
        # the usual case. Six pushes listed six packs; fewer means a swap compacted them.
        return bool(r.json()["result"]["maintained_at"]) \
            and len(cluster.listed_keys(repo.id)) < 2 * pushes
    # Both schedulers see the repo due; the lease lets one at a time repack and swap.
    deadline = time.monotonic() + 120  # a bound on a loaded host, not an expected time
    while not compacted():
        assert time.monotonic() < deadline, cluster.listed_keys(repo.id)
        time.sleep(0.5)
    assert cluster.listed_keys(repo.id) <= cluster.bucket_keys()
    for node in (0, 1):
        assert _fsck_clone(git, cluster.remote(repo, node), repo.token,
                           tmp_path / f"after{node}") == tip


# -- REST writes on s3 (no git client): any node writes, every node reads at once -----------


def _ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["result"]


def _put(path: str, content: str) -> dict[str, str]:
    return {"op": "put", "path": path, "content": content}


def test_rest_commit_through_one_node_is_read_and_cloned_through_the_other(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    url = f"/repos/{repo.name}/commits"
    with a.client() as ca, b.client() as cb:
        first = _ok(ca.post(url, json={"branch": "main", "message": "first",
                                       "changes": [_put("docs/a.txt", "one\n")]}))
        # Many files (one pack either way) and a dated commit (git writes that one) through B.
        many = {"branch": "main", "message": "many", "expected_head": first["sha"],
                "changes": [_put(f"gen/{i}.txt", f"{i}\n") for i in range(150)]}
        second = _ok(cb.post(url, json=many))
        dated = _ok(ca.post(url, json={
            "branch": "main", "message": "dated", "expected_head": second["sha"],
            "author": {"name": "A", "email": "a@example.com", "date": "1700000000 +0000"},
            "changes": [{"op": "move", "from": "docs/a.txt", "path": "docs/b.txt"}]}))
        # Read through B at once: the content routes, then a clone.
        r = cb.get(f"/repos/{repo.name}/raw/main/docs/b.txt")
        assert r.status_code == 200 and r.text == "one\n", r.text
        assert cb.get(f"/repos/{repo.name}/raw/main/gen/149.txt").text == "149\n"
        # A stale expected head is refused through either node, as on local, and moves nothing.
        stale = ca.post(url, json={**many, "message": "stale"})
        assert stale.status_code == 409, stale.text
        assert stale.json()["errors"][0]["code"] == 12000
        assert stale.json()["errors"][0]["source"]["pointer"] == "/expected_head"
    git = Git(tmp_path / "home")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "c") == dated["sha"]
    # The writes' packs are in the bucket and listed in SQL; a push on top works through A.
    assert cluster.listed_keys(repo.id) and cluster.listed_keys(repo.id) <= cluster.bucket_keys()
    sha = git.commit_files(tmp_path / "c", {"pushed.txt": "p\n"}, "pushed")
    git.run("-c", bearer(repo.token), "push", "-q", cluster.remote(repo, 0), "main",
            cwd=tmp_path / "c")
    with b.client() as cb:
        assert _ok(cb.post(url, json={"branch": "main", "message": "after the push",
                                      "expected_head": sha,
                                      "changes": [{"op": "delete", "path": "pushed.txt"}]}))
    assert _fsck_clone(git, cluster.remote(repo, 0), repo.token, tmp_path / "c2") != sha


def test_rest_branches_merge_and_notes_across_nodes(
        cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    base = f"/repos/{repo.name}"
    with a.client() as ca, b.client() as cb:
        start = _ok(ca.post(f"{base}/commits", json={
            "branch": "main", "message": "start", "changes": [_put("a.txt", "a\n")]}))
        _ok(cb.post(f"{base}/branches", json={"name": "topic", "target": "main"}))
        assert {r["name"] for r in _ok(ca.get(f"{base}/refs"))} == {"main", "topic"}
        topic = _ok(ca.post(f"{base}/commits", json={
            "branch": "topic", "message": "topic", "changes": [_put("t.txt", "t\n")]}))
        _ok(ca.post(f"{base}/commits", json={
            "branch": "main", "message": "main moves", "changes": [_put("m.txt", "m\n")]}))
        merged = _ok(cb.post(f"{base}/merge", json={"head": "topic", "target": "main"}))
        assert merged["sha"] and merged["sha"] != topic["sha"]
        note = _ok(ca.put(f"{base}/notes/{merged['sha']}", json={"message": "prompt: merge"}))
        assert _ok(cb.get(f"{base}/notes/{merged['sha']}"))["message"] == "prompt: merge\n"
        stale = cb.put(f"{base}/notes/{start['sha']}",
                       json={"message": "x", "expected": start["sha"]})
        assert stale.status_code == 409, stale.text
        r = ca.delete(f"{base}/refs/topic")
        assert r.status_code == 200, r.text
        assert [r["name"] for r in _ok(cb.get(f"{base}/refs"))] == ["main"]
        # A fork's branch (the fork shares the parent's packs) merged back through the other node.
        _ok(ca.post(f"{base}/fork", json={"name": f"{unique_name}-f"}))
        forked = _ok(cb.post(f"/repos/{unique_name}-f/commits", json={
            "branch": "main", "message": "in the fork", "changes": [_put("f.txt", "f\n")]}))
        merged = _ok(ca.post(f"{base}/merge", json={"head": f"{unique_name}-f:main",
                                                     "strategy": "fast-forward",
                                                     "expected_head": merged["sha"]}))
        assert merged["sha"] == forked["sha"]
    git = Git(tmp_path / "home")
    work = tmp_path / "c"
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, work) == merged["sha"]
    git.run("-c", bearer(repo.token), "fetch", "-q", "origin", "refs/notes/*:refs/notes/*",
            cwd=work)
    assert git.out("notes", "show", "HEAD~1", cwd=work) == "prompt: merge"
    assert git.out("rev-parse", "refs/notes/commits", cwd=work) == note["notes_commit"]
    assert (work / "t.txt").read_text() == "t\n" and (work / "f.txt").read_text() == "f\n"
    git.run("fsck", "--strict", "--no-progress", cwd=work)


def test_mcp_commit_files_on_s3(cluster: Cluster, tmp_path: Path, unique_name: str) -> None:
    from tests.test_mcp import call

    a, b = cluster.nodes
    repo = create_repo(a, unique_name)
    _, results = call(a, a.token, ("commit_files", {
        "repo": repo.name, "branch": "main", "message": "agent work",
        "changes": [_put("src/app.py", "print('s3')\n")]}))
    assert results[0][0] is False, results
    with b.client() as cb:
        assert cb.get(f"/repos/{repo.name}/raw/main/src/app.py").text == "print('s3')\n"
    git = Git(tmp_path / "home")
    assert _fsck_clone(git, cluster.remote(repo, 1), repo.token, tmp_path / "c") \
        == results[0][1]["sha"]
