"""The in-process object reader (libgit2) against real repos made by the git CLI: the same
answers as ``git cat-file --batch-command``, correct reads across pushes and repacks under an
open repository, and a bounded number of open repositories and descriptors."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

from artifactd.storage.catfile import Answer, CatFilePool
from artifactd.storage.gitrunner import GitRunner
from artifactd.storage.objectreader import ObjectReader, ReadFailed
from tests.gitutil import Git


def bare_repo(git: Git, tmp_path: Path, name: str = "r.git") -> tuple[Path, Path]:
    """A bare repo like the server's (no config file), pushed from a work tree."""
    work = tmp_path / f"work-{name}"
    git.new_work(work, {"a.txt": "one\n", "d/b.txt": "bee\n", "big.bin": os.urandom(300_000)})
    git.run("tag", "-a", "-m", "annotated", "v1", cwd=work)
    git.run("tag", "light", cwd=work)
    git.commit_files(work, {"a.txt": "two\n"}, "second")
    git.commit_files(work, {"c.txt": "sea\n"}, "third")
    git.run("checkout", "-q", "-b", "feature/x", cwd=work)
    git.commit_files(work, {"a.txt": "feature\n"}, "feature")
    git.run("checkout", "-q", "main", cwd=work)
    bare = tmp_path / name
    git.run("clone", "-q", "--bare", str(work), str(bare))
    git.run("tag", "-a", "-m", "tag of a tag", "v1-again", "v1", cwd=bare)
    (bare / "config").unlink()  # the server's repos have none
    return bare, work


def test_answers_match_cat_file(tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    bare, work = bare_repo(git, tmp_path)
    head = git.out("rev-parse", "HEAD", cwd=work)
    tree = git.out("rev-parse", "HEAD^{tree}", cwd=work)
    blob = git.out("rev-parse", "HEAD:a.txt", cwd=work)
    names = [
        "refs/heads/main^{commit}", "refs/tags/v1^{commit}", "refs/tags/v1-again^{commit}",
        "refs/tags/light^{commit}", "refs/heads/feature/x^{commit}", "refs/heads/nope^{commit}",
        "refs/tags/v1", "refs/heads/main^{commit}:a.txt", "refs/heads/main^{commit}:d",
        "refs/heads/main^{commit}:d/b.txt", "refs/heads/main^{commit}:nope",
        "refs/heads/main^{commit}:a.txt/x", "refs/heads/main^{commit}:big.bin",
        "refs/tags/v1^{commit}:a.txt", "refs/heads/main^{commit}:", head, head[:7],
        f"{head}^{{tree}}", f"{head}^{{commit}}", f"{tree}^{{commit}}", f"{blob}^{{tree}}",
        blob, "0" * 40, "deadbeef", f"{head}~1", f"{head}~2", f"{head}~3", f"{head}~0",
        f"{head[:8]}^{{commit}}",
    ]
    commands = [(kind, name) for name in names for kind in ("info", "contents")]

    async def both() -> tuple[list[Answer], list[Answer]]:
        pool = CatFilePool(GitRunner(tmp_path / "data"))
        reader = ObjectReader()
        try:
            return await pool.run(bare, commands), await reader.run(bare, commands)
        finally:
            pool.close()
            reader.close()

    expected, got = asyncio.run(both())
    assert sum(a[0] is not None for a in got) > 30  # most names resolve
    for command, want, have in zip(commands, expected, got, strict=True):
        assert have == want, command


def test_reads_stay_right_across_pushes_and_repacks_under_an_open_repo(tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    bare, work = bare_repo(git, tmp_path)
    (bare / "config").write_text("[core]\n\tbare = true\n")  # so the CLI can push to it
    reader = ObjectReader()
    first = git.out("rev-parse", "HEAD:a.txt", cwd=work)
    errors: list[str] = []
    done = threading.Event()
    lock = threading.Lock()  # the reader belongs to one thread at a time, like a worker's loop

    def read_loop() -> None:
        while not done.is_set():
            with lock:
                try:
                    answers = reader.read(bare, [("contents", first),
                                                 ("contents", "refs/heads/main^{commit}:d/b.txt")])
                except ReadFailed as exc:
                    errors.append(str(exc))
                    continue
            if [a[1] for a in answers] != [b"two\n", b"bee\n"]:
                errors.append(repr(answers))

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for round_ in range(12):
            sha = git.commit_files(work, {f"n{round_}.txt": f"{round_}\n"}, f"round {round_}")
            git.run("push", "-q", str(bare), "main", cwd=work)
            with lock:
                [(info, data)] = reader.read(bare, [("contents", f"refs/heads/main^{{commit}}:n{round_}.txt")])
                assert info is not None and data == f"{round_}\n".encode()
                [(info, _)] = reader.read(bare, [("info", "refs/heads/main^{commit}")])
                assert info is not None and info.sha == sha
            # What maintenance does: every pack replaced by one, loose objects removed.
            git.run("repack", "-a", "-d", "-q", cwd=bare)
            git.run("prune-packed", cwd=bare)
    finally:
        done.set()
        thread.join()
    assert errors == []
    # The packs changed under the open repository, so it was reopened rather than kept.
    assert reader.opened > 2
    reader.close()


def test_open_repositories_and_descriptors_stay_bounded(tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    template, _ = bare_repo(git, tmp_path, "template.git")
    git.run("repack", "-a", "-d", "-q", cwd=template)
    repos = []
    for i in range(20):
        dest = tmp_path / "repos" / f"r{i}.git"
        shutil.copytree(template, dest)
        repos.append(dest)
    reader = ObjectReader(max_handles=8)

    def open_pack_descriptors() -> int:
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            count += target.startswith(str(tmp_path / "repos"))
        return count

    for _round in range(2):
        for repo in repos:
            [(info, data)] = reader.read(repo, [("contents", "refs/heads/main^{commit}:big.bin")])
            assert info is not None and data is not None and len(data) == 300_000
            assert reader.total <= 8
            assert open_pack_descriptors() <= 8
    assert reader.opened == 40  # an LRU of 8 over 20 repos read in turn: every read a miss
    # A deleted repository is let go: its files close, and a read says it is gone.
    shutil.rmtree(repos[-1])
    try:
        reader.read(repos[-1], [("info", "refs/heads/main^{commit}")])
        raise AssertionError("a deleted repo read")
    except ReadFailed:
        pass
    assert reader.reap(now=float("inf")) > 0 and reader.total == 0
    assert open_pack_descriptors() == 0
