"""Writes without a git client (issue 13 part 1): commits from files, refs, merge, notes.

Everything is checked with the git CLI on a clone (fsck --strict, log, show), against the
shared SQLite server.
"""

from __future__ import annotations

import base64
import random
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.gitutil import ZERO, Git, Repo, create_repo, object_files
from tests.harness import Server
from tests.seed import clone, seeded
from tests.test_control_plane import envelope_error

AUTHOR = {"name": "Agent Smith", "email": "agent@example.com", "date": "2026-01-02T03:04:05Z"}


def _name(prefix: str) -> str:
    return f"{prefix}-{random.randrange(1 << 30)}"


def commit(server: Server, repo: str, changes: list[dict[str, object]], *, branch: str = "main",
           token: str | None = None, **fields: object) -> httpx.Response:
    body = {"branch": branch, "message": "REST commit", "author": AUTHOR, "changes": changes,
            **fields}
    with server.client(token) as c:
        return c.post(f"/repos/{repo}/commits", json=body)


def ok(response: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    return dict(body["result"])


@pytest.fixture
def git(tmp_path: Path) -> Git:
    return Git(tmp_path / "home")


@pytest.fixture
def base_repo(sqlite_server: Server, git: Git, tmp_path: Path) -> tuple[Repo, str]:
    return seeded(sqlite_server, git, tmp_path / "seed", _name("writes"),
                  {"README.md": "# base\n", "src/a.txt": "a\n", "old.txt": "old\n"})


def fresh_clone(git: Git, repo: Repo, dest: Path) -> Path:
    clone(git, repo, dest)
    git.run("fsck", "--strict", "--no-progress", cwd=dest)
    return dest


# -- commits ---------------------------------------------------------------------------------


def test_commit_put_delete_move_verified_with_git(sqlite_server: Server, git: Git, tmp_path: Path,
                                                  base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    result = ok(commit(sqlite_server, repo.name, [
        {"op": "put", "path": "docs/new.md", "content": "new\n"},
        {"op": "put", "path": "bin/run.sh", "content": "#!/bin/sh\n", "mode": "100755"},
        {"op": "put", "path": "data.bin", "content": base64.b64encode(b"\x00\xff").decode(),
         "encoding": "base64"},
        {"op": "put", "path": "link", "content": "README.md", "mode": "120000"},
        {"op": "delete", "path": "old.txt"},
        {"op": "move", "from": "src/a.txt", "path": "src/b.txt"},
    ], expected_head=head))
    assert result["branch"] == "main" and result["parents"] == [head]
    assert repo.refs()["refs/heads/main"] == result["sha"]
    work = fresh_clone(git, repo, tmp_path / "clone")
    assert git.out("rev-parse", "HEAD", cwd=work) == result["sha"]
    assert git.out("rev-parse", "HEAD^{tree}", cwd=work) == result["tree"]
    assert git.out("log", "-1", "--format=%an <%ae>|%s|%aI", cwd=work) == \
        "Agent Smith <agent@example.com>|REST commit|2026-01-02T03:04:05+00:00"
    assert sorted(git.out("ls-files", cwd=work).split()) == [
        "README.md", "bin/run.sh", "data.bin", "docs/new.md", "link", "src/b.txt"]
    assert (work / "data.bin").read_bytes() == b"\x00\xff"
    assert (work / "src/b.txt").read_text() == "a\n"
    assert (work / "link").is_symlink()
    assert git.out("ls-files", "-s", "bin/run.sh", cwd=work).startswith("100755")
    assert "R100\tsrc/a.txt\tsrc/b.txt" in git.out("show", "-M", "--name-status",
                                                   "--format=", "HEAD", cwd=work)
    repo.fsck()


def _disk_bytes(git_dir: Path) -> int:
    return sum(f.lstat().st_size for f in object_files(git_dir))


def test_commits_without_a_date_are_the_trees_git_makes(sqlite_server: Server, git: Git,
                                                          tmp_path: Path,
                                                          base_repo: tuple[Repo, str]) -> None:
    """Commits made in-process (no explicit date) have the very trees the git CLI makes for
    the same changes, including files turned into directories and back, directories left
    empty and a commit that removes every file; the identity is trimmed as git trims it,
    and the recorded size is what the disk holds."""
    repo, head = base_repo
    work = clone(git, repo, tmp_path / "mirror")
    rounds: list[list[dict[str, object]]] = [
        [{"op": "put", "path": "deep/a/b/c.txt", "content": "c\n"},
         {"op": "put", "path": "x", "content": "x\n"},
         {"op": "put", "path": "dir/one", "content": "1\n"},
         {"op": "put", "path": "dir/two", "content": "2\n", "mode": "100755"},
         {"op": "put", "path": "same.txt", "content": "a\n"},  # the blob of src/a.txt
         {"op": "put", "path": "README.md", "content": "# base\n"}],  # what it holds
        [{"op": "delete", "path": "x"}, {"op": "put", "path": "x/y", "content": "y\n"},
         {"op": "delete", "path": "dir/one"}, {"op": "delete", "path": "dir/two"},
         {"op": "put", "path": "dir", "content": "now a file\n"},
         {"op": "move", "from": "src/a.txt", "path": "deep/a/moved.txt"},
         {"op": "put", "path": "deep/a/b/c.txt", "content": "c2\n"}],
        [{"op": "delete", "path": path} for path in
         ("README.md", "old.txt", "same.txt", "x/y", "dir", "deep/a/moved.txt",
          "deep/a/b/c.txt")],
    ]
    parent = head
    objects = repo.git_dir / "objects"
    existing_blob = git.out("rev-parse", "HEAD:README.md", cwd=work)
    for changes in rounds:
        packs = set(objects.glob("pack/*.pack"))
        loose = set(objects.glob("[0-9a-f][0-9a-f]/*"))
        made = ok(commit(sqlite_server, repo.name, changes, expected_head=parent,
                         author={"name": " Agent Smith. ", "email": "agent@example.com;"}))
        assert made["parents"] == [parent]
        parent = made["sha"]
        # A few objects are written loose (git's rule), no pack; nothing left half-written.
        assert set(objects.glob("pack/*.pack")) == packs
        written = {f"{path.parent.name}{path.name}"
                   for path in set(objects.glob("[0-9a-f][0-9a-f]/*")) - loose}
        assert {made["sha"], made["tree"]} <= written
        assert existing_blob not in written  # a file put as it was is not written again
        assert not list(objects.glob("*/tmp_*"))
        for change in changes:  # the same changes, made by git in a work tree
            target = work / str(change["path"])
            if change["op"] == "delete":
                git.run("rm", "-q", "-f", "--", str(change["path"]), cwd=work)
            elif change["op"] == "move":
                target.parent.mkdir(parents=True, exist_ok=True)
                git.run("mv", "--", str(change["from"]), str(change["path"]), cwd=work)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(str(change["content"]))
                if change.get("mode") == "100755":
                    target.chmod(0o755)
                git.run("add", "--", str(change["path"]), cwd=work)
        expected_tree = git.out("write-tree", cwd=work)
        assert made["tree"] == expected_tree, changes
    assert made["tree"] == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree
    # Many objects are one pack (renamed into place with its index), nothing loose.
    packs = set(objects.glob("pack/*.pack"))
    loose = set(objects.glob("[0-9a-f][0-9a-f]/*"))
    many = ok(commit(sqlite_server, repo.name, [
        {"op": "put", "path": f"many/{i:03d}.txt", "content": f"{i}\n"} for i in range(120)],
        expected_head=parent, author={"name": "Agent Smith", "email": "agent@example.com"}))
    (new_pack,) = set(objects.glob("pack/*.pack")) - packs
    assert set(objects.glob("[0-9a-f][0-9a-f]/*")) == loose
    listed = subprocess.run(["git", "verify-pack", "-v", str(new_pack.with_suffix(".idx"))],
                            capture_output=True, text=True, check=True).stdout
    assert many["sha"] in listed and many["tree"] in listed and "blob" in listed
    assert not list((objects / "pack").glob("tmp_*"))
    check = fresh_clone(git, repo, tmp_path / "check")
    assert git.out("log", "-4", "--format=%an <%ae>|%cn <%ce>", cwd=check).splitlines() == [
        "Agent Smith <agent@example.com>|Agent Smith <agent@example.com>"] * 4
    assert git.out("rev-list", "--count", "HEAD", cwd=check) == "5"
    assert len(git.out("ls-files", cwd=check).split()) == 120
    repo.fsck()
    assert repo.info()["size"] == _disk_bytes(repo.git_dir)


def test_commit_new_branch_from_base_and_root_commit(sqlite_server: Server, git: Git,
                                                      tmp_path: Path,
                                                      base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    made = ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "f.txt", "content": "f"}],
                     branch="feature/one", base="main"))
    assert made["parents"] == [head]
    missing = commit(sqlite_server, repo.name, [{"op": "put", "path": "g", "content": "g"}],
                     branch="nobase")
    assert envelope_error(missing, 404)["source"]["pointer"] == "/branch"
    empty = create_repo(sqlite_server, _name("empty"))
    root = ok(commit(sqlite_server, empty.name, [{"op": "put", "path": "a", "content": "a"}]))
    assert root["parents"] == []
    work = fresh_clone(git, empty, tmp_path / "empty")
    assert (work / "a").read_text() == "a"


