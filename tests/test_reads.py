"""Read helpers against a real server: compare (JSON and diff, across a fork and its parent),
archive (tar.gz and zip, checked with tar/unzip), blame and the recursive tree listing."""

from __future__ import annotations

import io
import random
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gitutil import Git, Repo, create_repo, wait_no_processes
from tests.harness import Server
from tests.seed import push
from tests.test_control_plane import envelope_error
from tests.test_fork import fork

BINARY = bytes(range(256)) * 8


@dataclass
class Family:
    parent: Repo
    child: Repo
    other: Repo  # unrelated history, same namespace
    git: Git
    work: Path
    base: str  # the commit the fork started from
    parent_head: str  # one commit past base on the parent
    child_head: str


@pytest.fixture(scope="module")
def family(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Family:
    root = tmp_path_factory.mktemp("reads")
    git = Git(root / "home")
    work = root / "work"
    suffix = random.randrange(1 << 30)
    parent = create_repo(sqlite_server, f"reads-parent-{suffix}")
    base = git.new_work(work, {
        "README.md": "# Reads\n\nline two\nline three\n",
        "old.txt": "to be renamed\nwith several lines\nso git sees a rename\n",
        "gone.txt": "deleted in the fork\n",
        "src/lib/deep.py": "x = 1\n",
    })
    push(git, parent, work, "HEAD:refs/heads/main")
    child = fork(sqlite_server, parent.name, f"reads-child-{suffix}")
    git.run("checkout", "-q", "-b", "agent", cwd=work)
    (work / "gone.txt").unlink()
    git.run("mv", "old.txt", "new.txt", cwd=work)
    git.commit_files(work, {"README.md": "# Reads\n\nline two changed\nline three\nline four\n",
                            "image.bin": BINARY}, "Agent work")
    child_head = git.commit_files(work, {"added.txt": "new file\n"}, "More agent work")
    push(git, child, work, "agent:refs/heads/main")
    git.run("checkout", "-q", "main", cwd=work)
    parent_head = git.commit_files(work, {"upstream.txt": "upstream\n"}, "Upstream moves on")
    push(git, parent, work, "main:refs/heads/main")
    other = create_repo(sqlite_server, f"reads-other-{suffix}")
    other_work = root / "other"
    git.new_work(other_work, {"unrelated.txt": "unrelated\n"})
    push(git, other, other_work, "HEAD:refs/heads/main")
    return Family(parent, child, other, git, work, base, parent_head, child_head)


def test_compare_fork_with_parent(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.child.name}/compare/{family.parent.name}:main...main")
        assert r.status_code == 200, r.text
        result = r.json()["result"]
    assert result["merge_base"] == family.base
    assert (result["ahead_by"], result["behind_by"]) == (2, 1)
    assert result["base"] == {"repo": family.parent.name, "ref": "main", "sha": family.parent_head}
    assert result["head"]["sha"] == family.child_head
    assert [c["message"].strip() for c in result["commits"]] == ["Agent work", "More agent work"]
    files = {f["path"]: f for f in result["files"]}
    assert files["new.txt"]["status"] == "renamed" and files["new.txt"]["previous_path"] == "old.txt"
    assert files["gone.txt"]["status"] == "removed" and files["gone.txt"]["deletions"] == 1
    assert files["added.txt"] == {"path": "added.txt", "previous_path": None, "status": "added",
                                  "additions": 1, "deletions": 0, "binary": False}
    assert files["README.md"]["status"] == "modified"
    assert (files["README.md"]["additions"], files["README.md"]["deletions"]) == (2, 1)
    assert files["image.bin"]["binary"] is True
    assert "upstream.txt" not in files  # three-dot: the parent's own work is not the fork's
    assert result["truncated"] is False and result["commits_truncated"] is False


def test_compare_as_unified_diff_matches_git(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.parent.name}/compare/main...{family.child.name}:main",
                  headers={"Accept": "text/x-diff"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/x-diff")
    assert r.headers["x-artifactd-truncated"] == "false"
    expected = family.git.out("diff", "-M", f"{family.base}", family.child_head, cwd=family.work)
    assert r.text.strip() == expected.strip()
    assert "Binary files" in r.text and "rename from old.txt" in r.text


def test_compare_unrelated_and_same_repo(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.parent.name}/compare/main...{family.other.name}:main")
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["merge_base"] is None and result["ahead_by"] == 1
        assert {f["path"] for f in result["files"]} >= {"unrelated.txt", "README.md"}
        r = c.get(f"/repos/{family.parent.name}/compare/{family.base}...main")
        assert r.status_code == 200, r.text
        assert [f["path"] for f in r.json()["result"]["files"]] == ["upstream.txt"]


def test_compare_bad_input(sqlite_server: Server, family: Family) -> None:
    name = family.parent.name
    foreign = f"reads-foreign-{random.randrange(1 << 30)}"
    made = httpx.post(f"{sqlite_server.ns_url('reads-elsewhere')}/repos", json={"name": foreign},
                      headers={"Authorization": f"Bearer {sqlite_server.token}"})
    assert made.status_code == 200, made.text
    with sqlite_server.client() as c:
        cases = {
            "main": (400, "/basehead"),
            "main...": (400, "/basehead"),
            "main...nope-branch": (404, "/head"),
            "main..x...main": (400, "/base"),
            "bad%20name:main...main": (400, "/base"),
            "missing-repo-xyz:main...main": (404, "/base"),
            f"{foreign}:main...main": (404, "/base"),  # another namespace: as missing
        }
        for spec, (status, pointer) in cases.items():
            r = c.get(f"/repos/{name}/compare/{spec}")
            error = envelope_error(r, status)
            assert error["source"]["pointer"] == pointer, (spec, error)
        missing = c.get(f"/repos/{name}/compare/missing-repo-xyz:main...main").json()
        hidden = c.get(f"/repos/{name}/compare/{foreign}:main...main").json()
        assert missing["errors"][0]["code"] == hidden["errors"][0]["code"]
        assert missing["errors"][0]["message"].replace("missing-repo-xyz", foreign) == \
            hidden["errors"][0]["message"]


def test_archive_tar_gz_and_zip(sqlite_server: Server, family: Family, tmp_path: Path) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.child.name}/archive/main.tar.gz")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/gzip"
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            names = {m.name for m in tar.getmembers() if m.isfile()}
            image = tar.extractfile("image.bin")
            assert image is not None and image.read() == BINARY
        assert names == {"README.md", "new.txt", "added.txt", "image.bin", "src/lib/deep.py"}
        r = c.get(f"/repos/{family.child.name}/archive/{family.base}.zip")
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
            assert archive.read("gone.txt") == b"deleted in the fork\n"
        # Byte for byte what git archive makes on disk.
        expected = subprocess.run(["git", "archive", "--format=zip", family.base],
                                  cwd=family.work, capture_output=True, check=True).stdout
        assert r.content == expected
        head = c.head(f"/repos/{family.child.name}/archive/main.zip")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == "application/zip"
        for path, status in (("main.tar", 404), ("nope.zip", 404), ("a..b.zip", 400),
                             (".zip", 404)):
            r = c.get(f"/repos/{family.child.name}/archive/{path}")
            assert r.status_code == status, (path, r.text)


def test_archive_client_that_leaves_ends_git(sqlite_server: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, f"reads-big-{random.randrange(1 << 30)}")
    rng = random.Random(3)
    git.new_work(work, {f"f{i}.bin": rng.randbytes(1 << 20) for i in range(24)})
    push(git, repo, work, "HEAD:refs/heads/main")
    with sqlite_server.client() as c, c.stream("GET", f"/repos/{repo.name}/archive/main.zip") as r:
        assert r.status_code == 200
        next(r.iter_bytes())
    # The client went away after one chunk: git archive must not run on.
    assert wait_no_processes(repo.git_dir, needle="archive") == []


def test_blame(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.child.name}/blame", params={"path": "README.md"})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["sha"] == family.child_head and result["path"] == "README.md"
        lines: dict[int, str] = {}
        for part in result["ranges"]:
            for offset in range(part["lines"]):
                lines[part["start"] + offset] = part["commit"]
        assert sorted(lines) == [1, 2, 3, 4, 5]
        assert lines[1] == family.base and lines[3] != family.base
        commits = {c["sha"]: c for c in result["commits"]}
        assert set(commits) == set(lines.values())
        assert commits[lines[3]]["summary"] == "Agent work"
        for params, status, pointer in (({"path": "nope.txt"}, 404, "/path"),
                                        ({"path": "src"}, 400, "/path"),
                                        ({"path": "../x"}, 400, "/path"),
                                        ({"path": "README.md", "ref": "no-such"}, 404, "/ref")):
            r = c.get(f"/repos/{family.child.name}/blame", params=params)
            assert envelope_error(r, status)["source"]["pointer"] == pointer, params


def test_recursive_tree_with_sizes_paginated(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.child.name}/tree/{family.child_head}",
                  params={"recursive": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        entries = {e["path"]: e for e in body["result"]["entries"]}
        assert set(entries) == {"README.md", "new.txt", "added.txt", "image.bin", "src/lib/deep.py"}
        assert entries["image.bin"]["size"] == len(BINARY)
        assert entries["src/lib/deep.py"]["type"] == "blob"
        assert body["result_info"]["has_more"] is False
        pages = []
        for offset in (0, 2, 4):
            r = c.get(f"/repos/{family.child.name}/tree/{family.child_head}",
                      params={"recursive": "true", "limit": 2, "offset": offset})
            pages.append(r.json())
        assert [p["result_info"]["has_more"] for p in pages] == [True, True, False]
        assert [e["path"] for p in pages for e in p["result"]["entries"]] == \
            [e["path"] for e in body["result"]["entries"]]
        r = c.get(f"/repos/{family.child.name}/tree/{family.child_head}",
                  params={"recursive": "true", "limit": 0})
        assert envelope_error(r, 400)["source"]["pointer"] == "/limit"


def test_compare_with_json_hunks(sqlite_server: Server, family: Family) -> None:
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{family.child.name}/compare/{family.parent.name}:main...main",
                  params={"hunks": "true"})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        plain = c.get(f"/repos/{family.child.name}/compare/{family.parent.name}:main...main")
        assert "hunks" not in plain.json()["result"]["files"][0]
    assert result["hunks_truncated"] is False
    files = {f["path"]: f for f in result["files"]}
    [hunk] = files["README.md"]["hunks"]
    assert (hunk["old_start"], hunk["old_lines"], hunk["new_start"], hunk["new_lines"]) == (1, 4, 1, 5)
    assert "-line two" in hunk["lines"] and "+line two changed" in hunk["lines"]
    assert "+line four" in hunk["lines"]
    assert files["image.bin"]["hunks"] == [] and files["image.bin"]["binary"] is True
    assert files["added.txt"]["hunks"][0]["lines"] == ["+new file"]
    assert files["gone.txt"]["hunks"][0]["lines"] == ["-deleted in the fork"]


def test_compare_truncates_files_with_a_flag(sqlite_server: Server, tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    repo = create_repo(sqlite_server, f"reads-many-{random.randrange(1 << 30)}")
    git.new_work(work, {"README.md": "many\n"})
    git.run("checkout", "-q", "-b", "many", cwd=work)
    git.commit_files(work, {f"f/{i:03d}.txt": f"{i}\n" for i in range(305)}, "305 files")
    push(git, repo, work, "main:refs/heads/main", "many:refs/heads/many")
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{repo.name}/compare/main...many")
        assert r.status_code == 200, r.text
        result = r.json()["result"]
    assert result["truncated"] is True and len(result["files"]) == 300
    assert [f["path"] for f in result["files"]][:2] == ["f/000.txt", "f/001.txt"]
