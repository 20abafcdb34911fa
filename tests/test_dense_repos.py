"""Dense small repos: a repo with one small commit costs a few blocks and inodes on disk.

Sizes, not timings: measured with ``du --block-size=1 -s`` and ``find | wc -l`` on the
repo's directory, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.storage.repostore import RepoStore, push_lock_busy
from tests.gitutil import Git, bearer, create_repo
from tests.harness import Server, start_server

MAX_INODES = 10
# The target, in disk blocks. The suite's temp dir is ext4 here (4 KiB blocks, no
# inline_data): every directory and non-empty file takes a block, a symlink with a short
# target none. The dense layout (repostore.DENSE_LINKS) is six of them: the repo directory,
# refs/, HEAD, packed-refs, the pack and its index. A denser filesystem (XFS, ext4 with
# inline_data, tmpfs) passes with room to spare; one with bigger blocks would not, which is
# why the inode count and the layout, which do not depend on the filesystem, are asserted too.
MAX_BLOCK_BYTES = 24 << 10


@pytest.fixture(scope="module")
def prompt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Maintenance looks every 0.2 s, so a first push is compacted at once."""
    server = start_server(tmp_path_factory.mktemp("dense"),
                          extra_env={"ARTIFACTD_MAINTENANCE_INTERVAL": "0.2"})
    yield server
    server.stop()


def disk_cost(path: Path) -> tuple[int, int]:
    """(bytes of disk blocks, inodes) of a directory tree, links not followed (a hard-linked
    file counted once, as ``du`` does)."""
    seen: set[int] = set()
    blocks = 0
    for directory, dirs, files in os.walk(path):  # os.walk follows no symlink
        for name in [".", *dirs, *files]:
            info = os.lstat(os.path.join(directory, name))
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                blocks += info.st_blocks * 512
    return blocks, len(seen)


def wait_for(condition: object, seconds: float = 20) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_a_one_commit_repo_is_small_and_still_works(prompt_server: Server, tmp_path: Path) -> None:
    repo = create_repo(prompt_server, "dense-one")
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"README.md": "# one small commit\n", "notes.txt": "hello\n"})
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)

    # Kept as a pack even though it is three objects: no loose objects, no fan-out dirs.
    assert not any(p.name != "pack" and p.is_dir() for p in (repo.git_dir / "objects").iterdir()
                   if len(p.name) == 2), listing(repo.git_dir)
    assert list((repo.git_dir / "objects" / "pack").glob("*.pack")), listing(repo.git_dir)

    # Maintenance compacts it promptly (its first push makes it due): refs packed.
    assert wait_for(lambda: (repo.git_dir / "packed-refs").is_file()
                    and not (repo.git_dir / "refs" / "heads").exists()), listing(repo.git_dir)
    assert wait_for(lambda: int(str(repo.info()["size"])) > 0)
    # The dense layout: git's object store is the repo directory itself (objects -> .,
    # objects/pack -> .), so the pack and its index sit next to HEAD.
    names = {p.name for p in repo.git_dir.iterdir()}
    packs = {n for n in names if n.startswith("pack-")}
    assert {n.rsplit(".", 1)[1] for n in packs} == {"pack", "idx"} and len(packs) == 2, names
    # No lock file: the push lock is a flock on the directory itself.
    assert names - packs == {"HEAD", "objects", "pack", "refs", "packed-refs"}, names
    for link in ("objects", "pack"):
        assert os.readlink(repo.git_dir / link) == ".", link
    assert not list((repo.git_dir / "refs").iterdir()), listing(repo.git_dir)
    blocks, inodes = disk_cost(repo.git_dir)
    assert inodes <= MAX_INODES, listing(repo.git_dir)
    assert blocks <= MAX_BLOCK_BYTES, (blocks, listing(repo.git_dir))
    # The recorded size counts the objects only (the pack and its index), not HEAD or refs.
    pack_bytes = sum((repo.git_dir / n).stat().st_size for n in packs)
    assert int(str(repo.info()["size"])) == pack_bytes

    # Still a complete repository: fsck, clone, another push, a content read.
    repo.fsck()
    clone = tmp_path / "clone"
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(clone))
    assert (clone / "notes.txt").read_text() == "hello\n"
    git.commit_files(clone, {"notes.txt": "again\n"}, "second")
    git.run("-c", bearer(repo.token), "push", "-q", "origin", "main", cwd=clone)
    assert repo.refs()["refs/heads/main"] == git.out("rev-parse", "HEAD", cwd=clone)
    with prompt_server.client() as c:
        r = c.get(f"/repos/{repo.name}/raw/main/notes.txt")
        assert r.status_code == 200, r.text
        assert r.content == b"again\n"