def test_expected_head_is_compare_and_swap(sqlite_server: Server,
                                           base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "x", "content": "1"}],
              expected_head=head))
    stale = commit(sqlite_server, repo.name, [{"op": "put", "path": "x", "content": "2"}],
                   expected_head=head)
    error = envelope_error(stale, 409, 12000)
    assert error["source"]["pointer"] == "/expected_head"


BAD_CHANGES: list[tuple[list[dict[str, object]], int, str]] = [
    ([{"op": "put", "path": "../x", "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "/abs", "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "a/.git/config", "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": ".GIT", "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "a\u0000b", "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "a" * 4097, "content": ""}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "b64", "content": "not base64!", "encoding": "base64"}], 400,
     "/changes/0/content"),
    ([{"op": "put", "path": "m", "content": "", "mode": "160000"}], 400, "/changes/0/mode"),
    ([{"op": "put", "path": "d", "content": "1"}, {"op": "put", "path": "d/e", "content": "2"}],
     400, "/changes/1/path"),
    ([{"op": "put", "path": "README.md/x", "content": "1"}], 400, "/changes/0/path"),
    ([{"op": "put", "path": "src", "content": "1"}], 400, "/changes/0/path"),
    ([{"op": "delete", "path": "missing.txt"}], 404, "/changes/0/path"),
    ([{"op": "move", "from": "missing.txt", "path": "y"}], 404, "/changes/0/from"),
    ([{"op": "put", "path": "p", "content": "1"}, {"op": "delete", "path": "p"}], 400,
     "/changes/1/path"),
    ([{"op": "rename", "path": "p"}], 400, "/changes/0/op"),
    ([], 400, "/changes"),
    ([{"op": "put", "path": f"f{i}", "content": ""} for i in range(10_000)], 400, "/changes"),
]


