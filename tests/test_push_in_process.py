"""Small pushes received in process (services/git/push_in_process.py): no git process, git's
answers, git's on-disk result; anything unusual given to C git."""

from __future__ import annotations

import shutil
import subprocess
import threading
import zlib
from pathlib import Path

import pygit2
import pytest

from artifactd.services.git.pktline import SIDEBAND_DATA
from artifactd.storage import objcheck, packparse, refswap
from artifactd.storage.gitrunner import BASE_CONFIG, REPO_CONFIG
from tests.gitutil import ZERO, Git, Repo, bearer, create_repo, pkt, rpc, wait_no_processes
from tests.harness import Server

CAPS = "report-status-v2 side-band-64k quiet atomic ofs-delta object-format=sha1 agent=git/2.39.5"


def counts(server: Server) -> tuple[float, float, float]:
    """Pushes received in process, pushes given to git, receive-pack processes started."""
    return (server.metric('artifactd_git_pushes_in_process_total{outcome="received"}'),
            server.metric('artifactd_git_pushes_in_process_total{outcome="given_to_git"}'),
            server.metric('artifactd_git_processes_started_total{service="git-receive-pack"}'))


def request(commands: list[tuple[str, str, str]], pack: bytes, caps: str = CAPS) -> bytes:
    body = b""
    for i, (old, new, ref) in enumerate(commands):
        line = f"{old} {new} {ref}".encode()
        body += pkt(line + (b"\0" + caps.encode() if i == 0 else b"") + b"\n")
    return body + b"0000" + pack


def pack_of(git: Git, work: Path, *revs: str, thin: bool = False) -> bytes:
    args = ["git", "pack-objects", "--stdout", "--revs", "-q", *(["--thin"] if thin else [])]
    return subprocess.run(args, cwd=work, env=git.env, input="".join(f"{r}\n" for r in revs).encode(),
                          capture_output=True, check=True).stdout


def report_lines(answer: bytes) -> list[str]:
    """The report's lines (``unpack ...``, ``ok``/``ng``), side-band or not."""
    def packets(data: bytes) -> list[bytes]:
        out, at = [], 0
        while at + 4 <= len(data):
            length = int(data[at:at + 4], 16)
            if length < 4:
                at += 4
                continue
            out.append(data[at + 4:at + length])
            at += length
        return out

    outer = packets(answer)
    if outer and outer[0][:1] in (b"\x01", b"\x02", b"\x03"):
        inner = b"".join(p[1:] for p in outer if p[:1] == bytes([SIDEBAND_DATA]))
        outer = packets(inner)
    return [p.decode().rstrip("\n") for p in outer]


def c_git_answer(repo_dir: Path, body: bytes) -> bytes:
    """C git's answer on a copy of the repo, with the server's receive-pack configuration."""
    config = [*BASE_CONFIG, *REPO_CONFIG, ("receive.denyNonFastForwards", "false"),
              ("receive.denyDeletes", "false"), ("receive.advertiseAtomic", "true"),
              ("receive.advertisePushOptions", "true")]
    argv = ["git"] + [a for key, value in config for a in ("-c", f"{key}={value}")]
    return subprocess.run([*argv, "receive-pack", "--stateless-rpc", str(repo_dir)], input=body,
                          capture_output=True, check=True).stdout


def refs_of(git_dir: Path) -> dict[str, str]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "for-each-ref",
                          "--format=%(objectname) %(refname)"], capture_output=True, text=True,
                         check=True).stdout
    return {ref: oid for oid, ref in (line.split(" ", 1) for line in out.splitlines())}


def packs(git_dir: Path) -> list[str]:
    # Pack files only: in the dense layout the pack directory is the repo directory itself.
    return sorted(p.name for p in (git_dir / "objects" / "pack").glob("pack-*"))


def loose_dirs(git_dir: Path) -> list[str]:
    return [p.name for p in (git_dir / "objects").iterdir()
            if len(p.name) == 2 and all(c in "0123456789abcdef" for c in p.name)]


@pytest.fixture
def pushed(sqlite_server: Server, tmp_path: Path, unique_name: str) -> tuple[Repo, Git, Path, str]:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    first = git.new_work(work, {"notes.txt": "".join(f"line {i}\n" for i in range(2000))})
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)
    return repo, git, work, first


