"""Small clones answered in process (ls-refs and fetch): request shapes, git's bytes, clients."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from artifactd.services.git import small_clone
from tests.gitutil import Git, Repo, bearer, create_repo, pkt, rpc
from tests.harness import Server

SHA = "27af678a7b9353842f8fbf08fbee721960f2cf2b"
OTHER = "0123456789abcdef0123456789abcdef01234567"
CAPS = ("agent=git/2.39.5", "object-format=sha1")
V2 = {"Git-Protocol": "version=2"}


def request(command: str, *arguments: str, capabilities: tuple[str, ...] = CAPS) -> bytes:
    """A v2 request as git writes it: no newline after the command and capabilities (fetch-pack
    and ls-refs use packet_buf_write), one after each argument."""
    return (pkt(f"command={command}") + b"".join(pkt(c) for c in capabilities)
            + b"0001" + b"".join(pkt(a + "\n") for a in arguments) + b"0000")


CLONE_LS_REFS = ("peel", "symrefs", "unborn", "ref-prefix HEAD", "ref-prefix refs/heads/",
                 "ref-prefix refs/tags/")
CLONE_FETCH = ("thin-pack", "no-progress", "ofs-delta", f"want {SHA}", f"want {SHA}", "done")


def test_the_requests_a_clone_sends_are_recognised() -> None:
    listing = small_clone.parse_ls_refs(request("ls-refs", *CLONE_LS_REFS))
    assert listing == small_clone.LsRefs(True, True, True, ("HEAD", "refs/heads/", "refs/tags/"))
    assert small_clone.parse_ls_refs(pkt("command=ls-refs\n") + b"0000") == small_clone.LsRefs(
        False, False, False, ())
    fetch = small_clone.parse_fetch(request("fetch", *CLONE_FETCH))
    assert fetch == small_clone.Fetch((SHA,), include_tag=False)
    fetch = small_clone.parse_fetch(request("fetch", f"want {OTHER}", "include-tag", f"want {SHA}"))
    assert fetch == small_clone.Fetch((OTHER, SHA), include_tag=True)


@pytest.mark.parametrize("body", [
    request("fetch", *CLONE_FETCH, f"have {OTHER}"),
    request("fetch", *CLONE_FETCH, "deepen 1"),
    request("fetch", *CLONE_FETCH, f"shallow {OTHER}"),
    request("fetch", *CLONE_FETCH, "filter blob:none"),
    request("fetch", *CLONE_FETCH, "want-ref refs/heads/main"),
    request("fetch", *CLONE_FETCH, "wait-for-done"),
    request("fetch", *CLONE_FETCH, "sideband-all"),
    request("fetch", *CLONE_FETCH, "packfile-uris https"),
    request("fetch", "done"),  # nothing wanted
    request("fetch", f"want {SHA.upper()}", "done"),
    request("fetch", *CLONE_FETCH, capabilities=("server-option=x",)),
    request("fetch", *CLONE_FETCH, capabilities=("object-format=sha256",)),
    request("fetch", *CLONE_FETCH) + pkt("command=fetch\n") + b"0000",  # two requests
    request("fetch", *CLONE_FETCH)[:-4],
    request("ls-refs", "ref-prefix"),
    request("ls-refs", "exclude refs/x"),
    request("ls-refs", *(f"ref-prefix refs/{i}" for i in range(small_clone.MAX_PREFIXES + 1))),
    request("ls-refs", *CLONE_LS_REFS, capabilities=("server-option=x",)),
    request("object-info", "size", f"oid {SHA}"),
    b"",
    b"zzzz",
])
def test_anything_else_is_left_to_upload_pack(body: bytes) -> None:
    assert small_clone.parse_ls_refs(body) is None and small_clone.parse_fetch(body) is None


# -- against a real server ---------------------------------------------------------------------


def in_process(server: Server, command: str) -> float:
    return server.metric(f'artifactd_git_in_process_total{{command="{command}"}}')


def cloned_events(repo: Repo) -> int:
    """The repo's ``cloned`` events in the server's outbox (its real SQLite database)."""
    with sqlite3.connect(repo.server.data_dir / "artifactd.db") as db:
        (count,) = db.execute("SELECT count(*) FROM event_outbox WHERE type = ? AND repo_name = ?",
                              ("cf.artifacts.repo.cloned", repo.name)).fetchone()
    return int(count)


def upload_pack(repo: Repo, body: bytes) -> bytes:
    """C git's answer to ``body`` on the server's repo directory, as git-http-backend runs it."""
    return subprocess.run(
        ["git", "-c", "uploadpack.allowFilter=true", "-c", "lsrefs.unborn=advertise",
         "upload-pack", "--stateless-rpc", "--strict", str(repo.git_dir)],
        input=body, env={**os.environ, "GIT_PROTOCOL": "version=2"}, capture_output=True,
        check=True,
    ).stdout


@pytest.fixture
def tagged(sqlite_server: Server, tmp_path: Path, unique_name: str) -> tuple[Repo, Git, Path]:
    """A repo with two branches, an annotated tag (and a tag of that tag), a lightweight tag."""
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"a.txt": "a\n", "dir/b.txt": "b\n", "dir/sub/c.bin": os.urandom(3000)})
    git.run("tag", "-a", "v1", "-m", "first release", cwd=work)
    git.run("tag", "-a", "v1-signed-off", "-m", "a tag of a tag", "v1", cwd=work)
    git.run("tag", "light", cwd=work)
    git.run("checkout", "-q", "-b", "topic", cwd=work)
    git.commit_files(work, {"a.txt": "a2\n", "e.txt": ""}, "second")
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", "topic", "--tags", cwd=work)
    return repo, git, work


@pytest.mark.parametrize("arguments", [
    CLONE_LS_REFS,
    (),
    ("peel",),
    ("symrefs", "ref-prefix refs/tags/v"),
    ("unborn", "ref-prefix HEAD"),  # unborn without symrefs: git sends no unborn line
    ("peel", "symrefs", "ref-prefix refs/heads/", "ref-prefix refs/heads/t", "ref-prefix nothing"),
])
def test_ls_refs_is_byte_for_byte_upload_packs(tagged: tuple[Repo, Git, Path],
                                               arguments: tuple[str, ...]) -> None:
    repo = tagged[0]
    body = request("ls-refs", *arguments)
    before = in_process(repo.server, "ls-refs")
    answer = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}", **V2)
    assert answer.status_code == 200
    assert answer.content == upload_pack(repo, body)
    assert in_process(repo.server, "ls-refs") == before + 1


def test_an_empty_repos_unborn_head_is_what_git_says(sqlite_server: Server, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    for arguments in (CLONE_LS_REFS, ("unborn", "ref-prefix HEAD"), ("symrefs",)):
        body = request("ls-refs", *arguments)
        answer = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}", **V2)
        assert answer.content == upload_pack(repo, body)


def fetched_pack(answer: bytes) -> bytes:
    """The pack of a v2 fetch response that is one ``packfile`` section."""
    assert answer.startswith(pkt("packfile\n")) and answer.endswith(b"0000")
    at, data = len(pkt("packfile\n")), b""
    while answer[at:at + 4] != b"0000":
        length = int(answer[at:at + 4], 16)
        assert answer[at + 4] == 1  # no progress asked for: only pack data
        data += answer[at + 5:at + length]
        at += length
    return data


def objects_of(tmp_path: Path, packfile: bytes) -> set[str]:
    """Index the pack in a fresh repo with git's strict checks; the ids it holds."""
    check = tmp_path / "check.git"
    subprocess.run(["git", "init", "-q", "--bare", str(check)], check=True)
    subprocess.run(["git", "--git-dir", str(check), "index-pack", "--stdin", "--strict"],
                   input=packfile, check=True, capture_output=True)
    out = subprocess.run(["git", "--git-dir", str(check), "cat-file", "--batch-all-objects",
                          "--batch-check=%(objectname)"], check=True, capture_output=True, text=True)
    return set(out.stdout.split())