@pytest.mark.parametrize("changes,status,pointer", BAD_CHANGES,
                         ids=[str(i) for i in range(len(BAD_CHANGES))])
def test_bad_changes_write_nothing(sqlite_server: Server, base_repo: tuple[Repo, str],
                                   changes: list[dict[str, object]], status: int,
                                   pointer: str) -> None:
    repo, head = base_repo
    before = repo.refs()
    objects = sorted((repo.git_dir / "objects").rglob("*"))
    error = envelope_error(commit(sqlite_server, repo.name, changes), status)
    assert error["source"]["pointer"] == pointer, error
    assert repo.refs() == before == {"refs/heads/main": head}
    assert sorted((repo.git_dir / "objects").rglob("*")) == objects, "a refused commit wrote objects"


def test_refused_commit_writes_no_object(sqlite_server: Server,
                                         base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    objects = sorted((repo.git_dir / "objects").rglob("*"))
    refused = commit(sqlite_server, repo.name, [
        {"op": "put", "path": "new-content.txt", "content": "never stored\n"},
        {"op": "delete", "path": "missing.txt"}])
    assert envelope_error(refused, 404)["source"]["pointer"] == "/changes/1/path"
    assert sorted((repo.git_dir / "objects").rglob("*")) == objects


@pytest.mark.parametrize("fields,pointer", [
    ({"expected_head": "abc"}, "/expected_head"),
    ({"branch": "bad..name"}, "/branch"),
    ({"branch": "-x"}, "/branch"),
    ({"message": ""}, "/message"),
    ({"author": {"name": "a<b", "email": "x@y"}}, "/author/name"),
    ({"author": {"name": "a", "email": "x\ny"}}, "/author/email"),
    ({"base": "a..b", "branch": "new"}, "/base"),
])
def test_bad_fields(sqlite_server: Server, base_repo: tuple[Repo, str],
                    fields: dict[str, object], pointer: str) -> None:
    repo, head = base_repo
    error = envelope_error(commit(sqlite_server, repo.name,
                                  [{"op": "put", "path": "z", "content": "z"}], **fields), 400)
    assert error["source"]["pointer"] == pointer
    assert repo.refs() == {"refs/heads/main": head}


def test_read_only_repo_and_read_token_refused(sqlite_server: Server, git: Git,
                                               tmp_path: Path) -> None:
    repo, head = seeded(sqlite_server, git, tmp_path / "ro", _name("ro"))
    with sqlite_server.client() as c:
        forked = c.post(f"/repos/{repo.name}/fork", json={"name": _name("rofork"),
                                                          "read_only": True})
        assert forked.status_code == 200, forked.text
    read_only = forked.json()["result"]["name"]
    change = [{"op": "put", "path": "z", "content": "z"}]
    envelope_error(commit(sqlite_server, read_only, change), 403, 11033)
    envelope_error(commit(sqlite_server, repo.name, change, token=sqlite_server.read_token), 403)
    assert repo.refs() == {"refs/heads/main": head}


def test_commit_counts_as_a_push(sqlite_server: Server, base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    before = repo.info()
    ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "big.bin", "content": base64.b64encode(
        random.Random(3).randbytes(50_000)).decode(), "encoding": "base64"}]))
    after = repo.info()
    assert after["last_push_at"] is not None and after["last_push_at"] != before["last_push_at"]