def test_a_small_push_starts_no_git_process(server: Server, tmp_path: Path, unique_name: str
                                            ) -> None:
    sqlite_server = server  # both databases: admission and recording differ (threads on PG)
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    head = git.new_work(work, {"a.txt": "a\n", "dir/b.txt": "b\n"})
    received, given, started = counts(sqlite_server)
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)
    after = counts(sqlite_server)
    assert after[0] == received + 1 and after[1] == given
    # At most the advertisement of the empty repo (once per worker); the push itself none.
    assert after[2] - started <= 1
    assert repo.refs() == {"refs/heads/main": head}
    # git's own result: one pack with its index, no loose object, valid for git.
    names = packs(repo.git_dir)
    assert len(names) == 2 and names[0].endswith(".idx") and names[1].endswith(".pack")
    assert loose_dirs(repo.git_dir) == []
    subprocess.run(["git", "verify-pack", str(repo.git_dir / "objects" / "pack" / names[0])],
                   check=True, capture_output=True)
    repo.fsck()
    clone = tmp_path / "clone"
    git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(clone))
    assert (clone / "dir" / "b.txt").read_text() == "b\n"
    with sqlite_server.client() as c:
        read = c.get(f"/repos/{repo.name}/raw/main/a.txt")
        assert read.content == b"a\n"
        assert c.get(f"/repos/{repo.name}").json()["result"]["last_push_at"]


def test_the_answer_is_receive_pack_s_byte_for_byte(pushed: tuple[Repo, Git, Path, str]) -> None:
    repo, git, work, first = pushed
    second = git.commit_files(work, {"more.txt": "more\n"}, "second")
    body = request([(first, second, "refs/heads/main")], pack_of(git, work, second, f"^{first}"))
    copy = repo.git_dir.parent / f"{repo.id}.copy"
    shutil.copytree(repo.git_dir, copy, symlinks=True)
    try:
        expected = c_git_answer(copy, body)
    finally:
        shutil.rmtree(copy)
    received = counts(repo.server)[0]
    answer = rpc(repo.remote, "git-receive-pack", body, f"Bearer {repo.token}")
    assert answer.status_code == 200
    assert answer.content == expected
    assert counts(repo.server)[0] == received + 1
    assert repo.refs()["refs/heads/main"] == second


def test_a_thin_push_is_written_whole(sqlite_server: Server, pushed: tuple[Repo, Git, Path, str]
                                      ) -> None:
    repo, git, work, first = pushed
    lines = [f"line {i}\n" for i in range(2000)]
    lines[1000] = "a changed line\n"
    second = git.commit_files(work, {"notes.txt": "".join(lines)}, "one line changed")
    # What git push sends is thin: the new blob is a delta against the one the repo has.
    thin = pack_of(git, work, second, f"^{first}", thin=True)
    server_repo = pygit2.Repository(str(repo.git_dir))

    def lookup(oid: bytes) -> tuple[int, bytes] | None:
        kind, data = server_repo.odb.read(pygit2.Oid(raw=oid))
        return int(kind), bytes(data)

    assert packparse.parse(thin, lookup, max_objects=100).thin
    server_repo.free()
    before = packs(repo.git_dir)
    received = counts(sqlite_server)[0]
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "main", cwd=work)
    assert counts(sqlite_server)[0] == received + 1
    assert repo.refs()["refs/heads/main"] == second
    new = [name for name in packs(repo.git_dir) if name not in before]
    assert len(new) == 2
    idx = repo.git_dir / "objects" / "pack" / next(n for n in new if n.endswith(".idx"))
    listing = subprocess.run(["git", "verify-pack", "-v", str(idx)], capture_output=True,
                             text=True, check=True).stdout
    assert "non delta: 3 objects" in listing and "chain length" not in listing
    repo.fsck()


