"""A fork's snapshot of its parent's refs is read in process (``RepoStore.ref_list``, by
libgit2), no longer by a ``git for-each-ref`` per fork: it must list what git lists, in the
same order, whatever mix of loose and packed refs the repo holds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from artifactd.storage.repostore import RepoStore
from tests.gitutil import git_env


def _git(git_dir: Path, env: dict[str, str], *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def _for_each_ref(git_dir: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    out = _git(git_dir, env, "for-each-ref", "--format=%(objectname) %(refname) %(symref)")
    refs = []
    for line in out.splitlines():
        sha, name, symref = [*line.split(" "), ""][:3]
        if not symref:
            refs.append((name, sha))
    return refs


def test_ref_list_is_what_git_lists(tmp_path: Path) -> None:
    env = git_env(tmp_path / "home")
    store = RepoStore(tmp_path / "data")
    repo_id = os.urandom(16).hex()
    git_dir = store.ensure(repo_id, "main")
    assert store.ref_list(repo_id) == []  # no refs yet

    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], env=env, check=True)
    for n in range(3):
        (work / "f.txt").write_text(f"{n}\n")
        subprocess.run(["git", "-C", str(work), "add", "-A"], env=env, check=True)
        subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", f"c{n}"], env=env, check=True)
    subprocess.run(["git", "-C", str(work), "tag", "-a", "-m", "annotated", "v1"], env=env, check=True)
    subprocess.run(["git", "-C", str(work), "tag", "light", "HEAD~1"], env=env, check=True)
    subprocess.run(["git", "-C", str(work), "push", "-q", str(git_dir), "main", "v1", "light",
                    "HEAD~2:refs/heads/feature/a", "HEAD~1:refs/heads/z-last"],
                   env=env, check=True)

    loose = store.ref_list(repo_id)
    assert loose == _for_each_ref(git_dir, env)
    assert [name for name, _sha in loose] == sorted(name for name, _sha in loose)
    assert ("refs/tags/v1", _git(git_dir, env, "rev-parse", "refs/tags/v1").strip()) in loose

    _git(git_dir, env, "pack-refs", "--all")  # all packed
    assert store.ref_list(repo_id) == loose
    # Mixed: a loose ref shadowing a packed one, a new loose one, a deleted packed one, and a
    # symbolic ref under refs/ (git's for-each-ref shows it with %(symref): not copied).
    _git(git_dir, env, "update-ref", "refs/heads/main", loose[0][1])
    _git(git_dir, env, "update-ref", "refs/heads/new", loose[1][1])
    _git(git_dir, env, "update-ref", "-d", "refs/heads/z-last")
    _git(git_dir, env, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    mixed = store.ref_list(repo_id)
    assert mixed == _for_each_ref(git_dir, env)
    assert ("refs/heads/main", loose[0][1]) in mixed
    assert all(name != "refs/heads/alias" for name, _sha in mixed)

    assert store.ref_list(os.urandom(16).hex()) == []  # a repo with no directory