def test_rest_commits_racing_git_pushes_lose_nothing(sqlite_server: Server, git: Git,
                                                     tmp_path: Path,
                                                     base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    work = clone(git, repo, tmp_path / "racer")
    won: list[str] = []
    won_paths: list[str] = []
    lost: list[int] = []

    def rest() -> None:
        for i in range(8):
            response = commit(sqlite_server, repo.name,
                              [{"op": "put", "path": f"rest/{i}", "content": str(i)}],
                              expected_head=None)
            if response.status_code == 200:
                won.append(response.json()["result"]["sha"])
                won_paths.append(f"rest/{i}")
            else:
                lost.append(envelope_error(response, 409)["code"])

    thread = threading.Thread(target=rest)
    thread.start()
    pushed: list[str] = []
    for i in range(8):
        sha = git.commit_files(work, {f"push/{i}": str(i)}, f"push {i}")
        result = git.run("-c", f"http.extraHeader=Authorization: Bearer {repo.token}", "push",
                         "-q", repo.remote, "HEAD:refs/heads/main", cwd=work, check=False)
        if result.returncode == 0:
            pushed.append(sha)
        else:
            git.run("-c", f"http.extraHeader=Authorization: Bearer {repo.token}", "pull", "-q",
                    "--rebase", repo.remote, "main", cwd=work)
    thread.join()
    check = fresh_clone(git, repo, tmp_path / "check")
    history = set(git.out("rev-list", "HEAD", cwd=check).split())
    assert head in history
    assert set(won) <= history, "a REST commit that was answered 200 is missing"
    assert set(lost) <= {12000}
    assert set(pushed) <= history, "a push git reported as done is missing"
    files = set(git.out("ls-files", cwd=check).split())
    assert {p for p in files if p.startswith("rest/")} == set(won_paths)
    assert len(won) + len(lost) == 8 and won, (won, lost)


def test_commit_waits_for_a_held_ref_lock_as_git_does(sqlite_server: Server,
                                                      base_repo: tuple[Repo, str]) -> None:
    """A branch whose lock file another writer holds (a push, maintenance packing refs) is
    retried for git's 100 ms, then refused with nothing moved."""
    repo, head = base_repo
    lock = repo.git_dir / "refs" / "heads" / "main.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(head + "\n")
    threading.Timer(0.03, lock.unlink).start()
    waited = ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "w", "content": "w"}],
                       expected_head=head))
    assert repo.refs()["refs/heads/main"] == waited["sha"]
    lock.write_text(head + "\n")
    try:
        held = commit(sqlite_server, repo.name, [{"op": "put", "path": "h", "content": "h"}])
        assert envelope_error(held, 409, 12000)["source"]["pointer"] == "/branch"
        assert repo.refs()["refs/heads/main"] == waited["sha"]
    finally:
        lock.unlink()


def test_concurrent_rest_commits_one_wins_each_round(sqlite_server: Server, git: Git,
                                                     tmp_path: Path,
                                                     base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    answers: list[tuple[str, int, str]] = []

    def writer(n: int) -> None:
        for i in range(5):
            response = commit(sqlite_server, repo.name,
                              [{"op": "put", "path": f"w{n}/{i}", "content": f"{n} {i}"}])
            sha = response.json()["result"]["sha"] if response.status_code == 200 else ""
            answers.append((f"w{n}/{i}", response.status_code, sha))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for _, status, _ in answers} <= {200, 409}
    work = fresh_clone(git, repo, tmp_path / "check")
    history = set(git.out("rev-list", "HEAD", cwd=work).split())
    files = set(git.out("ls-files", cwd=work).split())
    won = {(path, sha) for path, status, sha in answers if status == 200}
    assert won, answers
    assert {sha for _, sha in won} <= history
    assert {path for path, _ in won} == {p for p in files if p.startswith("w")}


