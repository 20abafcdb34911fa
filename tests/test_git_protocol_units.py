"""Property tests for the data plane's parsers: pkt-lines, push commands, headers, paths."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from artifactd.errors import AuthenticationError, ValidationError
from artifactd.services.git import pktline
from artifactd.services.git.git_access import (
    check_git_protocol,
    credential_from,
    parse_path,
    push_ref_problem,
)
from artifactd.services.git.pktline import (
    PktError,
    PushCommandReader,
    ReceivePackScanner,
    UploadPackScanner,
    encode,
    parse_length,
)

OID = st.text("0123456789abcdef", min_size=40, max_size=40)
REF = st.from_regex(r"refs/heads/[a-z][a-z0-9_]{0,20}(/[a-z][a-z0-9_]{0,10}){0,2}", fullmatch=True)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


@given(st.binary(max_size=65516))
def test_encode_then_parse_length(payload: bytes) -> None:
    packet = encode(payload)
    assert parse_length(packet[:4]) == len(packet)


@given(st.binary(min_size=4, max_size=4))
def test_parse_length_is_strict(header: bytes) -> None:
    try:
        length = parse_length(header)
    except PktError:
        assert not all(chr(b) in "0123456789abcdefABCDEF" for b in header) or int(header, 16) in (
            3, *range(65521, 65536))
        return
    assert header.decode().lower() == f"{length:04x}"
    assert length in (0, 1, 2) or 4 <= length <= pktline.MAX_PKT_LEN


@pytest.mark.parametrize("header", [b"ffff", b"fff1", b"0003", b"+fff", b" 00a", b"-001", b"0x10"])
def test_parse_length_refuses(header: bytes) -> None:
    with pytest.raises(PktError):
        parse_length(header)


@given(st.lists(st.tuples(OID, OID, REF), min_size=1, max_size=20), st.binary(max_size=200),
       st.lists(st.integers(min_value=0), max_size=10))
def test_push_command_reader_any_chunking(updates, rest: bytes, cuts: list[int]) -> None:
    lines = [f"{old} {new} {ref}".encode() for old, new, ref in updates]
    lines[0] += b"\0report-status side-band-64k atomic"
    data = b"".join(encode(line + b"\n") for line in lines) + b"0000"
    reader = PushCommandReader()
    done = False
    fed = b""
    for piece in split_at(data + rest, cuts):
        if done:
            fed += piece
            continue
        done = reader.feed(piece)
    assert done
    assert reader.consumed == data
    assert reader.rest + fed == rest
    assert [(u.old, u.new, u.ref) for u in reader.commands.updates] == list(updates)
    assert reader.commands.sideband
    assert "atomic" in reader.commands.capabilities


def test_push_command_reader_refuses_malformed() -> None:
    for body in (encode(b"not a command\n") + b"0000",
                 encode(b"%s %s\n" % (b"0" * 40, b"1" * 40)) + b"0000",
                 encode(b"shallow xyz\n") + b"0000",
                 b"0001"):
        with pytest.raises(PktError):
            PushCommandReader().feed(body)
    reader = PushCommandReader()
    reader.feed(encode(b"%s %s refs/heads/a\0caps\n" % (b"0" * 40, b"1" * 40)))
    with pytest.raises(PktError):
        reader.finish()
    empty = PushCommandReader()
    empty.finish()  # no byte at all: fine (an empty request)
    assert PushCommandReader().feed(b"0000")


def test_push_command_reader_bounds_its_buffer() -> None:
    reader = PushCommandReader()
    line = encode(b"%s %s refs/heads/%s\n" % (b"0" * 40, b"1" * 40, b"x" * 60000))
    with pytest.raises(PktError, match="larger than"):
        for _ in range(pktline.MAX_COMMAND_SECTION // len(line) + 2):
            reader.feed(line)


@given(st.lists(st.integers(min_value=0), max_size=8), st.booleans())
def test_receive_pack_scanner(cuts: list[int], sideband: bool) -> None:
    report = (encode(b"unpack ok\n") + encode(b"ok refs/heads/main\n")
              + encode(b"ng refs/heads/x non-fast-forward\n") + b"0000")
    if sideband:
        stream = (encode(b"\x02progress 50%\r") + encode(b"\x01" + report[:7])
                  + encode(b"\x01" + report[7:]) + b"0000")
    else:
        stream = report
    scanner = ReceivePackScanner(sideband)
    for piece in split_at(stream, cuts):
        scanner.feed(piece)
    assert scanner.updated == ["refs/heads/main"]
    assert scanner.rejected == ["refs/heads/x"]


@given(st.lists(st.integers(min_value=0), max_size=8))
def test_upload_pack_scanner(cuts: list[int]) -> None:
    v2 = encode(b"packfile\n") + encode(b"\x02Enumerating\n") + encode(b"\x01PACK\0\0\0\2") + b"0000"
    v0_plain = encode(b"NAK\n") + b"PACK\0\0\0\2\0\0\0\0"
    nothing = encode(b"acknowledgments\n") + encode(b"NAK\n") + b"0000"
    for stream, expected in ((v2, True), (v0_plain, True), (nothing, False)):
        scanner = UploadPackScanner()
        for piece in split_at(stream, cuts):
            scanner.feed(piece)
        assert scanner.sent_pack is expected


@pytest.mark.parametrize("ref,ok", [
    ("refs/heads/main", True), ("refs/tags/v1.0", True), ("refs/notes/commits", True),
    ("refs/heads/-x", False), ("-x", False), ("refs/heads/a..b", False), ("refs/heads/a@{1}", False),
    ("refs/heads/a\x7f", False), ("HEAD", False), ("refs/main", False), ("refs/heads/a/-b", False),
])
def test_push_ref_problem(ref: str, ok: bool) -> None:
    assert (push_ref_problem(ref) is None) is ok


@pytest.mark.parametrize("value,expected", [
    (None, None), ("", None), ("version=2", "version=2"), ("version=1", "version=1"),
    ("version=0", "version=0"), ("version=2:object-format=sha1", "version=2:object-format=sha1"),
    ("agent=git", "agent=git"),
])
def test_git_protocol_allowed(value: str | None, expected: str | None) -> None:
    assert check_git_protocol(value) == expected


@given(st.text(max_size=80))
def test_git_protocol_never_passes_unsafe_text(value: str) -> None:
    try:
        result = check_git_protocol(value)
    except ValidationError:
        return
    assert result is None or all(ch.isalnum() or ch in "=:._-" for ch in result)


def test_parse_path() -> None:
    target = parse_path("/git/abc123/default/my-repo.git/info/refs")
    assert target is not None
    assert (target.account_id, target.namespace, target.repo, target.action) == (
        "abc123", "default", "my-repo", "info/refs")
    host_form = parse_path("/git/default/my-repo.git/git-upload-pack")
    assert host_form is not None and host_form.account_id is None
    for bad in ("/git/a/default/my-repo.git/info/refs/", "/git/a/../my-repo.git/info/refs",
                "/git/a/default/...git/info/refs", "/git/a/default/my-repo/info/refs",
                "/git/a/b/c/d.git/info/refs", "/git/a/default/.git/info/refs",
                "/git/a/default/x.git/HEAD", "/git/a/default/x.git/objects/info/packs"):
        assert parse_path(bad) is None, bad


def test_credential_forms() -> None:
    token = "art_v1_" + "a" * 40 + "?expires=123"

    def basic(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert credential_from(None) is None
    assert credential_from(f"Bearer {token}") == token
    assert credential_from(f"bearer {token}") == token
    assert credential_from(basic(f"x:{token}")) == token
    assert credential_from(basic("anyone:" + "a" * 40)) == "a" * 40
    for bad in (basic(":secret"), basic("x:"), basic("x"), "Basic ***", "Bearer", "Digest abc"):
        with pytest.raises(AuthenticationError):
            credential_from(bad)
