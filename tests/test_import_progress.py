"""Import progress: git's own progress output turned into the importing repo's status."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from artifactd.services.repos.imports import progress_of
from tests.gitutil import Git


def test_progress_of_reads_what_git_fetch_prints(tmp_path: Path) -> None:
    git = Git(tmp_path / "home")
    source = tmp_path / "source"
    git.new_work(source, {f"f{i}.txt": f"{i}\n" * 50 for i in range(40)})
    target = tmp_path / "target.git"
    git.run("init", "-q", "--bare", str(target))
    stderr = tmp_path / "stderr.log"
    with open(stderr, "wb") as out:  # a file, as the server gives it: not a terminal
        subprocess.run(["git", "-C", str(target), "fetch", "--progress", "--no-tags",
                        f"file://{source}", "+refs/heads/*:refs/heads/*"],
                       env=git.env, stderr=out, check=True)
    progress = progress_of(stderr.read_text(errors="replace"))
    assert progress is not None, stderr.read_text()
    phase, done, total = re.fullmatch(r"([a-z ]+) (\d+)/(\d+)(?: \([\d.]+ [KMGT]?i?B\))?",
                                      progress).groups()  # type: ignore[union-attr]
    assert phase in {"receiving objects", "resolving deltas", "counting objects",
                     "compressing objects"} and done == total  # the fetch finished


def test_progress_of_takes_the_last_line_and_nothing_else() -> None:
    tail = ("remote: Enumerating objects: 5, done.\r"
            "Receiving objects:  45% (450/1000), 1.20 MiB | 2.00 MiB/s\r"
            "Receiving objects:  46% (460/1000), 1.23 MiB | 2.00 MiB/s\r"
            "remote: <script>alert(1)</script>\n")
    assert progress_of(tail) == "receiving objects 460/1000 (1.23 MiB)"
    assert progress_of("Resolving deltas:  10% (1/10)\r") == "resolving deltas 1/10"
    assert progress_of("fatal: repository not found\n") is None
    assert progress_of("") is None