# -- refs ------------------------------------------------------------------------------------


def test_refs_create_list_move_delete(sqlite_server: Server, git: Git, tmp_path: Path,
                                      base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    with sqlite_server.client() as c:
        made = ok(c.post(f"/repos/{repo.name}/branches", json={"name": "dev", "target": "main"}))
        assert made == {"name": "dev", "ref": "refs/heads/dev", "kind": "branch",
                        "target": head, "object_type": "commit"}
        envelope_error(c.post(f"/repos/{repo.name}/branches",
                              json={"name": "dev", "target": "main"}), 409, 12004)
        envelope_error(c.post(f"/repos/{repo.name}/branches",
                              json={"name": "x", "target": "nope"}), 404)
        for i in range(3):
            ok(c.post(f"/repos/{repo.name}/branches", json={"name": f"b{i}", "target": head}))
        page = c.get(f"/repos/{repo.name}/refs", params={"per_page": 2, "kind": "branches"})
        first = page.json()
        assert [r["name"] for r in first["result"]] == ["b0", "b1"]
        rest = c.get(f"/repos/{repo.name}/refs", params={
            "per_page": 10, "kind": "branches", "cursor": first["result_info"]["cursor"]})
        assert [r["name"] for r in rest.json()["result"]] == ["b2", "dev", "main"]
        assert rest.json()["result_info"]["cursor"] == ""
    newer = ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "n", "content": "n"}],
                      branch="dev"))["sha"]
    with sqlite_server.client() as c:
        moved = ok(c.patch(f"/repos/{repo.name}/refs",
                           json={"ref": "main", "target": newer, "expected": head}))
        assert moved["target"] == newer
        stale = c.patch(f"/repos/{repo.name}/refs", json={"ref": "b0", "target": newer,
                                                          "expected": newer})
        envelope_error(stale, 409, 12000)
        backwards = c.patch(f"/repos/{repo.name}/refs", json={"ref": "main", "target": head})
        envelope_error(backwards, 409, 12007)
        envelope_error(c.patch(f"/repos/{repo.name}/refs",
                               json={"ref": "refs/meta/x", "target": head}), 400)
        envelope_error(c.delete(f"/repos/{repo.name}/refs/b1", params={"expected": newer}),
                       409, 12000)
        ok(c.delete(f"/repos/{repo.name}/refs/b1", params={"expected": head}))
        envelope_error(c.delete(f"/repos/{repo.name}/refs/b1"), 404)
        envelope_error(c.delete(f"/repos/{repo.name}/refs/main"), 400)
    refs = repo.refs()
    assert "refs/heads/b1" not in refs and refs["refs/heads/main"] == newer
    work = fresh_clone(git, repo, tmp_path / "refs")
    assert git.out("rev-parse", "origin/b2", cwd=work) == head


# -- merge -----------------------------------------------------------------------------------


def _fork(server: Server, repo: Repo) -> str:
    name = _name("fork")
    with server.client() as c:
        ok(c.post(f"/repos/{repo.name}/fork", json={"name": name}))
    return name


def test_merge_agent_fork_into_baseline(sqlite_server: Server, git: Git, tmp_path: Path,
                                        base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    fork = _fork(sqlite_server, repo)
    agent = ok(commit(sqlite_server, fork, [{"op": "put", "path": "agent.txt",
                                             "content": "work\n"}]))["sha"]
    ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "base.txt", "content": "b\n"}]))
    with sqlite_server.client() as c:
        dry = ok(c.post(f"/repos/{repo.name}/merge", json={"head": f"{fork}:main",
                                                           "dry_run": True}))
        assert dry["mergeable"] is True and dry["sha"] is None and dry["merge_base"] == head
        assert dry["conflicts"] == [] and dry["head"] == agent
        done = ok(c.post(f"/repos/{repo.name}/merge", json={
            "head": f"{fork}:main", "target": "main", "message": "Merge the agent's work"}))
    assert done["mergeable"] is True and len(done["sha"]) == 40
    work = fresh_clone(git, repo, tmp_path / "baseline")
    assert git.out("log", "-1", "--format=%s|%P", cwd=work).split("|")[0] == \
        "Merge the agent's work"
    assert agent in git.out("log", "-1", "--format=%P", cwd=work).split()
    assert (work / "agent.txt").read_text() == "work\n" and (work / "base.txt").exists()
    repo.fsck()