def test_deletes_atomic_and_stale_updates_answer_as_git_does(
    sqlite_server: Server, pushed: tuple[Repo, Git, Path, str]
) -> None:
    repo, git, work, first = pushed
    second = git.commit_files(work, {"x.txt": "x\n"}, "second")
    third = git.commit_files(work, {"y.txt": "y\n"}, "third")
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, f"{second}:refs/heads/loose",
            f"{second}:refs/heads/packed", f"{second}:refs/heads/other", cwd=work)
    subprocess.run(["git", f"--git-dir={repo.git_dir}", "pack-refs", "--all"], check=True)
    # packed-refs now holds every ref: make `loose` and `other` loose files again.
    git.run("-c", bearer(repo.token), "push", "-q", "--force", repo.remote,
            f"{third}:refs/heads/loose", f"{third}:refs/heads/other", cwd=work)
    pack = pack_of(git, work, third, f"^{second}")
    cases = [
        # a loose and a packed ref deleted
        request([(third, ZERO, "refs/heads/loose"), (second, ZERO, "refs/heads/packed")], b"",
                CAPS + " delete-refs"),
        # atomic: one stale old value refuses both
        request([(ZERO, third, "refs/heads/new"), (first, third, "refs/heads/other")], pack),
        # not atomic: the stale one alone is refused
        request([(ZERO, third, "refs/heads/new"), (first, third, "refs/heads/other")], pack,
                CAPS.replace("atomic ", "")),
        # a rewind (not a fast-forward) with the right old value: accepted, as configured
        request([(third, first, "refs/heads/other")], pack_of(git, work, first, f"^{first}")),
        # creating a ref that exists
        request([(ZERO, first, "refs/heads/main")], pack_of(git, work, first, f"^{first}")),
    ]
    for body in cases:
        copy = repo.git_dir.parent / f"{repo.id}.copy"
        shutil.copytree(repo.git_dir, copy, symlinks=True)
        try:
            expected = c_git_answer(copy, body)
            expected_refs = refs_of(copy)
        finally:
            shutil.rmtree(copy)
        received, given, _ = counts(sqlite_server)
        answer = rpc(repo.remote, "git-receive-pack", body, f"Bearer {repo.token}")
        assert report_lines(answer.content) == report_lines(expected), body
        assert repo.refs() == expected_refs
        assert counts(sqlite_server)[:2] == (received + 1, given)
    assert "refs/heads/loose" not in repo.refs() and "refs/heads/packed" not in repo.refs()
    assert "refs/heads/packed" not in (repo.git_dir / "packed-refs").read_text()
    repo.fsck()


@pytest.mark.parametrize("case", ["truncated", "checksum", "missing base", "bad commit",
                                  "unsorted tree", "junk after"])
def test_bad_packs_are_refused_as_git_refuses_them(
    sqlite_server: Server, pushed: tuple[Repo, Git, Path, str], case: str
) -> None:
    repo, git, work, first = pushed
    second = git.commit_files(work, {"z.txt": "z\n"}, "second")
    good = pack_of(git, work, second, f"^{first}")
    target = second
    if case == "truncated":
        pack = good[:len(good) // 2]
    elif case == "checksum":
        pack = good[:-1] + bytes([good[-1] ^ 1])
    elif case == "junk after":
        pack = resum(good[:-20] + b"\0\0\0")
    elif case == "missing base":
        delta = b"\x05\x05\x05hello"
        pack = resum(b"PACK\0\0\0\2\0\0\0\1" + header(7, len(delta)) + b"\x11" * 20
                     + zlib.compress(delta))
    else:
        if case == "bad commit":
            raw, kind = (f"tree {'0' * 39}\nauthor A <a@b> 1 +0000\n"
                         "committer A <a@b> 1 +0000\n\nbad\n").encode(), 1
        else:
            raw, kind = b"100644 b\0" + b"\1" * 20 + b"100644 a\0" + b"\2" * 20, 2
        pack = resum(b"PACK\0\0\0\2\0\0\0\1" + header(kind, len(raw)) + zlib.compress(raw))
        target = packparse.object_id(kind, raw).hex()
    body = request([(first, target, "refs/heads/main")], pack)
    copy = repo.git_dir.parent / f"{repo.id}.copy"
    shutil.copytree(repo.git_dir, copy, symlinks=True)
    try:
        expected = report_lines(c_git_answer(copy, body))
    finally:
        shutil.rmtree(copy)
    assert expected[0] != "unpack ok" or expected[1].startswith("ng ")
    before = packs(repo.git_dir)
    _, given, _ = counts(sqlite_server)
    answer = rpc(repo.remote, "git-receive-pack", body, f"Bearer {repo.token}")
    assert report_lines(answer.content) == expected
    assert counts(sqlite_server)[1] == given + 1  # given to git: git's own error
    assert repo.refs() == {"refs/heads/main": first}
    assert packs(repo.git_dir) == before and loose_dirs(repo.git_dir) == []
    assert wait_no_processes(repo.git_dir) == []


def header(kind: int, size: int) -> bytes:
    out = bytearray()
    byte = (kind << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def resum(body: bytes) -> bytes:
    import hashlib
    return body + hashlib.sha1(body).digest()


def test_racing_pushes_on_one_ref_let_one_win(
    sqlite_server: Server, pushed: tuple[Repo, Git, Path, str], tmp_path: Path
) -> None:
    repo, git, _work, _first = pushed
    received = counts(sqlite_server)[0]
    for round_ in range(3):
        base = repo.refs()["refs/heads/main"]
        tips, works = [], []
        for side in ("a", "b"):
            clone = tmp_path / f"race-{round_}-{side}"
            git.run("-c", bearer(repo.token), "clone", "-q", repo.remote, str(clone))
            assert git.out("rev-parse", "HEAD", cwd=clone) == base
            tips.append(git.commit_files(clone, {f"{side}.txt": f"{side}{round_}\n"}, side))
            works.append(clone)
        results: list[subprocess.CompletedProcess[str]] = []
        start = threading.Barrier(2)

        def push(clone: Path) -> None:
            start.wait()
            results.append(git.run("-c", bearer(repo.token), "push", repo.remote,
                                   "HEAD:refs/heads/main", cwd=clone, check=False))

        threads = [threading.Thread(target=push, args=(clone,)) for clone in works]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r.returncode for r in results) == [0, 1], [r.stderr for r in results]
        loser = next(r for r in results if r.returncode)
        assert "rejected" in loser.stderr or "failed to update ref" in loser.stderr
        assert repo.refs()["refs/heads/main"] in tips
    assert counts(sqlite_server)[0] >= received + 3  # the winners at least, in process
    repo.fsck()


def test_push_options_and_deletes_through_git(
    sqlite_server: Server, pushed: tuple[Repo, Git, Path, str]
) -> None:
    repo, git, work, first = pushed
    received = counts(sqlite_server)[0]
    git.run("-c", bearer(repo.token), "push", "-q", "-o", "ci.skip", "-o", "note=x",
            repo.remote, "main:refs/heads/topic", cwd=work)
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "--delete", "topic", cwd=work)
    assert counts(sqlite_server)[0] == received + 2
    assert repo.refs() == {"refs/heads/main": first}
    # The current branch is left to git, which refuses to delete it.
    refused = git.run("-c", bearer(repo.token), "push", repo.remote, "--delete", "main",
                      cwd=work, check=False)
    assert refused.returncode != 0 and "deletion of the current branch" in refused.stderr
    assert repo.refs() == {"refs/heads/main": first}


