"""Properties of the pure pieces behind content, fork and import: parsers and validators."""

from __future__ import annotations

import contextlib
import ipaddress
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactd.errors import ArtifactdError
from artifactd.http.ranges import UNSATISFIABLE, etag_matches, parse_range
from artifactd.http.sniff import sniff
from artifactd.services.reads.content import path_problem, ref_candidates
from artifactd.services.repos.import_source import (
    AllowList,
    address_problem,
    check_url,
    parse_advertisement,
)
from artifactd.storage.forklink import link_objects, write_packed_refs
from artifactd.storage.gitobjects import commit_date, parse_commit, parse_identity, parse_tree

# -- ranges ----------------------------------------------------------------------------------


@given(size=st.integers(0, 10**6), first=st.integers(0, 2 * 10**6), last=st.integers(0, 2 * 10**6))
def test_range_is_within_bounds_or_refused(size: int, first: int, last: int) -> None:
    for header in (f"bytes={first}-{last}", f"bytes={first}-", f"bytes=-{last}"):
        got = parse_range(header, size)
        if got is None or got == UNSATISFIABLE:
            continue
        start, end = got
        assert 0 <= start <= end < size


def test_range_cases() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=8-100", 10) == (8, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) == UNSATISFIABLE
    assert parse_range("bytes=-0", 10) == UNSATISFIABLE
    assert parse_range("bytes=0-", 0) == UNSATISFIABLE
    for ignored in ("bytes=5-2", "bytes=1-2,4-5", "chars=1-2", "bytes=", "bytes=-", "bytes=a-b"):
        assert parse_range(ignored, 10) is None, ignored
    assert etag_matches('W/"a", "b"', '"a"') and not etag_matches('W/"a"', '"a"', weak=False)
    assert etag_matches("*", '"a"') and not etag_matches(None, '"a"')


# -- git objects -----------------------------------------------------------------------------


@given(st.binary(max_size=400))
def test_parsers_never_raise(raw: bytes) -> None:
    parse_commit("0" * 40, raw)
    parse_tree(raw)
    parse_identity(raw)
    commit_date(raw)


def test_identity_dates() -> None:
    ident = parse_identity(b"A U Thor <a@example.com> 1700000000 +0530")
    assert (ident.name, ident.email, ident.timestamp) == ("A U Thor", "a@example.com", 1700000000)
    assert ident.date == "2023-11-15T03:43:20+05:30"
    assert parse_identity(b"<a@b> 0 -0000").date == "1970-01-01T00:00:00+00:00"
    odd = parse_identity(b"no email here")
    assert odd.name == "no email here" and odd.email == ""


