"""Other git implementations against the server: libgit2 (pygit2), dulwich, isomorphic-git."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest
from dulwich import porcelain
from dulwich.repo import Repo as DulwichRepo

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Server

NODE_DIR = Path(__file__).resolve().parent / "node"
SIGNATURE = pygit2.Signature("Lib Git", "libgit2@example.com", 1767225600, 0)


def secret_of(token: str) -> str:
    return token.split("?expires=")[0]


def test_pygit2_clone_fetch_push(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    first = git.new_work(tmp_path / "seed", {"a.txt": "a\n"})
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "seed")

    callbacks = pygit2.RemoteCallbacks(credentials=pygit2.UserPass("x", secret_of(repo.token)))
    cloned = pygit2.clone_repository(repo.remote, str(tmp_path / "lg"), callbacks=callbacks)
    assert str(cloned.head.target) == first
    assert (tmp_path / "lg" / "a.txt").read_text() == "a\n"

    # libgit2 pushes a new commit.
    blob = cloned.create_blob(b"from libgit2\n")
    builder = cloned.TreeBuilder(cloned.head.peel(pygit2.Commit).tree)
    builder.insert("lg.txt", blob, pygit2.enums.FileMode.BLOB)
    commit = cloned.create_commit("refs/heads/main", SIGNATURE, SIGNATURE, "libgit2 commit",
                                  builder.write(), [cloned.head.target])
    cloned.remotes["origin"].push(["refs/heads/main"], callbacks=callbacks)
    assert repo.refs()["refs/heads/main"] == str(commit)

    # git pushes another; libgit2 fetches it.
    git.run("-c", bearer(repo.token), "pull", "-q", repo.remote, "main", cwd=tmp_path / "seed")
    third = git.commit_files(tmp_path / "seed", {"b.txt": "b\n"}, "third")
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "seed")
    cloned.remotes["origin"].fetch(callbacks=callbacks)
    assert str(cloned.references["refs/remotes/origin/main"].target) == third

    shallow = pygit2.clone_repository(repo.remote, str(tmp_path / "lg-shallow"), callbacks=callbacks,
                                      depth=1)
    assert shallow.is_shallow and str(shallow.head.target) == third
    repo.fsck()


def test_dulwich_clone_fetch_push(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    secret = secret_of(repo.token)
    git = Git(tmp_path / "home")

    # dulwich pushes first, to the empty repo.
    local = tmp_path / "dw"
    porcelain.init(str(local))
    (local / "hello.txt").write_text("hello from dulwich\n")
    with DulwichRepo(str(local)) as r:
        porcelain.add(r, [str(local / "hello.txt")])
        first = porcelain.commit(r, message=b"dulwich commit", author=b"D <d@example.com>",
                                 committer=b"D <d@example.com>").decode()
        porcelain.push(r, repo.remote, b"HEAD:refs/heads/main", username="x", password=secret,
                       errstream=io.BytesIO())
    assert repo.refs()["refs/heads/main"] == first

    cloned_path = tmp_path / "dw-clone"
    with porcelain.clone(repo.remote, str(cloned_path), username="x", password=secret,
                         errstream=io.BytesIO()) as cloned:
        assert cloned.head().decode() == first
    assert (cloned_path / "hello.txt").read_text() == "hello from dulwich\n"

    git.run("-c", bearer(repo.token), "clone", repo.remote, str(tmp_path / "g"))
    second = git.commit_files(tmp_path / "g", {"more.txt": "more\n"}, "from git")
    git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=tmp_path / "g")
    with DulwichRepo(str(cloned_path)) as cloned:
        result = porcelain.fetch(cloned, repo.remote, username="x", password=secret,
                                 errstream=io.BytesIO())
        assert result.refs[b"refs/heads/main"].decode() == second
    repo.fsck()


@pytest.fixture(scope="module")
def node() -> str:
    """Node.js with isomorphic-git; a fresh clone gets its locked packages here (`npm ci`),
    so the README's test command needs no extra set-up step."""
    exe, npm = shutil.which("node"), shutil.which("npm")
    if exe is None or npm is None:
        pytest.fail("Node.js and npm are required for the isomorphic-git test (Debian: nodejs npm)")
    if not (NODE_DIR / "node_modules" / "isomorphic-git").is_dir():
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                                   capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
    return exe


def run_node(node: str, *args: str) -> str:
    result = subprocess.run([node, str(NODE_DIR / "interop.mjs"), *args], capture_output=True,
                            text=True, timeout=120, cwd=NODE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_isomorphic_git(node: str, sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    pushed = run_node(node, "push", repo.remote, repo.token, str(tmp_path / "iso"))
    assert repo.refs() == {"refs/heads/main": pushed}

    git = Git(tmp_path / "home")
    clone = tmp_path / "cli"
    git.run("-c", bearer(repo.token), "clone", repo.remote, str(clone))
    assert git.out("log", "--format=%H %s", cwd=clone) == f"{pushed} Commit from isomorphic-git"
    assert (clone / "src" / "index.js").read_text() == "export const answer = 42;\n"

    assert run_node(node, "clone", repo.remote, repo.token, str(tmp_path / "iso2")) == pushed
    newer = git.commit_files(clone, {"README.md": "# changed by git\n"}, "from git")
    git.run("-c", bearer(repo.token), "push", "origin", "main", cwd=clone)
    assert run_node(node, "fetch", repo.remote, repo.token, str(tmp_path / "iso2")) == newer
    assert (tmp_path / "iso2" / "README.md").read_text() == "# changed by git\n"
    repo.fsck()