# -- the pieces, without a server --------------------------------------------------------------


def test_objects_fsck_looks_at_closely_are_left_to_git() -> None:
    good_commit = (f"tree {'a' * 40}\nparent {'b' * 40}\nauthor A U <a@b> 1700000000 +0100\n"
                   "committer C <c@d> 0 -0000\nencoding utf-8\n\nmessage\n").encode()
    assert objcheck.links(objcheck.COMMIT, good_commit) == [
        (objcheck.TREE, bytes.fromhex("a" * 40)), (objcheck.COMMIT, bytes.fromhex("b" * 40))]
    for bad in (good_commit.replace(b"author A U", b"author <x>"),
                good_commit.replace(b"1700000000", b"01700000000"),
                good_commit.replace(b"\n\nmessage", b"\nmessage"),
                good_commit.replace(b"+0100", b"+100"),
                good_commit.replace(b"tree ", b"tree  ")):
        with pytest.raises(objcheck.Unusual):
            objcheck.links(objcheck.COMMIT, bad)
    entry = b"\1" * 20
    assert len(objcheck.links(objcheck.TREE, b"100644 a\0" + entry + b"40000 b\0" + entry)) == 2
    for bad_tree in (b"100664 a\0" + entry, b"040000 a\0" + entry, b"100644 .git\0" + entry,
                     b"100644 .GITMODULES\0" + entry, b"40000 git~1\0" + entry,
                     b"100644 b\0" + entry + b"100644 a\0" + entry,
                     b"100644 a\0" + entry + b"40000 a\0" + entry, b"100644 \xc3\xa9\0" + entry,
                     b"100644 a\0" + entry[:10]):
        with pytest.raises(objcheck.Unusual):
            objcheck.links(objcheck.TREE, bad_tree)
    with pytest.raises(objcheck.Unusual):
        objcheck.links(objcheck.TAG, b"object " + b"a" * 40 + b"\n")


def test_a_held_ref_lock_fails_the_update(tmp_path: Path) -> None:
    git_dir = tmp_path / "r.git"
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True)
    work = tmp_path / "w"
    git = Git(tmp_path / "home")
    head = git.new_work(work)
    git.run("push", "-q", str(git_dir), "main", cwd=work)
    repo = pygit2.Repository(str(git_dir))
    try:
        (git_dir / "refs" / "heads" / "main.lock").write_text("")
        outcome = refswap.apply(repo, [refswap.Update(head, ZERO, "refs/heads/main")],
                                atomic=False)
        assert outcome[0].refused == refswap.FAILED and "cannot lock ref" in outcome[0].error
        (git_dir / "refs" / "heads" / "main.lock").unlink()
        assert refswap.apply(repo, [refswap.Update(head, ZERO, "refs/heads/main")],
                             atomic=False) == [refswap.Outcome("refs/heads/main")]
    finally:
        repo.free()
    assert refs_of(git_dir) == {}
