"""The cat-file pool over many repos: a working set of hundreds of repos stays warm, the
process count stays bounded, and a read cancelled while its process starts leaves none."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

from artifactd.storage.catfile import CatFilePool
from artifactd.storage.gitrunner import GitRunner
from tests.gitutil import Git, git_processes_for, wait_no_processes


def make_repos(tmp_path: Path, count: int) -> list[Path]:
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    git.new_work(work, {"notes.txt": "hello\n"})
    template = tmp_path / "template.git"
    git.run("clone", "-q", "--bare", str(work), str(template))
    repos = []
    for i in range(count):
        dest = tmp_path / "repos" / f"r{i}.git"
        shutil.copytree(template, dest)
        repos.append(dest)
    return repos


def test_a_working_set_of_a_hundred_repos_stays_warm(tmp_path: Path) -> None:
    repos = make_repos(tmp_path, 100)
    runner = GitRunner(tmp_path / "data", owner="ab" * 8)

    async def main() -> tuple[int, int]:
        pool = CatFilePool(runner)
        try:
            for _round in range(2):
                for repo in repos:
                    [(info, data)] = await pool.run(repo, [("contents", "HEAD:notes.txt")])
                    assert info is not None and data == b"hello\n"
            return pool.spawned, pool.total
        finally:
            pool.close()

    spawned, total = asyncio.run(main())
    # One process per repo, started once: the second round found every one of them warm.
    assert spawned == 100
    assert total == 100


def test_processes_stay_bounded_over_more_repos(tmp_path: Path) -> None:
    repos = make_repos(tmp_path, 20)
    runner = GitRunner(tmp_path / "data", owner="ab" * 8)

    async def main() -> list[int]:
        pool = CatFilePool(runner, max_processes=8)
        totals = []
        try:
            for repo in repos:
                [(info, _)] = await pool.run(repo, [("info", "HEAD")])
                assert info is not None
                totals.append(pool.total)
        finally:
            pool.close()
        return totals

    assert max(asyncio.run(main())) <= 8
    for repo in repos:
        assert wait_no_processes(repo) == []


def test_a_read_cancelled_while_its_process_starts_leaves_none(tmp_path: Path) -> None:
    [repo] = make_repos(tmp_path, 1)
    runner = GitRunner(tmp_path / "data", owner="ab" * 8)

    async def main() -> None:
        pool = CatFilePool(runner)
        try:
            for _ in range(20):
                task = asyncio.ensure_future(pool.run(repo, [("info", "HEAD")]))
                await asyncio.sleep(0)  # the start is under way in its thread
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                pool.evict(repo)
        finally:
            pool.close()

    asyncio.run(main())
    assert wait_no_processes(repo) == [], git_processes_for(repo)