def rev_list_objects(repo: Repo, *tips: str) -> set[str]:
    out = subprocess.run(["git", "--git-dir", str(repo.git_dir), "rev-list", "--objects", *tips],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()}


def test_fetch_sends_what_pack_objects_would(tagged: tuple[Repo, Git, Path], tmp_path: Path) -> None:
    repo = tagged[0]
    refs = repo.refs()
    main, tag = refs["refs/heads/main"], refs["refs/tags/v1"]
    before = in_process(repo.server, "fetch")
    body = request("fetch", "thin-pack", "no-progress", "ofs-delta", "include-tag", f"want {main}",
                   "done")
    answer = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}", **V2)
    assert in_process(repo.server, "fetch") == before + 1
    sent = objects_of(tmp_path, fetched_pack(answer.content))
    # include-tag: both annotated tags of main's commit come along, as pack-objects sends them.
    assert sent == rev_list_objects(repo, main, tag, refs["refs/tags/v1-signed-off"])
    assert sent == objects_of(tmp_path / "git", fetched_pack(upload_pack(repo, body)))


def test_wants_that_are_not_ref_tips_go_to_git(tagged: tuple[Repo, Git, Path]) -> None:
    repo, git, work = tagged
    first = git.out("rev-parse", "main~0^{tree}", cwd=work)  # reachable, not a tip
    before = in_process(repo.server, "fetch")
    body = request("fetch", "no-progress", f"want {first}", "done")
    answer = rpc(repo.remote, "git-upload-pack", body, f"Bearer {repo.token}", **V2)
    assert answer.status_code == 200 and b"packfile" in answer.content
    assert in_process(repo.server, "fetch") == before


