"""Hostile and broken requests: each is refused with a clear error and no repo changes."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gitutil import (
    Git,
    Repo,
    basic_header,
    bearer,
    create_repo,
    git_processes_for,
    pkt,
    rpc,
    wait_no_processes,
)
from tests.harness import Server

ZERO = "0" * 40


@pytest.fixture(scope="module")
def seeded(sqlite_server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[Repo, Git, Path, str]:
    """One repo with one pushed commit, shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("bad-input")
    repo = create_repo(sqlite_server, f"bad-input-{tmp.name[-8:]}")
    git = Git(tmp / "home")
    work = tmp / "work"
    head = git.new_work(work, {"README.md": "hello\n", "data.bin": os.urandom(50_000)})
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=work)
    return repo, git, work, head


@pytest.fixture
def pushed(seeded) -> Iterator[tuple[Repo, Git, Path, str]]:
    """The shared repo; after each test its refs and objects must be exactly as before."""
    repo, _git, _work, head = seeded
    before = repo.refs()
    assert before == {"refs/heads/main": head}
    yield seeded
    assert repo.refs() == before, "a refused request changed a ref"
    repo.fsck()
    assert wait_no_processes(repo.git_dir) == []


def raw_request(url: str, request: bytes, read_all: bool = True) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation or header checks)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while read_all:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else 0
    return status, body


def get(url: str, path: str, auth: str, *extra: str) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Authorization: {auth}", "Connection: close",
             *extra, "", ""]
    return "\r\n".join(lines).encode()


def push_body(repo: Repo, head: str, ref: str, caps: str = "report-status side-band-64k") -> bytes:
    return pkt(f"{head} {ZERO} {ref}\0{caps}\n".encode()) + b"0000"


@pytest.mark.parametrize("ref", [
    "refs/heads/-evil", "-evil", "refs/heads/a..b", "refs/heads/a@{1}", "refs/heads/bad\x01ctl",
    "refs/heads/tab\there", "HEAD", "refs/heads/x.lock", "refs/heads/trailing/",
])
@pytest.mark.parametrize("sideband", [True, False])
def test_bad_ref_names_refused(pushed, ref: str, sideband: bool) -> None:
    repo, _git, _work, head = pushed
    caps = "report-status side-band-64k" if sideband else "report-status"
    # A delete of a ref that does not exist needs no pack: only the ref name is at stake.
    body = pkt(f"{head} {ZERO} {ref}\0{caps}\n".encode()) + b"0000"
    r = rpc(repo.remote, "git-receive-pack", body, f"Bearer {repo.token}")
    assert r.status_code == 200
    prefix = b"\x03refusing ref " if sideband else b"ERR refusing ref "
    assert r.content[4:].startswith(prefix), r.content


def test_dash_ref_from_git_cli(pushed) -> None:
    repo, git, work, _head = pushed
    result = git.run("-c", bearer(repo.token), "push", repo.remote, "HEAD:refs/heads/-x", cwd=work,
                     check=False)
    assert result.returncode != 0
    assert "refusing ref 'refs/heads/-x': no component may start with '-'" in result.stderr


