"""ArtifactFS's root read answered in process (services/git/root_fetch.py): the tip commit
and its root tree for ``deepen 1`` + ``filter tree:1``, what upload-pack sends for it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from artifactd.fs import fetchpack, rootfirst
from artifactd.services.git import root_fetch
from tests.gitutil import Git, Repo, bearer, create_repo, rpc
from tests.harness import Server
from tests.test_small_clone import V2, in_process, request, upload_pack

SHA = "27af678a7b9353842f8fbf08fbee721960f2cf2b"
OTHER = "0123456789abcdef0123456789abcdef01234567"
ROOT_READ = ("no-progress", "ofs-delta", f"want {SHA}", "deepen 1", "filter tree:1", "done")


def test_the_root_read_is_recognised() -> None:
    assert root_fetch.wanted_tip(rootfirst.request_body(SHA, tip_only=True)) == SHA
    assert root_fetch.wanted_tip(request("fetch", *ROOT_READ)) == SHA
    assert root_fetch.wanted_tip(request("fetch", "thin-pack", *ROOT_READ)) == SHA


@pytest.mark.parametrize("body", [
    rootfirst.request_body(SHA),  # no deepen: a directory's tree read, or a commit's history
    request("fetch", *ROOT_READ, f"have {OTHER}"),
    request("fetch", *ROOT_READ, f"want {OTHER}"),
    request("fetch", *ROOT_READ, "include-tag"),
    request("fetch", *ROOT_READ, f"shallow {OTHER}"),
    request("fetch", *(a.replace("deepen 1", "deepen 2") for a in ROOT_READ)),
    request("fetch", *(a.replace("tree:1", "tree:0") for a in ROOT_READ)),
    request("fetch", *(a.replace("tree:1", "blob:none") for a in ROOT_READ)),
    request("fetch", *(a for a in ROOT_READ if a != "done")),
    request("fetch", *ROOT_READ, capabilities=("server-option=x",)),
    request("fetch", *ROOT_READ) + request("fetch", *ROOT_READ),
    request("ls-refs", "ref-prefix refs/heads/main"),
    b"",
])
def test_anything_else_is_left_to_upload_pack(body: bytes) -> None:
    assert root_fetch.wanted_tip(body) is None


def sections(answer: bytes) -> tuple[list[bytes], set[tuple[int, str]]]:
    """The ``shallow-info`` lines and the pack's objects (type, id) of a fetch answer."""
    shallow: list[bytes] = []
    at = 0
    while not answer[at + 4:].startswith(b"packfile"):
        length = int(answer[at:at + 4], 16)
        if length > 4:
            shallow.append(answer[at + 4:at + length])
        at += max(length, 4)
    objects = fetchpack.parse_objects(fetchpack.pack_of(answer))
    kinds = {rootfirst.OBJ_COMMIT: "commit", rootfirst.OBJ_TREE: "tree"}
    return shallow, {(kind, rootfirst.fetchpack_id(kinds[kind], data)) for kind, data in objects}


@pytest.fixture
def history(sqlite_server: Server, tmp_path: Path, unique_name: str) -> tuple[Repo, Git, Path]:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"a.txt": "a\n", "dir/b.txt": "b\n", "dir/sub/c.bin": os.urandom(3000)})
    git.commit_files(work, {"a.txt": "a2\n", "e.txt": ""}, "second")
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)
    return repo, git, work


def test_the_answer_is_upload_packs_for_a_tip_with_history(history: tuple[Repo, Git, Path]) -> None:
    repo, git, work = history
    tip = repo.refs()["refs/heads/main"]
    body = rootfirst.request_body(tip, tip_only=True)
    before = in_process(repo.server, "root-fetch")
    answer = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}", **V2)
    assert answer.status_code == 200
    assert in_process(repo.server, "root-fetch") == before + 1
    ours, gits = sections(answer.content), sections(upload_pack(repo, body))
    assert ours == gits
    assert answer.content.split(b"packfile")[0] == upload_pack(repo, body).split(b"packfile")[0]  # byte for byte
    assert ours[1] == {(rootfirst.OBJ_COMMIT, tip), (rootfirst.OBJ_TREE, git.out("rev-parse", "HEAD^{tree}", cwd=work))}
    assert answer.content.endswith(b"0000")


def test_a_commit_that_is_not_a_tip_goes_to_git(history: tuple[Repo, Git, Path]) -> None:
    repo, git, work = history
    first = git.out("rev-parse", "HEAD~1", cwd=work)
    before = in_process(repo.server, "root-fetch")
    answer = rpc(repo.remote, "git-upload-pack", rootfirst.request_body(first, tip_only=True),
                 f"Bearer {repo.token}", **V2)
    assert answer.status_code == 200 and b"packfile" in answer.content  # upload-pack's answer
    assert in_process(repo.server, "root-fetch") == before
