"""Partial-clone hydration served without git: the request shape, the pack, and real clients."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artifactd.services.git import blob_fetch
from tests.gitutil import Git, bearer, create_repo, pkt, rpc
from tests.harness import Server

SHA = "27af678a7b9353842f8fbf08fbee721960f2cf2b"
OTHER = "0123456789abcdef0123456789abcdef01234567"


def request(*arguments: str, capabilities: tuple[str, ...] = ("agent=git/2.39.5", "object-format=sha1")) -> bytes:
    """A protocol-v2 fetch request as git's lazy fetch sends it, with ``arguments``."""
    return (pkt("command=fetch\n") + b"".join(pkt(c + "\n") for c in capabilities) + b"0001"
            + b"".join(pkt(a + "\n") for a in arguments) + b"0000")


LAZY = ("thin-pack", "no-progress", "ofs-delta", "filter blob:none", f"want {SHA}", "done")


def test_the_lazy_fetch_git_sends_is_recognised() -> None:
    assert blob_fetch.wanted_blobs(request(*LAZY)) == [SHA]
    assert blob_fetch.wanted_blobs(
        request("filter blob:none", f"want {SHA}", f"want {OTHER}", f"want {SHA}", "done")) == [SHA, OTHER]
    for spec in ("blob:limit=1k", "tree:0"):
        assert blob_fetch.wanted_blobs(request(f"filter {spec}", f"want {SHA}", "done")) == [SHA]


@pytest.mark.parametrize("body", [
    request("filter blob:none", f"want {SHA}"),  # no "done": a negotiation, git acknowledges
    request("filter blob:none", "done"),  # nothing wanted
    request(f"want {SHA}", "done"),  # no filter: an ordinary clone's shape
    request(*LAZY, f"have {OTHER}"),
    request(*LAZY, "include-tag"),
    request(*LAZY, "deepen 1"),
    request(*LAZY, "shallow " + OTHER),
    request(*LAZY, "want-ref refs/heads/main"),
    request(*LAZY, "sideband-all"),
    request(*LAZY, "filter blob:none"),  # a second filter: git refuses it
    request(f"filter sparse:oid={OTHER}", f"want {SHA}", "done"),
    request("filter blob:none", f"want {SHA.upper()}", "done"),
    request("filter blob:none", f"want {SHA[:39]}", "done"),
    request(*LAZY, capabilities=("server-option=x",)),
    request(*LAZY, capabilities=("object-format=sha256",)),
    request(*LAZY) + pkt("extra\n"),  # anything after the request
    request(*LAZY)[:-4],  # no final flush
    request(*LAZY).replace(b"0001", b"0000"),  # no delimiter
    pkt("command=ls-refs\n") + b"0001" + b"0000",
    b"zzzz",
    b"",
    request("filter blob:none", *(f"want {i:040x}" for i in range(blob_fetch.MAX_WANTS + 1)), "done"),
])
def test_anything_else_is_left_to_upload_pack(body: bytes) -> None:
    assert blob_fetch.wanted_blobs(body) is None


def index_pack(tmp_path: Path, data: bytes) -> Path:
    """``git index-pack`` the pack into a fresh repo: git's own check of every byte."""
    repo = tmp_path / "check.git"
    if not repo.exists():
        subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    subprocess.run(["git", "--git-dir", str(repo), "index-pack", "--stdin", "--strict"],
                   input=data, check=True, capture_output=True)
    return repo


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=5, unique=True))
def test_packs_are_what_git_reads(tmp_path: Path, blobs: list[bytes]) -> None:
    repo = index_pack(tmp_path, blob_fetch.pack(blobs))
    for blob in blobs:
        sha = subprocess.run(["git", "hash-object", "--stdin"], input=blob, check=True,
                             capture_output=True).stdout.decode().strip()
        out = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "blob", sha],
                             check=True, capture_output=True).stdout
        assert out == blob


def test_sizes_past_one_header_byte_and_one_sideband_packet(tmp_path: Path) -> None:
    blob = os.urandom(150_000)  # incompressible: the pack spans three side-band packets
    packfile = blob_fetch.pack([blob, b"", b"x" * 15, b"y" * 16])
    index_pack(tmp_path, packfile)
    answer = blob_fetch.response(packfile)
    assert answer.startswith(pkt("packfile\n")) and answer.endswith(b"0000")
    at, data = len(pkt("packfile\n")), b""
    while answer[at:at + 4] != b"0000":
        length = int(answer[at:at + 4], 16)
        assert length <= 65520 and answer[at + 4] == 1
        data += answer[at + 5:at + length]
        at += length
    assert data == packfile


# -- against a real server and git client ------------------------------------------------------


def fast_fetches(server: Server) -> float:
    return server.metric("artifactd_git_blob_fetches_total ")


def test_lazy_clone_hydrates_through_the_fast_path(server: Server, tmp_path: Path, unique_name: str) -> None:
    repo = create_repo(server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    files = {f"f{i}.txt": f"file {i}\n" * (i + 1) for i in range(5)}
    files["noise.bin"] = os.urandom(120_000)  # more than one side-band packet
    files["large.bin"] = os.urandom(blob_fetch.MAX_BYTES + 1)  # left to upload-pack
    git.new_work(work, files)
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "HEAD:main", cwd=work)
    clone = tmp_path / "lazy"
    git.run("-c", bearer(repo.token), "clone", "-q", "--filter=blob:none", "--no-checkout",
            repo.remote, str(clone))
    git.run("config", "http.extraHeader", f"Authorization: Bearer {repo.token}", cwd=clone)
    before = fast_fetches(server)
    for name, data in files.items():
        sha = git.out("rev-parse", f"HEAD:{name}", cwd=clone)
        out = subprocess.run(["git", "cat-file", "blob", sha], cwd=clone, env=git.env,
                             capture_output=True, check=True).stdout
        assert out == (data if isinstance(data, bytes) else data.encode())
    assert fast_fetches(server) - before == len(files) - 1  # all but large.bin
    git.run("fsck", "--strict", cwd=clone)
    assert "?" not in git.out("rev-list", "--objects", "--missing=print", "HEAD", cwd=clone)


def test_other_wants_get_upload_packs_answer(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    server = sqlite_server
    repo = create_repo(server, unique_name)
    git = Git(tmp_path / "home")
    work = tmp_path / "w"
    git.new_work(work, {"a.txt": "a\n"})
    git.run("-c", bearer(repo.token), "push", "-q", repo.remote, "HEAD:main", cwd=work)
    tree = git.out("rev-parse", "HEAD^{tree}", cwd=work)
    auth = f"Bearer {repo.token}"
    before = fast_fetches(server)
    answer = rpc(repo.remote, "git-upload-pack",
                 request("filter blob:none", f"want {tree}", "done"), auth, **{"Git-Protocol": "version=2"})
    assert answer.status_code == 200 and b"PACK" in answer.content  # git packed the tree
    missing = rpc(repo.remote, "git-upload-pack",
                  request("filter blob:none", f"want {OTHER}", "done"), auth, **{"Git-Protocol": "version=2"})
    assert b"not our ref" in missing.content
    assert fast_fetches(server) == before