def _garbage(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(range(256)) * (chunk // 256)
    for _ in range(total // chunk):
        yield block


def test_100mb_garbage_body(pushed) -> None:
    repo, _git, _work, _head = pushed
    r = httpx.post(f"{repo.remote}/git-receive-pack", content=_garbage(100 << 20), timeout=120,
                   headers={"Authorization": f"Bearer {repo.token}",
                            "Content-Type": "application/x-git-receive-pack-request"})
    assert r.status_code == 400
    assert r.text.startswith("Malformed push request: invalid pkt-line length")


def test_100mb_garbage_pack_after_valid_commands(pushed) -> None:
    repo, _git, _work, head = pushed

    def body() -> Iterator[bytes]:
        yield pkt(f"{ZERO} {head} refs/heads/new\0report-status\n".encode()) + b"0000"
        yield from _garbage(100 << 20)

    r = httpx.post(f"{repo.remote}/git-receive-pack", content=body(), timeout=120,
                   headers={"Authorization": f"Bearer {repo.token}",
                            "Content-Type": "application/x-git-receive-pack-request"})
    assert r.status_code == 200
    assert b"unpack " in r.content and b"ng refs/heads/new" in r.content


def test_truncated_pack(pushed) -> None:
    repo, git, work, head = pushed
    new = git.commit_files(work, {"more.bin": os.urandom(100_000)}, "more")
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=work, env=git.env,
                          input=f"{new}\n^{head}\n".encode(), capture_output=True, check=True).stdout
    for cut in (len(pack) // 2, len(pack) - 20, 12):
        body = pkt(f"{head} {new} refs/heads/main\0report-status side-band-64k\n".encode()) + b"0000"
        r = rpc(repo.remote, "git-receive-pack", body + pack[:cut], f"Bearer {repo.token}")
        assert r.status_code == 200
        assert b"unpack " in r.content and b"ng refs/heads/main" in r.content, r.content
        assert b"unpack ok" not in r.content


def test_pkt_length_ffff(pushed) -> None:
    repo, _git, _work, head = pushed
    r = rpc(repo.remote, "git-receive-pack", b"ffff" + b"x" * 100, f"Bearer {repo.token}")
    assert r.status_code == 400 and "invalid pkt-line length 65535" in r.text
    r = rpc(repo.remote, "git-upload-pack", b"ffff" + b"x" * 100, f"Bearer {repo.token}")
    assert r.status_code == 400 and "protocol error" in r.text and "<repo>" not in r.text
    for bad in (b"0003", b"+fff", b" 00a"):
        r = rpc(repo.remote, "git-receive-pack", bad + b"x" * 20, f"Bearer {repo.token}")
        assert r.status_code == 400, bad
    # A command list that never ends.
    r = rpc(repo.remote, "git-receive-pack", pkt(f"{head} {ZERO} refs/heads/x\0report-status\n"),
            f"Bearer {repo.token}")
    assert r.status_code == 400 and "ended before" in r.text


@pytest.mark.parametrize("value", [
    "version=2;id", "version=2 && touch /tmp/pwned", "version=$(id)", "version=`id`",
    "version=2|cat", "version=3", "version=2:version=1", "version=2:--upload-pack=x", "a" * 300,
])
def test_git_protocol_header_refused(pushed, value: str) -> None:
    repo, *_ = pushed
    r = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-upload-pack"},
                  headers={"Authorization": f"Bearer {repo.token}", "Git-Protocol": value})
    assert r.status_code == 400 and "Git-Protocol" in r.text


def test_git_protocol_header_with_newline(pushed) -> None:
    repo, *_ = pushed
    path = urlsplit(repo.remote).path + "/info/refs?service=git-upload-pack"
    request = get(repo.remote, path, f"Bearer {repo.token}", "Git-Protocol: version=2\nfoo")
    status, _body = raw_request(repo.remote, request)
    assert status == 400
    # The same, as an obs-fold continuation line.
    request = get(repo.remote, path, f"Bearer {repo.token}", "Git-Protocol: version=2\r\n foo")
    status, _body = raw_request(repo.remote, request)
    assert status == 400


def test_basic_without_password_or_username(pushed, tmp_path: Path) -> None:
    repo, git, *_ = pushed
    secret = repo.token.split("?")[0]
    for auth in (basic_header("", user="x"), "Basic " + base64.b64encode(b"x").decode(),
                 basic_header(secret, user=""), "Basic !!!notbase64", "Bearer", "Token abc"):
        r = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-upload-pack"},
                      headers={"Authorization": auth})
        assert r.status_code == 401, auth
        assert "www-authenticate" in r.headers
    no_password = repo.remote.replace("://", "://x@")
    result = git.run("clone", no_password, str(tmp_path / "c"), check=False)
    assert result.returncode != 0 and not (tmp_path / "c" / ".git").exists()


def test_tampered_expires(pushed) -> None:
    repo, *_ = pushed
    secret, expires = repo.token.split("?expires=")
    for token in (f"{secret}?expires={int(expires) + 86400}", f"{secret}?expires={int(expires) - 1}",
                  f"{secret}?expires=", f"{secret}?expires={expires}x",
                  # a different last hex digit: never the real secret
                  f"{secret[:-1]}{'1' if secret[-1] == '0' else '0'}?expires={expires}"):
        r = httpx.get(f"{repo.remote}/info/refs", params={"service": "git-receive-pack"},
                      headers={"Authorization": f"Bearer {token}"})
        # Bearer: 403 with the reason (a 401 would make git prompt for a username).
        assert r.status_code == 403 and r.text == "Invalid repo token\n", token


@pytest.mark.parametrize("tail", [
    "/../{name}.git/info/refs", "/%2e%2e/{name}.git/info/refs", "/{name}.git/../{name}.git/info/refs",
    "/{name}.git/info/refs/", "/{name}.git/", "/{name}.git", "/{name}/info/refs",
    "/{name}.git/info/%2e%2e/info/refs", "/%2e%2e%2f%2e%2e/{name}.git/info/refs", "/.git/info/refs",
])
def test_bad_repo_paths(pushed, tail: str) -> None:
    repo, *_ = pushed
    base = urlsplit(repo.remote).path.rsplit("/", 1)[0]  # /git/<account>/default
    path = base + tail.format(name=repo.name) + "?service=git-upload-pack"
    status, body = raw_request(repo.remote, get(repo.remote, path, f"Bearer {repo.token}"))
    assert status == 404, (path, body)
    assert b"refs/heads/main" not in body


# -- disconnects ------------------------------------------------------------------------------


def post_head(repo: Repo, service: str, length: int, *extra: str) -> bytes:
    parts = urlsplit(repo.remote)
    lines = [f"POST {parts.path}/{service} HTTP/1.1", f"Host: {parts.netloc}",
             f"Authorization: Bearer {repo.token}", f"Content-Type: application/x-{service}-request",
             f"Content-Length: {length}", *extra, "", ""]
    return "\r\n".join(lines).encode()


def test_disconnect_mid_clone_kills_git(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    head = git.new_work(tmp_path / "w", {"big.bin": os.urandom(12 << 20)})
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w")
    body = (pkt("command=fetch\n") + b"0001" + pkt("no-progress\n") + pkt(f"want {head}\n")
            + pkt("done\n") + b"0000")
    parts = urlsplit(repo.remote)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(post_head(repo, "git-upload-pack", len(body), "Git-Protocol: version=2") + body)
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        assert git_processes_for(repo.git_dir), "git should still be streaming the pack"
    assert wait_no_processes(repo.git_dir) == []
    repo.fsck()


def test_disconnect_mid_push_leaves_nothing(sqlite_server: Server, tmp_path: Path,
                                            unique_name: str) -> None:
    repo = create_repo(sqlite_server, unique_name)
    git = Git(tmp_path / "home")
    base = git.new_work(tmp_path / "w")
    git.run("-c", bearer(repo.token), "push", repo.remote, "main", cwd=tmp_path / "w")
    new = git.commit_files(tmp_path / "w", {"big.bin": os.urandom(4 << 20)}, "big")
    pack = subprocess.run(["git", "pack-objects", "--stdout", "--revs"], cwd=tmp_path / "w",
                          env=git.env, input=f"{new}\n^{base}\n".encode(), capture_output=True,
                          check=True).stdout
    body = pkt(f"{base} {new} refs/heads/main\0report-status side-band-64k\n".encode()) + b"0000" + pack
    parts = urlsplit(repo.remote)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(post_head(repo, "git-receive-pack", len(body)) + body[: len(body) // 2])
        deadline = time.monotonic() + 10
        while not git_processes_for(repo.git_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert git_processes_for(repo.git_dir), "receive-pack should be running"
    assert wait_no_processes(repo.git_dir) == []
    assert repo.refs() == {"refs/heads/main": base}
    repo.fsck()  # also checks that no incoming-* quarantine directory was left
    assert not (repo.git_dir / "objects" / new[:2] / new[2:]).exists()


def test_no_descriptor_leak(sqlite_server: Server, seeded) -> None:
    """Pipes to git are closed after finished, refused and aborted requests alike."""
    repo, _git, _work, head = seeded
    assert sqlite_server.process is not None
    fd_dir = Path(f"/proc/{sqlite_server.process.pid}/fd")

    def exercise() -> None:
        auth = f"Bearer {repo.token}"
        httpx.get(f"{repo.remote}/info/refs", params={"service": "git-upload-pack"},
                  headers={"Authorization": auth})
        rpc(repo.remote, "git-upload-pack", b"ffff", auth)
        rpc(repo.remote, "git-receive-pack", push_body(repo, head, "refs/heads/a..b"), auth)
        body = pkt("command=fetch\n") + b"0001" + pkt(f"want {head}\n") + pkt("done\n") + b"0000"
        parts = urlsplit(repo.remote)
        with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
            sock.sendall(post_head(repo, "git-upload-pack", len(body) + 10, "Git-Protocol: version=2")
                         + body)  # ten bytes short: the server waits, then sees the disconnect

    def pipes() -> int:
        # Pipes only: the shared server's pooled database connections and background
        # threads' sockets come and go on their own; a leak of git's pipes is what counts.
        count = 0
        for fd in fd_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):  # closed while we looked
                count += os.readlink(fd).startswith("pipe:")
        return count

    exercise()
    assert wait_no_processes(repo.git_dir) == []
    before = pipes()
    for _ in range(10):
        exercise()
    assert wait_no_processes(repo.git_dir) == []
    # Ten rounds of finished, refused and aborted git requests leave no pipe behind. The shared
    # server's own git processes of other repos (a maintenance run, a reader joining the pool)
    # hold pipes for a moment; seen as 9 against 7 once in a full run. A leak stays; they go.
    deadline = time.monotonic() + 15
    while (now := pipes()) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert now <= before, f"{now} pipes open after the rounds, {before} before"