def test_tree_parser_agrees_with_git(tmp_path: Path) -> None:
    git = ["git", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", "--bare", str(tmp_path)], check=True)
    blob = subprocess.run([*git, f"--git-dir={tmp_path}", "hash-object", "-w", "--stdin"],
                          input=b"x", capture_output=True, check=True).stdout.decode().strip()
    empty_tree = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    listing = (f"100644 blob {blob}\tb.txt\n100755 blob {blob}\texec\n120000 blob {blob}\tlink\n"
               f"040000 tree {empty_tree}\tdir\n160000 commit {'1' * 40}\tsub\n"
               f"100644 blob {blob}\tnon-ascii é.txt\n")
    tree = subprocess.run([*git, f"--git-dir={tmp_path}", "mktree"], input=listing.encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    raw = subprocess.run([*git, f"--git-dir={tmp_path}", "cat-file", "tree", tree],
                         capture_output=True, check=True).stdout
    ls = subprocess.run([*git, f"--git-dir={tmp_path}", "ls-tree", "-z", tree],
                        capture_output=True, check=True).stdout.decode()
    expected = []
    for record in filter(None, ls.split("\0")):
        meta, name = record.split("\t", 1)
        mode, kind, sha = meta.split()
        expected.append((name, mode, kind, sha))
    assert [(e.name, e.mode, e.type, e.sha) for e in parse_tree(raw)] == expected


# -- paths, refs, sniffing -------------------------------------------------------------------


@given(st.text(max_size=60))
def test_accepted_paths_are_plain_relative(value: str) -> None:
    if path_problem(value) is None:
        parts = value.split("/")
        assert not value.startswith("/") and all(p not in ("", ".", "..") for p in parts)
        assert not any(ord(ch) < 0x20 or ch == "\x7f" for ch in value)


def test_ref_candidates() -> None:
    assert ref_candidates("main") == ["refs/heads/main", "refs/tags/main"]
    assert ref_candidates("abc123") == ["refs/heads/abc123", "refs/tags/abc123", "abc123"]
    assert ref_candidates("refs/tags/v1") == ["refs/tags/v1"]


@pytest.mark.parametrize(("path", "head", "expected"), [
    ("README.md", b"# hi", "text/markdown; charset=utf-8"),
    ("a.html", b"<html>", "text/plain; charset=utf-8"),
    ("a.svg", b"<svg>", "text/plain; charset=utf-8"),
    ("a.png", b"whatever", "image/png"),
    ("noext", b"\x89PNG\r\n\x1a\n....", "image/png"),
    ("noext", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "application/octet-stream"),  # never a document
    ("noext", b"hello \xc3", "text/plain; charset=utf-8"),  # UTF-8 cut mid-character
    ("noext", b"\x00\x01", "application/octet-stream"),
    ("noext", b"\xff\xfe\xfd latin-1?", "application/octet-stream"),
    ("big.txt", None, "text/plain"),
    ("big", None, "application/octet-stream"),
    ("data.json", b"{}", "application/json; charset=utf-8"),
])
def test_sniff(path: str, head: bytes | None, expected: str) -> None:
    assert sniff(path, head) == expected


# -- import addresses and URLs ---------------------------------------------------------------


@given(st.ip_addresses())
def test_only_global_addresses_pass(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    if address_problem(address) is None:
        assert address.is_global and not address.is_loopback and not address.is_private


@pytest.mark.parametrize("text", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fe80::1",
                                  "fc00::1", "::ffff:192.168.1.1", "64:ff9b::a00:1",
                                  "2002:7f00:1::", "100.64.0.1", "224.0.0.1", "0.0.0.0"])
def test_refused_addresses(text: str) -> None:
    assert address_problem(ipaddress.ip_address(text)) is not None


def test_allowlist() -> None:
    allow = AllowList.parse(" 127.0.0.1 , 10.0.0.0/8, git.internal., [::1] ,")
    assert allow.hosts == frozenset({"git.internal"})
    assert allow.admits("GIT.internal") and allow.admits("x", ipaddress.ip_address("10.9.8.7"))
    assert allow.admits("y", ipaddress.ip_address("::1"))
    assert not allow.admits("x", ipaddress.ip_address("192.168.0.1"))


def test_check_url_uses_every_resolved_address() -> None:
    """One refused address among several (a rebinding attempt) refuses the URL."""
    def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "2606:2800:220:1::"]

    with pytest.raises(ArtifactdError) as info:
        check_url("https://example.com/r.git", AllowList.parse(""), mixed)
    assert int(info.value.code) == 11090 and "10.0.0.5" in info.value.message
    source = check_url("https://example.com:444/r.git/", AllowList.parse(""), public)
    assert source.url == "https://example.com:444/r.git" and source.address == "93.184.216.34"
    assert source.curl_resolve() == "example.com:444:93.184.216.34"
    assert source.alternatives == ("2606:2800:220:1::",)


def _pkt(payload: bytes) -> bytes:
    return b"%04x" % (len(payload) + 4) + payload


def test_parse_advertisement() -> None:
    a, b = "a" * 40, "b" * 40
    data = (_pkt(b"# service=git-upload-pack\n") + b"0000"
            + _pkt(f"{a} HEAD\0multi_ack symref=HEAD:refs/heads/trunk agent=git/2\n".encode())
            + _pkt(f"{a} refs/heads/trunk\n".encode()) + _pkt(f"{b} refs/heads/dev\n".encode())
            + _pkt(f"{b} refs/tags/v1\n".encode()) + _pkt(f"{a} refs/tags/v1^{{}}\n".encode())
            + b"0000")
    assert parse_advertisement(data) == ({"trunk": a, "dev": b}, 1, "trunk")
    empty = (_pkt(b"# service=git-upload-pack\n") + b"0000"
             + _pkt(b"0" * 40 + b" capabilities^{}\0agent=x\n") + b"0000")
    assert parse_advertisement(empty) == ({}, 0, None)
    for bad in (b"", b"garbage", b"0005x", _pkt(b"hello") + b"0000"):
        with pytest.raises(ValueError):
            parse_advertisement(bad)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_parse_advertisement_raises_only_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_advertisement(data)


# -- fork linking ----------------------------------------------------------------------------


def test_link_objects_counts_and_shares_inodes(tmp_path: Path) -> None:
    src = tmp_path / "src.git"
    subprocess.run(["git", "init", "-q", "--bare", str(src)], check=True)
    for i in range(3):
        subprocess.run(["git", f"--git-dir={src}", "hash-object", "-w", "--stdin"],
                       input=f"loose {i}".encode(), check=True, capture_output=True)
    subprocess.run(["git", f"--git-dir={src}", "repack", "-q", "-d"], check=True)
    subprocess.run(["git", f"--git-dir={src}", "hash-object", "-w", "--stdin"],
                   input=b"one more loose", check=True, capture_output=True)
    dst = tmp_path / "dst"
    (dst / "objects").mkdir(parents=True)
    linked = link_objects(src / "objects", dst / "objects")
    counted = subprocess.run(["git", f"--git-dir={src}", "count-objects", "-v"],
                             capture_output=True, text=True, check=True).stdout
    values = dict(line.split(": ") for line in counted.splitlines())
    assert linked.objects == int(values["count"]) + int(values["in-pack"])
    for path in (src / "objects").rglob("*"):
        if path.is_file() and path.parent.name != "info":
            twin = dst / "objects" / path.relative_to(src / "objects")
            assert twin.stat().st_ino == path.stat().st_ino
    write_packed_refs(dst, [("refs/heads/b", "1" * 40), ("refs/heads/a", "2" * 40)])
    assert (dst / "packed-refs").read_text().splitlines()[1:] == [
        f"{'2' * 40} refs/heads/a", f"{'1' * 40} refs/heads/b"]
