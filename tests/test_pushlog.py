"""The commits a push brought, read in process (storage/pushlog.py), agree with git's own
``rev-list --count`` and ``log`` over the same range: merges, a second branch, a tag, and
a commit made in the same second as its parent (git's order, not a timestamp tie)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from artifactd.storage import pushlog

ENV = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_AUTHOR_NAME": "Ann", "GIT_AUTHOR_EMAIL": "ann@example.com",
       "GIT_COMMITTER_NAME": "Cy", "GIT_COMMITTER_EMAIL": "cy@example.com",
       "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def commit(cwd: Path, name: str) -> str:
    (cwd / name).write_text(name + "\n")
    git(cwd, "add", name)
    git(cwd, "commit", "-q", "-m", f"{name}\n\nbody of {name}")
    return git(cwd, "rev-parse", "HEAD")


def reference(git_dir: Path, span: list[str]) -> tuple[list[str], int]:
    count = int(git(git_dir, "rev-list", "--count", *span))
    listed = git(git_dir, "log", "--format=%H", "--max-count=3", *span).split()
    return listed, count


def test_brought_matches_git(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    base = commit(work, "a")
    commit(work, "b")
    git(work, "checkout", "-q", "-b", "side", base)
    commit(work, "s1")
    side = commit(work, "s2")
    git(work, "checkout", "-q", "main")
    git(work, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    commit(work, "c")
    head = commit(work, "d")
    git(work, "tag", "-a", "-m", "a tag of a tree", "treetag", "HEAD^{tree}")
    bare = tmp_path / "r.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "update-ref", "refs/heads/other", side)

    # A new ref: what it reaches and no other ref does.
    git(bare, "update-ref", "-d", "refs/heads/main")
    git(bare, "update-ref", "refs/heads/main", head)
    listed, total = pushlog.brought(bare, "0" * 40, head, "refs/heads/main", 3)
    expected = reference(bare, [head, "--not", "--exclude=refs/heads/main", "--glob=refs/*"])
    assert ([c.sha for c in listed], total) == expected
    assert total == 4  # b, the merge, c, d: a, s1 and s2 are on ``other``

    # An update old..new.
    listed, total = pushlog.brought(bare, base, head, "refs/heads/main", 3)
    assert ([c.sha for c in listed], total) == reference(bare, [f"{base}..{head}"])
    newest = listed[0]
    assert (newest.author_name, newest.author_email, newest.committer_name) == (
        "Ann", "ann@example.com", "Cy")
    assert newest.message == "d\n\nbody of d\n" and newest.commit_time == 1700000000

    # Nothing readable: no commits, as the failed git commands answered.
    assert pushlog.brought(bare, "0" * 40, "1" * 40, "refs/heads/x", 3) == ([], 0)
    assert pushlog.brought(tmp_path / "missing", "0" * 40, head, "refs/heads/x", 3) == ([], 0)
