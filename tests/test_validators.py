"""Property-based tests for the parsers and validators: names, refs, tokens, cursors, config."""

from __future__ import annotations

import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactd.config import load_settings, parse_bytes, parse_rate
from artifactd.errors import ConfigError, ValidationError
from artifactd.services.access.tokens import format_repo_token, parse_api_token, parse_repo_token
from artifactd.services.cursor import CursorCodec
from artifactd.services.names import MAX_NAME_LENGTH, name_problem, ref_problem

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@given(st.text(max_size=80))
def test_name_rule_matches_the_spec(value: str) -> None:
    expected_ok = (
        0 < len(value) <= MAX_NAME_LENGTH and value.isascii() and bool(NAME_RE.fullmatch(value))
    )
    assert (name_problem(value) is None) == expected_ok


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40))
@settings(max_examples=150, deadline=None)
def test_ref_rule_is_no_looser_than_git(ref: str) -> None:
    """Whatever we accept, ``git check-ref-format`` accepts too (as a branch under refs/heads)."""
    if ref_problem(ref) is None:
        result = subprocess.run(
            ["git", "check-ref-format", f"refs/heads/{ref}"], capture_output=True
        )
        assert result.returncode == 0, ref


@pytest.mark.parametrize("ref", ["-x", "a..b", "a@{1}", "a\x01b", "a b", "a~1", "a^", "a:b", "a?",
                                 "a*", "a[", "a\\b", "a/", "/a", "a.", ".a", "a/.b", "a.lock", "@", "a//b"])
def test_refs_git_refuses_are_refused(ref: str) -> None:
    assert ref_problem(ref) is not None


@given(st.text(alphabet="0123456789abcdef", min_size=40, max_size=40), st.integers(0, 10**11))
def test_repo_token_round_trip(secret: str, expires: int) -> None:
    parsed = parse_repo_token(format_repo_token(secret, expires))
    assert parsed is not None and parsed.secret == secret and parsed.expires == expires
    without_suffix = parse_repo_token(f"art_v1_{secret}")
    assert without_suffix is not None and without_suffix.expires is None
    assert parse_repo_token(secret) is not None


@given(st.text(max_size=120))
def test_token_parsers_never_crash_and_are_strict(text: str) -> None:
    parsed = parse_repo_token(text)
    if parsed is not None:
        assert re.fullmatch(r"[0-9a-f]{40}", parsed.secret)
    api = parse_api_token(text)
    if api is not None:
        assert text == f"artd_{api}"


@pytest.mark.parametrize("text", [
    "art_v1_" + "A" * 40, "art_v1_" + "a" * 39, "art_v1_" + "a" * 41, "art_v2_" + "a" * 40,
    "art_v1_" + "a" * 40 + "?expires=-1", "art_v1_" + "a" * 40 + "?expires=", " art_v1_" + "a" * 40,
])
def test_malformed_repo_tokens(text: str) -> None:
    assert parse_repo_token(text) is None


@given(st.dictionaries(st.sampled_from(["s", "d", "q", "v", "i"]),
                       st.one_of(st.integers(), st.text(max_size=20)), min_size=1))
def test_cursor_round_trip(data: dict) -> None:
    codec = CursorCodec(b"k" * 32)
    assert codec.decode(codec.encode(data), {}) == data


@given(st.text(max_size=200))
def test_cursor_garbage_is_refused_cleanly(garbage: str) -> None:
    codec = CursorCodec(b"k" * 32)
    with pytest.raises(ValidationError):
        codec.decode(garbage, {})


@given(st.binary(min_size=1, max_size=8), st.integers(0, 200))
def test_cursor_signed_by_another_key_is_refused(other_key: bytes, position: int) -> None:
    cursor = CursorCodec(other_key).encode({"v": position})
    with pytest.raises(ValidationError):
        CursorCodec(b"k" * 32).decode(cursor, {})


def test_rates_and_sizes() -> None:
    assert parse_rate("2000/10s") == (2000, 10.0)
    assert parse_rate("5/1m") == (5, 60.0)
    assert parse_bytes("10GB") == 10 * 10**9 and parse_bytes("1TiB") == 1 << 40
    assert parse_bytes("512") == 512
    for bad in ("2000", "x/10s", "10/0s", "10/10d", "-1/10s"):
        with pytest.raises(ValueError):
            parse_rate(bad)
    for bad in ("", "GB", "1.5GB", "-1"):
        with pytest.raises(ValueError):
            parse_bytes(bad)


def test_config_precedence(tmp_path) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[artifactd]\nport = 1111\nlog_level = "debug"\nmax_repo_bytes = "1MB"\n')
    env = {"ARTIFACTD_PORT": "2222", "ARTIFACTD_CONFIG": str(path)}
    settings = load_settings(flags={"port": None}, env=env)
    assert settings.port == 2222 and settings.log_level == "debug" and settings.max_repo_bytes == 10**6
    assert load_settings(flags={"port": 3333}, env=env).port == 3333
    assert load_settings(env={"ARTIFACTD_CONFIG": str(path)}).port == 1111


@pytest.mark.parametrize("content", ["port = 'x'", "bogus = 1", "port = [", "rate_limit_git = '5'"])
def test_bad_config_file(tmp_path, content: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError):
        load_settings(env={}, config_file=path)


def test_bad_env_value() -> None:
    with pytest.raises(ConfigError, match="ARTIFACTD_PORT"):
        load_settings(env={"ARTIFACTD_PORT": "eighty"})


@pytest.mark.parametrize("value", ["1MiB", "4MiB", "6GiB"])
def test_upload_part_size_outside_what_s3_takes_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="s3_upload_part_bytes"):
        load_settings(env={"ARTIFACTD_S3_UPLOAD_PART_BYTES": value})
    assert load_settings(env={"ARTIFACTD_S3_UPLOAD_PART_BYTES": "5MiB"}).s3_upload_part_bytes \
        == 5 << 20
