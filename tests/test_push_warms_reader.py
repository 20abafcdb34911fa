"""A push opens the repo in the worker's object reader, so that the first read of a
just-pushed repo costs no more than a warm one (issue 12; services/reads/content.warm)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.gitutil import Git, bearer, create_repo
from tests.harness import Server

OPENS = "artifactd_content_repo_opens_total"


def test_push_opens_the_repo_for_reads(sqlite_server: Server, tmp_path: Path,
                                       unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    git.new_work(tmp_path / "w", {"notes.txt": "hello\n"})
    before = sqlite_server.metric(OPENS)
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w")
    # No read has been made: only the push can have opened it.
    deadline = time.monotonic() + 10
    while sqlite_server.metric(OPENS) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sqlite_server.metric(OPENS) == before + 1
    with sqlite_server.client() as c:
        r = c.get(f"/repos/{repo.name}/raw/main/notes.txt")
        assert r.status_code == 200, r.text
        assert r.text == "hello\n"
