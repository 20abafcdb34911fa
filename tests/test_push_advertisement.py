"""A first push's ref advertisement (a repo with no refs) is served from memory, byte for
byte what git advertises, and a repo with refs still gets git's own advertisement."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.gitutil import Git, create_repo
from tests.harness import Server
from tests.seed import push

FROM_MEMORY = "artifactd_git_push_advertisements_from_memory_total "


def advertisement(server: Server, remote: str, token: str) -> bytes:
    r = httpx.get(f"{remote}/info/refs", params={"service": "git-receive-pack"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200, r.text
    return r.content


def test_first_push_advertisement_from_memory(sqlite_server: Server, tmp_path: Path,
                                               unique_name: str) -> None:
    first = create_repo(sqlite_server, f"{unique_name}-a")
    second = create_repo(sqlite_server, f"{unique_name}-b")
    # The first empty repo a worker sees may be the one git is asked about; by the second
    # the advertisement is known (the session server may have learnt it already).
    learnt = advertisement(sqlite_server, first.remote, first.token)
    before = sqlite_server.metric(FROM_MEMORY)
    remembered = advertisement(sqlite_server, second.remote, second.token)
    assert sqlite_server.metric(FROM_MEMORY) == before + 1
    assert remembered == learnt
    assert b"0" * 40 + b" capabilities^{}\x00" in remembered and b"report-status" in remembered

    # A real push through it works, and then the repo's refs come from git again.
    git = Git(tmp_path / "home")
    work = tmp_path / "work"
    sha = git.new_work(work, {"a.txt": "one\n"})
    push(git, second, work, "main")
    assert second.refs() == {"refs/heads/main": sha}
    after = sqlite_server.metric(FROM_MEMORY)
    with_refs = advertisement(sqlite_server, second.remote, second.token)
    assert f"{sha} refs/heads/main".encode() in with_refs
    assert sqlite_server.metric(FROM_MEMORY) == after