def test_fast_forward_from_a_fork(sqlite_server: Server, git: Git, tmp_path: Path,
                                  base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    fork = _fork(sqlite_server, repo)
    ahead = ok(commit(sqlite_server, fork, [{"op": "put", "path": "ff.txt", "content": "ff\n"}]))
    with sqlite_server.client() as c:
        done = ok(c.post(f"/repos/{repo.name}/merge", json={"head": f"{fork}:main",
                                                           "strategy": "fast-forward"}))
    assert done["sha"] == ahead["sha"]
    work = fresh_clone(git, repo, tmp_path / "ff")
    assert (work / "ff.txt").read_text() == "ff\n"
    repo.fsck()


def _diverged(server: Server, repo: Repo) -> None:
    ok(commit(server, repo.name, [{"op": "put", "path": "README.md", "content": "ours\n"}],
              branch="ours", base="main"))
    ok(commit(server, repo.name, [{"op": "put", "path": "README.md", "content": "theirs\n"}],
              branch="theirs", base="main"))


def test_merge_conflicts_dry_run_and_409(sqlite_server: Server,
                                         base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    _diverged(sqlite_server, repo)
    before = repo.refs()
    objects = sorted((repo.git_dir / "objects").rglob("*"))
    with sqlite_server.client() as c:
        dry = ok(c.post(f"/repos/{repo.name}/merge", json={
            "head": "theirs", "target": "ours", "dry_run": True}))
        assert sorted((repo.git_dir / "objects").rglob("*")) == objects, "a dry run wrote"
        assert dry["mergeable"] is False and [f["path"] for f in dry["conflicts"]] == ["README.md"]
        hunk = dry["conflicts"][0]["hunks"][0]
        assert hunk.startswith("<<<<<<< ") and "ours\n=======\ntheirs\n>>>>>>> " in hunk
        real = c.post(f"/repos/{repo.name}/merge", json={"head": "theirs", "target": "ours"})
        error = envelope_error(real, 409, 12005)
        assert [f["path"] for f in error["conflicts"]] == ["README.md"]
        assert sorted((repo.git_dir / "objects").rglob("*")) == objects, "a refused merge wrote"
        ff = c.post(f"/repos/{repo.name}/merge", json={"head": "theirs", "target": "ours",
                                                       "strategy": "fast-forward"})
        envelope_error(ff, 409, 12007)
    assert repo.refs() == before


def test_merge_squash_and_fast_forward(sqlite_server: Server, git: Git, tmp_path: Path,
                                       base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    ahead = ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "f", "content": "f"}],
                      branch="topic", base="main"))["sha"]
    with sqlite_server.client() as c:
        ff = ok(c.post(f"/repos/{repo.name}/merge", json={"head": "topic",
                                                          "strategy": "fast-forward"}))
        assert ff["sha"] == ahead and ff["fast_forward"] is True
        ok(commit(sqlite_server, repo.name, [{"op": "put", "path": "g", "content": "g"}],
                  branch="topic2", base=head))
        squash = ok(c.post(f"/repos/{repo.name}/merge", json={"head": "topic2",
                                                              "strategy": "squash"}))
    work = fresh_clone(git, repo, tmp_path / "squash")
    assert git.out("log", "-1", "--format=%P", cwd=work) == ahead
    assert git.out("rev-parse", "HEAD", cwd=work) == squash["sha"]
    assert (work / "f").exists() and (work / "g").exists()


