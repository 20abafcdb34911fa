"""Forks against a real server: hardlinked objects, independence, isolation, fsck-clean."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.gitutil import Git, Repo, bearer, create_repo
from tests.harness import Server
from tests.seed import clone, push
from tests.test_control_plane import TOKEN, assert_token_expiry, envelope_error


def fork(server: Server, parent: str, name: str, **fields: object) -> Repo:
    with server.client() as c:
        r = c.post(f"/repos/{parent}/fork", json={"name": name, **fields})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
    return Repo(server, name, result["id"], result["remote"], result["token"])


def object_count(git_dir: Path) -> int:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "count-objects", "-v"],
                         capture_output=True, text=True, check=True).stdout
    values = dict(line.split(": ") for line in out.splitlines())
    return int(values["count"]) + int(values["in-pack"])


def fsck_clone(git: Git, repo: Repo, dest: Path, *args: str) -> dict[str, str]:
    clone(git, repo, dest, *args)
    result = git.run("fsck", "--strict", "--no-progress", cwd=dest, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = git.out("for-each-ref", "--format=%(objectname) %(refname)", cwd=dest)
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines())}


@pytest.fixture
def parent(sqlite_server: Server, tmp_path: Path, unique_name: str) -> tuple[Repo, Git, Path]:
    """A parent with two branches and a tag; part loose objects, part packed."""
    git = Git(tmp_path / "home")
    work = tmp_path / "parent-work"
    repo = create_repo(sqlite_server, unique_name, description="the parent")
    git.new_work(work, {"README.md": "# parent\n", "data.bin": os.urandom(200_000)})
    git.run("tag", "-a", "v1", "-m", "v1", cwd=work)
    git.run("checkout", "-q", "-b", "other", cwd=work)
    git.commit_files(work, {"other.txt": "only on other\n"}, "Other branch")
    git.run("checkout", "-q", "main", cwd=work)
    push(git, repo, work, "main", "other", "v1")
    git.commit_files(work, {"README.md": "# parent 2\n"}, "Second")
    push(git, repo, work, "main")  # a small push: kept as loose objects
    return repo, git, work


def test_fork_shape_refs_and_hardlinks(sqlite_server: Server, parent: tuple[Repo, Git, Path],
                                       tmp_path: Path) -> None:
    repo, git, _work = parent
    with sqlite_server.client() as c:
        r = c.post(f"/repos/{repo.name}/fork", json={"name": f"{repo.name}-f"})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert set(result) == {"id", "name", "description", "default_branch", "remote", "token",
                               "expires_at", "objects"}
        assert_token_expiry(result)
        assert result["name"] == f"{repo.name}-f" and result["id"] != repo.id
        assert result["description"] == "the parent" and result["default_branch"] == "main"
        assert TOKEN.fullmatch(result["token"])
        assert result["remote"].endswith(f"/default/{repo.name}-f.git")
        assert result["objects"] == object_count(repo.git_dir) > 0
        info = c.get(f"/repos/{repo.name}-f").json()["result"]
        assert info["source"] == f"fork:default/{repo.name}" and info["status"] == "ready"
        assert info["read_only"] is False and info["size"] > 200_000
    child = Repo(sqlite_server, result["name"], result["id"], result["remote"], result["token"])
    assert child.refs() == repo.refs()
    child.fsck()
    # No bytes were copied: every pack of the fork is the parent's inode.
    for pack in (repo.git_dir / "objects" / "pack").glob("*.pack"):
        assert (child.git_dir / "objects" / "pack" / pack.name).stat().st_ino == pack.stat().st_ino
    refs = fsck_clone(git, child, tmp_path / "clone")
    assert refs["refs/remotes/origin/other"] == repo.refs()["refs/heads/other"]
    assert refs["refs/tags/v1"] == repo.refs()["refs/tags/v1"]
    # The parent's token is not a credential for the fork.
    bad = git.run("-c", bearer(repo.token), "ls-remote", child.remote, check=False)
    assert bad.returncode != 0


def test_fork_options(sqlite_server: Server, parent: tuple[Repo, Git, Path], tmp_path: Path) -> None:
    repo, git, work = parent
    child = fork(sqlite_server, repo.name, f"{repo.name}-dbo", description="Fork for testing",
                 read_only=True, default_branch_only=True)
    info = child.info()
    assert info["description"] == "Fork for testing" and info["read_only"] is True
    assert child.refs() == {"refs/heads/main": repo.refs()["refs/heads/main"]}
    refs = fsck_clone(git, child, tmp_path / "clone")
    assert "refs/remotes/origin/other" not in refs and "refs/tags/v1" not in refs
    # The other branch's objects ride along in the linked packs. They are never advertised,
    # and protocol v0/v1 refuses a want of them. (Protocol v2 upload-pack does not check
    # reachability of wants at all, so there they are fetchable by exact id: git's own
    # behaviour, documented in docs/api.md.)
    other = repo.refs()["refs/heads/other"]
    want = git.run("-c", bearer(child.token), "-c", "protocol.version=0", "fetch", child.remote,
                   other, cwd=tmp_path / "clone", check=False)
    assert want.returncode != 0 and "not our ref" in want.stderr + want.stdout
    # read_only: pushes refused.
    pushed = git.run("-c", bearer(child.token), "push", child.remote, "HEAD:refs/heads/x",
                     cwd=work, check=False)
    assert pushed.returncode != 0 and "read-only" in pushed.stderr


def test_fork_diverges_and_is_isolated(sqlite_server: Server, parent: tuple[Repo, Git, Path],
                                       tmp_path: Path) -> None:
    repo, git, work = parent
    original = repo.refs()["refs/heads/main"]
    a = fork(sqlite_server, repo.name, f"{repo.name}-a")
    b = fork(sqlite_server, repo.name, f"{repo.name}-b")
    work_a = clone(git, a, tmp_path / "a")
    secret_commit = git.commit_files(work_a, {"secret.txt": "only in fork a\n"}, "Fork A work")
    secret_blob = git.out("rev-parse", "HEAD:secret.txt", cwd=work_a)
    push(git, a, work_a, "HEAD:main")
    parent_new = git.commit_files(work, {"parent.txt": "only in parent\n"}, "Parent work")
    push(git, repo, work, "main")
    assert a.refs()["refs/heads/main"] == secret_commit
    assert repo.refs()["refs/heads/main"] == parent_new
    assert b.refs()["refs/heads/main"] == original
    with sqlite_server.client() as c:
        assert c.get(f"/repos/{a.name}/blob/{secret_blob}").content == b"only in fork a\n"
        for other in (repo.name, b.name):
            envelope_error(c.get(f"/repos/{other}/blob/{secret_blob}"), 404, 11202)
            envelope_error(c.get(f"/repos/{other}/commit/{secret_commit}"), 404, 11202)
        envelope_error(c.get(f"/repos/{a.name}/commit/{parent_new}"), 404, 11202)
    # Fetching another fork's object by id over git is refused too.
    b_clone = clone(git, b, tmp_path / "b")
    want = git.run("-c", bearer(b.token), "fetch", b.remote, secret_commit, cwd=b_clone, check=False)
    assert want.returncode != 0


def test_delete_parent_and_gc_never_break_the_fork(
    sqlite_server: Server, parent: tuple[Repo, Git, Path], tmp_path: Path
) -> None:
    repo, git, work = parent
    child = fork(sqlite_server, repo.name, f"{repo.name}-kept")
    before = child.refs()
    # The parent rewrites history and collects garbage: the objects the fork needs go.
    git.run("checkout", "-q", "--orphan", "fresh", cwd=work)
    git.commit_files(work, {"new.txt": "rewritten\n"}, "Rewritten")
    git.run("-c", bearer(repo.token), "push", "-q", "--force", repo.remote, "HEAD:main",
            ":other", ":v1", cwd=work)
    subprocess.run(["git", f"--git-dir={repo.git_dir}", "-c", "gc.reflogExpire=now",
                    "gc", "-q", "--prune=now"], check=True, capture_output=True)
    assert object_count(repo.git_dir) < object_count(child.git_dir)
    child.fsck()
    fsck_clone(git, child, tmp_path / "after-gc")
    # Then the parent is deleted and its directory swept from the trash.
    with sqlite_server.client() as c:
        assert c.delete(f"/repos/{repo.name}").status_code == 202
    assert not repo.git_dir.exists()
    assert child.refs() == before
    child.fsck()
    refs = fsck_clone(git, child, tmp_path / "after-delete")
    assert refs["refs/remotes/origin/main"] == before["refs/heads/main"]
    with sqlite_server.client() as c:
        log = c.get(f"/repos/{child.name}/log").json()["result"]
        assert log[0]["sha"] == before["refs/heads/main"]


def test_fork_of_fork(sqlite_server: Server, parent: tuple[Repo, Git, Path], tmp_path: Path) -> None:
    repo, git, _work = parent
    a = fork(sqlite_server, repo.name, f"{repo.name}-1")
    work_a = clone(git, a, tmp_path / "a")
    a_head = git.commit_files(work_a, {"a.txt": "a\n"}, "In fork 1")
    push(git, a, work_a, "HEAD:main")
    b = fork(sqlite_server, a.name, f"{repo.name}-2")
    assert b.info()["source"] == f"fork:default/{a.name}"
    assert b.refs()["refs/heads/main"] == a_head
    with sqlite_server.client() as c:
        assert c.delete(f"/repos/{repo.name}").status_code == 202
        assert c.delete(f"/repos/{a.name}").status_code == 202
    b.fsck()
    refs = fsck_clone(git, b, tmp_path / "b")
    assert refs["refs/remotes/origin/main"] == a_head
    work_b = tmp_path / "b"
    git.commit_files(work_b, {"b.txt": "b\n"}, "In fork 2")
    push(git, b, work_b, "HEAD:main")
    b.fsck()


def test_fork_of_never_pushed_repo(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    create_repo(sqlite_server, unique_name, default_branch="trunk")
    child = fork(sqlite_server, unique_name, f"{unique_name}-f")
    info = child.info()
    assert info["default_branch"] == "trunk"
    with sqlite_server.client() as c:
        r = c.post(f"/repos/{unique_name}/fork", json={"name": f"{unique_name}-g"})
        assert r.json()["result"]["objects"] == 0
        envelope_error(c.get(f"/repos/{child.name}/log"), 404, 11201)
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work)
    push(git, child, work, "HEAD:trunk")
    child.fsck()


def test_fork_bad_input(sqlite_server: Server, parent: tuple[Repo, Git, Path]) -> None:
    repo, _git, _work = parent
    taken = f"{repo.name}-taken"
    create_repo(sqlite_server, taken)
    repos_dir = sqlite_server.data_dir / "repos"
    before = {p.name for p in repos_dir.glob("*/*/*.git")}
    with sqlite_server.client() as c:
        url = f"/repos/{repo.name}/fork"
        envelope_error(c.post("/repos/no-such-parent/fork", json={"name": "x1"}), 404, 10200)
        err = envelope_error(c.post(url, json={"name": taken}), 409, 10201)
        assert err["source"]["pointer"] == "/name"
        err = envelope_error(c.post(url, json={"name": repo.name}), 409, 10201)
        for bad in ("", "-x", "a b", "a/b", "x" * 65, "..", "é"):
            err = envelope_error(c.post(url, json={"name": bad}), 400, 10101)
            assert err["source"]["pointer"] == "/name"
        envelope_error(c.post(url, json={}), 400, 10100)
        envelope_error(c.post(url, json={"name": "ok-name", "default_branch_only": "yes"}), 400, 10100)
        envelope_error(c.post(url, json={"name": 7, "unknown": 1}), 400, 10100)
        envelope_error(c.post(url, content=b"{"), 400, 11003)
        assert c.get("/repos/ok-name").status_code == 404
    with sqlite_server.client(sqlite_server.read_token) as c:
        envelope_error(c.post(f"/repos/{repo.name}/fork", json={"name": "by-reader"}), 403, 11012)
    # Nothing half-created: no new repo directory, nothing left in tmp.
    assert {p.name for p in repos_dir.glob("*/*/*.git")} == before
    assert not list((sqlite_server.data_dir / "tmp").glob("fork-*"))


def test_fork_and_read_on_each_database(server: Server, tmp_path: Path, unique_name: str) -> None:
    """Fork and content reads on SQLite and PostgreSQL (auth runs in the thread pool there)."""
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(server, unique_name)
    sha = git.new_work(work, {"a.txt": "hello\n"})
    push(git, repo, work, "main")
    child = fork(server, unique_name, f"{unique_name}-f")
    with server.client() as c:
        assert c.get(f"/repos/{child.name}/file", params={"path": "a.txt"}).content == b"hello\n"
        assert c.get(f"/repos/{child.name}/log").json()["result"][0]["sha"] == sha
        assert c.get(f"/repos/{child.name}").json()["result"]["source"] == f"fork:default/{unique_name}"
        envelope_error(c.post(f"/repos/{unique_name}/import", json={"url": "https://127.0.0.1/x"}),
                       400, 11090)