@pytest.mark.parametrize("protocol", ["version=2", "version=1", "version=0"])
def test_git_clones_whatever_answers(tagged: tuple[Repo, Git, Path], tmp_path: Path,
                                     protocol: str) -> None:
    repo, git, _work = tagged
    before = in_process(repo.server, "fetch"), in_process(repo.server, "ls-refs")
    clone = tmp_path / f"clone-{protocol}"
    git.run("-c", f"protocol.version={protocol[-1]}", "-c", bearer(repo.token), "clone", "-q",
            repo.remote, str(clone))
    git.run("fsck", "--strict", cwd=clone)
    assert git.out("for-each-ref", "--format=%(objectname) %(refname)", "refs/tags",
                   cwd=clone).splitlines() == [
        f"{oid} {ref}" for ref, oid in sorted(repo.refs().items()) if ref.startswith("refs/tags/")]
    assert git.out("rev-parse", "origin/topic", cwd=clone) == repo.refs()["refs/heads/topic"]
    assert (clone / "dir" / "b.txt").read_text() == "b\n"
    served = in_process(repo.server, "fetch") - before[0], in_process(repo.server, "ls-refs") - before[1]
    assert served == ((1, 1) if protocol == "version=2" else (0, 0))
    assert cloned_events(repo) == 1  # recorded as a clone, whoever answered it
    # A fetch with something to negotiate (haves) is upload-pack's.
    git.commit_files(_work, {"later.txt": "later\n"}, "later")
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "topic", cwd=_work)
    git.run("-c", bearer(repo.token), "fetch", "-q", cwd=clone)
    assert in_process(repo.server, "fetch") - before[0] == served[0]
    git.run("fsck", "--strict", cwd=clone)


def test_repos_past_the_size_threshold_go_to_git(sqlite_server: Server, tmp_path: Path,
                                                 unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"big.bin": os.urandom(small_clone.SMALL_REPO_BYTES + 1)})
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "HEAD:main", cwd=work)
    before = in_process(repo.server, "fetch")
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(tmp_path / "c"))
    assert in_process(repo.server, "fetch") == before
    git.run("fsck", "--strict", cwd=tmp_path / "c")