def test_merge_bad_input(sqlite_server: Server, git: Git, tmp_path: Path,
                         base_repo: tuple[Repo, str]) -> None:
    repo, _ = base_repo
    other, _ = seeded(sqlite_server, git, tmp_path / "other", _name("unrelated"))
    with sqlite_server.client() as c:
        url = f"/repos/{repo.name}/merge"
        unrelated = c.post(url, json={"head": f"{other.name}:main", "dry_run": True})
        assert envelope_error(unrelated, 409, 12006)["source"]["pointer"] == "/head"
        missing = c.post(url, json={"head": "no-such-repo:main"})
        envelope_error(missing, 404, 10200)
        for body, pointer in [({"head": "a..b"}, "/head"), ({"head": "x", "strategy": "rebase"},
                                                            "/strategy"),
                              ({"head": "main", "expected_head": "zz"}, "/expected_head")]:
            assert envelope_error(c.post(url, json=body), 400)["source"]["pointer"] == pointer
    # A repo of another account: the same answer as a missing one.
    stranger = sqlite_server.new_api_token("edit", account="f" * 32)
    with httpx.Client(base_url=sqlite_server.url + f"/client/v4/accounts/{'f' * 32}/artifacts/"
                      "namespaces/default", headers={"Authorization": f"Bearer {stranger['token']}"}) as c:
        own = c.post("/repos", json={"name": _name("mine")})
        assert own.status_code == 200, own.text
        mine = own.json()["result"]["name"]
        ok(c.post(f"/repos/{mine}/commits", json={"branch": "main", "message": "m", "changes": [
            {"op": "put", "path": "a", "content": "a"}]}))
        envelope_error(c.post(f"/repos/{mine}/merge",
                              json={"head": f"{repo.name}:main", "dry_run": True}), 404, 10200)


# -- notes -----------------------------------------------------------------------------------