def test_a_fresh_repo_is_a_skeleton_git_accepts(prompt_server: Server, tmp_path: Path) -> None:
    """The lazily made directory holds only what git needs, and upload-pack and
    receive-pack both work against it (an empty clone, then a push of one commit)."""
    repo = create_repo(prompt_server, "dense-empty")
    git = Git(tmp_path / "home")
    clone = tmp_path / "clone"
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(clone))
    assert {p.name for p in repo.git_dir.iterdir()} == {"HEAD", "objects", "pack", "refs"}
    blocks, inodes = disk_cost(repo.git_dir)
    assert inodes <= 5, listing(repo.git_dir)  # the directory, HEAD, refs/ and the two links
    assert blocks <= 12 << 10, blocks  # two directories and HEAD; the links cost no block
    git.commit_files(clone, {"a.txt": "a\n"}, "first")
    git.run("-c", bearer(repo.token), "push", "-q", "origin", "HEAD:main", cwd=clone)
    repo.fsck()


def test_a_repo_in_the_old_layout_keeps_working(prompt_server: Server, tmp_path: Path) -> None:
    """A repo directory an older version made (two shard levels, real ``objects/pack``
    directories) is found where it is, pushed to, maintained, read, forked (the fork gets the
    dense layout) and deleted."""
    repo = create_repo(prompt_server, "dense-legacy")
    data = prompt_server.data_dir
    legacy = data / "repos" / repo.id[:2] / repo.id[2:4] / f"{repo.id}.git"
    legacy.mkdir(parents=True)
    for sub in ("objects", "refs"):
        (legacy / sub).mkdir()
    (legacy / "HEAD").write_text("ref: refs/heads/main\n")
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"notes.txt": "old layout\n"})
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)

    assert not repo.git_dir.exists(), "a second directory was made at the one-level path"
    assert not (legacy / "objects").is_symlink()
    assert list((legacy / "objects" / "pack").glob("*.pack")), listing(legacy)
    assert wait_for(lambda: (legacy / "packed-refs").is_file()), listing(legacy)
    assert wait_for(lambda: int(str(repo.info()["size"])) > 0)
    pack_bytes = sum(f.stat().st_size for f in (legacy / "objects" / "pack").iterdir())
    assert int(str(repo.info()["size"])) == pack_bytes
    with prompt_server.client() as c:
        assert c.get(f"/repos/{repo.name}/raw/main/notes.txt").content == b"old layout\n"
        r = c.post(f"/repos/{repo.name}/fork", json={"name": "dense-legacy-fork"})
        assert r.status_code == 200, r.text
        fork_id = r.json()["result"]["id"]
        fork_dir = data / "repos" / fork_id[:2] / f"{fork_id}.git"
        assert os.readlink(fork_dir / "objects") == "."
        assert c.get("/repos/dense-legacy-fork/raw/main/notes.txt").content == b"old layout\n"
    clone = tmp_path / "clone"
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(clone))
    assert (clone / "notes.txt").read_text() == "old layout\n"
    subprocess.run(["git", f"--git-dir={fork_dir}", "fsck", "--strict"], check=True,
                   capture_output=True)
    with prompt_server.client() as c:
        assert c.delete(f"/repos/{repo.name}").status_code == 202
    assert not legacy.exists()


def test_the_push_lock_is_the_repo_directory_itself(tmp_path: Path) -> None:
    """A push holds a shared flock on the directory (no lock file, no inode): a cleanup's or
    a backup's exclusive take fails while it is held and succeeds once it is released."""
    store = RepoStore(tmp_path / "data")
    repo_id = os.urandom(16).hex()
    git_dir = store.ensure(repo_id, "main")
    before = sorted(p.name for p in git_dir.iterdir())
    fd = store.lock_push(repo_id)
    assert fd is not None
    try:
        assert push_lock_busy(git_dir)
        with store.idle_push_lock(repo_id) as idle:
            assert not idle
        second = store.lock_push(repo_id, wait=False)  # pushes share it
        assert second is not None
        os.close(second)
    finally:
        store.end_push(repo_id, fd)
    assert not push_lock_busy(git_dir)
    with store.idle_push_lock(repo_id) as idle:
        assert idle
    assert sorted(p.name for p in git_dir.iterdir()) == before
    with store.idle_push_lock(os.urandom(16).hex()) as idle:  # never made: nothing to guard
        assert idle