def test_notes_write_read_remove(sqlite_server: Server, git: Git, tmp_path: Path,
                                 base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    url = f"/repos/{repo.name}/notes/{head}"
    with sqlite_server.client() as c:
        envelope_error(c.get(url), 404, 12008)
        note = ok(c.put(url, json={"message": "prompt: do the thing"}))
        assert note["notes_ref"] == "refs/notes/commits"
        assert ok(c.get(url))["message"] == "prompt: do the thing\n"
        ok(c.put(url, json={"message": "model output", "notes_ref": "agent"}))
        replaced = ok(c.put(url, json={"message": "second", "expected": note["notes_commit"]}))
        envelope_error(c.put(url, json={"message": "x", "expected": note["notes_commit"]}),
                       409, 12000)
        envelope_error(c.put(f"/repos/{repo.name}/notes/{'1' * 40}", json={"message": "x"}),
                       404)
        envelope_error(c.put(f"/repos/{repo.name}/notes/xyz", json={"message": "x"}), 400)
        envelope_error(c.put(url, json={"message": "x", "notes_ref": "refs/heads/main"}), 400)
    work = fresh_clone(git, repo, tmp_path / "notes")
    git.run("-c", f"http.extraHeader=Authorization: Bearer {repo.token}", "fetch", "-q",
            repo.remote, "refs/notes/*:refs/notes/*", cwd=work)
    assert git.out("notes", "show", head, cwd=work) == "second"
    assert git.out("notes", "--ref=agent", "show", head, cwd=work) == "model output"
    assert git.out("rev-parse", "refs/notes/commits", cwd=work) == replaced["notes_commit"]
    with sqlite_server.client() as c:
        ok(c.delete(url))
        envelope_error(c.get(url), 404, 12008)
    assert ZERO not in repo.refs().values()


# -- streamed (NDJSON) commits ---------------------------------------------------------------


def _ndjson(header: dict[str, object], changes: list[dict[str, object]]) -> bytes:
    import json
    return b"".join(json.dumps(line).encode() + b"\n" for line in [header, *changes])


def test_ndjson_commit_streams_past_the_json_body_limit(sqlite_server: Server, git: Git,
                                                        tmp_path: Path,
                                                        base_repo: tuple[Repo, str]) -> None:
    repo, head = base_repo
    big = random.Random(5).randbytes(3 << 20)  # past max_body_bytes (1 MiB) of a JSON body
    header = {"branch": "main", "message": "streamed", "expected_head": head, "author": AUTHOR}
    changes: list[dict[str, object]] = [
        {"op": "put", "path": "big.bin", "content": base64.b64encode(big).decode(),
         "encoding": "base64"},
        {"op": "put", "path": "small.txt", "content": "small\n"},
        {"op": "delete", "path": "old.txt"},
    ]
    body = _ndjson(header, changes)

    def chunks() -> object:
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    with sqlite_server.client() as c:
        as_json = c.post(f"/repos/{repo.name}/commits", content=body)
        envelope_error(as_json, 413)
        made = ok(c.post(f"/repos/{repo.name}/commits", content=chunks(),  # type: ignore[arg-type]
                         headers={"Content-Type": "application/x-ndjson"}))
    assert made["parents"] == [head]
    work = fresh_clone(git, repo, tmp_path / "nd")
    assert (work / "big.bin").read_bytes() == big and not (work / "old.txt").exists()


@pytest.mark.parametrize("lines,status,pointer", [
    ([{"branch": "main", "message": "m"}, {"op": "put", "path": "../x", "content": ""}], 400,
     "/changes/0/path"),
    ([{"branch": "main", "message": "m"}, {"op": "put", "path": "a", "content": "x"},
      {"op": "put", "path": "b", "content": "!", "encoding": "base64"}], 400,
     "/changes/1/content"),
    ([{"branch": "main", "message": "m"}, {"op": "put", "path": "a", "contnt": "x"}], 400,
     "/changes/0/contnt"),
    ([{"branch": "main", "message": "m"}], 400, "/changes"),
    ([{"branch": "main", "message": "m", "expected_head": "nothex"}], 400, "/expected_head"),
])
def test_ndjson_bad_input_writes_nothing(sqlite_server: Server, base_repo: tuple[Repo, str],
                                         lines: list[dict[str, object]], status: int,
                                         pointer: str) -> None:
    repo, head = base_repo
    with sqlite_server.client() as c:
        answer = c.post(f"/repos/{repo.name}/commits", content=_ndjson(lines[0], lines[1:]),
                        headers={"Content-Type": "application/x-ndjson"})
    assert envelope_error(answer, status)["source"]["pointer"] == pointer
    assert repo.refs() == {"refs/heads/main": head}
    with sqlite_server.client() as c:
        garbage = c.post(f"/repos/{repo.name}/commits", content=b"{not json\n",
                         headers={"Content-Type": "application/x-ndjson"})
    envelope_error(garbage, 400, 11003)
    assert list((sqlite_server.data_dir / "tmp").glob(f"write-{repo.id}-*")) == []


# -- both databases --------------------------------------------------------------------------


def test_writes_on_each_database(server: Server, tmp_path: Path) -> None:
    """A commit, a fork merge and a note record their push like git does, on SQLite and
    PostgreSQL alike."""
    git = Git(tmp_path / "home")
    repo, head = seeded(server, git, tmp_path / "seed", _name("db"))
    fork = _fork(server, repo)
    agent = ok(commit(server, fork, [{"op": "put", "path": "agent.txt", "content": "a\n"}]))
    with server.client() as c:
        merged = ok(c.post(f"/repos/{repo.name}/merge", json={"head": f"{fork}:main"}))
        ok(c.put(f"/repos/{repo.name}/notes/{agent['sha']}", json={"message": "why"}))
        info = ok(c.get(f"/repos/{repo.name}"))
    assert info["last_push_at"] is not None
    work = fresh_clone(git, repo, tmp_path / "check")
    assert git.out("rev-parse", "HEAD", cwd=work) == merged["sha"]
    assert git.out("rev-parse", "HEAD^2", cwd=work) == agent["sha"]
    assert git.out("rev-parse", "HEAD^1", cwd=work) == head


def test_rest_writes_are_push_events(sqlite_server: Server) -> None:
    """The spec's pushes-by-repo analytics query counts REST commits, merges and notes."""
    import time

    from tests.test_analytics import graphql, groups, spec_queries

    namespace = _name("events")
    headers = {"Authorization": f"Bearer {sqlite_server.token}"}
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    with httpx.Client(base_url=sqlite_server.ns_url(namespace), headers=headers, timeout=60) as c:
        ok(c.post("/repos", json={"name": "w"}))
        first = ok(c.post("/repos/w/commits", json={"branch": "main", "message": "one", "changes": [
            {"op": "put", "path": "a", "content": "a"}]}))
        ok(c.post("/repos/w/commits", json={"branch": "side", "base": "main", "message": "two",
                                            "changes": [{"op": "put", "path": "b", "content": "b"}]}))
        ok(c.post("/repos/w/merge", json={"head": "side", "strategy": "fast-forward"}))
        ok(c.put(f"/repos/w/notes/{first['sha']}", json={"message": "n"}))
        ok(c.post("/repos/w/merge", json={"head": "side", "dry_run": True}))  # writes nothing
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    query = spec_queries()["ArtifactsPushesByRepo"]
    variables = {"accountTag": sqlite_server.account_id, "datetimeStart": start,
                 "datetimeEnd": end}
    deadline = time.monotonic() + 30
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {g["dimensions"]["repository"]: g["count"]
                  for g in groups(graphql(sqlite_server, query, variables))}
        if counts.get(f"{namespace}/w") == 4:
            break
        time.sleep(0.2)
    assert counts.get(f"{namespace}/w") == 4, counts
