"""``git-credential-artifactd`` with the real git CLI: clone, push, and a blobless clone's
later blob fetches, all with plain remotes and no token in sight."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from artifactd import Artifacts
from artifactd.cli import _config
from artifactd.cli.credential import answer, parse_request
from tests.clientutil import client_env, push_files, run_cli
from tests.harness import Server

SCRIPT = "git-credential-artifactd"


def helper(env: dict[str, str], *args: str, stdin: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([SCRIPT, *args], input=stdin, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def git(env: dict[str, str], *args: str, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def github_request() -> str:
    return "protocol=https\nhost=github.com\npath=cloudflare/workers-sdk.git\n\n"


def request(remote: str, **extra: str) -> str:
    parts = urlsplit(remote)
    lines = [f"protocol={parts.scheme}", f"host={parts.netloc}", f"path={parts.path.lstrip('/')}"]
    lines += [f"{k}={v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


@pytest.fixture
def env(sqlite_server: Server, tmp_path: Path) -> dict[str, str]:
    return client_env(sqlite_server, tmp_path / "home")


@pytest.fixture
def artifacts(sqlite_server: Server) -> Artifacts:
    return Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token)


def setup_helper(env: dict[str, str], *args: str) -> None:
    result = run_cli(env, "credential-helper", "setup", *args)
    assert result.returncode == 0, result.stderr
    assert "git now asks artifactd" in result.stderr


def test_setup_writes_the_git_config_lines(env: dict[str, str], sqlite_server: Server) -> None:
    printed = run_cli(env, "credential-helper", "setup", "--print", "--scope", "read")
    assert printed.returncode == 0, printed.stderr
    origin = sqlite_server.url
    assert printed.stdout.splitlines() == [
        f"git config --global --unset-all credential.{origin}.helper",
        f"git config --global --add credential.{origin}.helper ''",
        f"git config --global --add credential.{origin}.helper 'artifactd --scope read'",
        f"git config --global credential.{origin}.useHttpPath true",
    ]
    setup_helper(env)
    setup_helper(env)  # idempotent
    helpers = git(env, "config", "--global", "--get-all", f"credential.{origin}.helper").stdout
    assert helpers.splitlines() == ["", "artifactd"]
    assert git(env, "config", "--global", f"credential.{origin}.usehttppath").stdout.strip() == "true"


def test_clone_push_and_fetch_with_plain_remotes(
    env: dict[str, str], artifacts: Artifacts, unique_name: str, tmp_path: Path,
) -> None:
    created = artifacts.create(unique_name)
    push_files(tmp_path / "seed", created.remote, created.token, {"README.md": "one\n"})
    setup_helper(env)
    work = tmp_path / "work"
    git(env, "clone", "-q", created.remote, str(work))
    assert (work / "README.md").read_text() == "one\n"
    assert "art_v1_" not in (work / ".git" / "config").read_text()
    (work / "b.txt").write_text("two\n")
    git(env, "add", "b.txt", cwd=work)
    git(env, "commit", "-q", "-m", "Second", cwd=work)
    git(env, "push", "-q", "origin", "main", cwd=work)
    git(env, "fetch", "-q", cwd=work)
    git(env, "pull", "-q", cwd=work)
    git(env, "ls-remote", "-q", "origin", cwd=work)
    assert artifacts.get(unique_name).file("b.txt") == b"two\n"
    scopes = sorted(t.scope for t in artifacts.get(unique_name).list_tokens(per_page=100).tokens)
    # The create token; one read token for the clone, reused by fetch, pull and ls-remote;
    # one write token, for the push only.
    assert scopes == ["read", "write", "write"]
    cache = tmp_path / "home" / ".cache" / "artifactd" / "git-tokens.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert oct(cache.parent.stat().st_mode & 0o777) == "0o700"


def test_blobless_clone_fetches_blobs_later_through_the_helper_read_scope(
    env: dict[str, str], artifacts: Artifacts, unique_name: str, tmp_path: Path,
) -> None:
    created = artifacts.create(unique_name)
    push_files(tmp_path / "seed", created.remote, created.token,
               {"README.md": "lazy\n", "big.bin": bytes(range(256)) * 64})
    setup_helper(env, "--scope", "read")
    work = tmp_path / "partial"
    git(env, "clone", "-q", "--filter=blob:none", "--no-checkout", created.remote, str(work))
    blob = git(env, "rev-parse", "HEAD:README.md", cwd=work).stdout.strip()
    missing = git(env, "rev-list", "--objects", "--missing=print", "HEAD", cwd=work).stdout
    assert f"?{blob}" in missing.splitlines()  # not fetched by the clone
    before = artifacts.get(unique_name).list_tokens(state="all").total
    assert git(env, "cat-file", "-p", blob, cwd=work).stdout == "lazy\n"  # fetched now, via the helper
    assert artifacts.get(unique_name).list_tokens(state="all").total == before  # the clone's, cached
    uncached = {**env, "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    other = git(env, "rev-parse", "HEAD:big.bin", cwd=work).stdout.strip()
    assert git(uncached, "cat-file", "-s", other, cwd=work).stdout.strip() == str(256 * 64)
    assert artifacts.get(unique_name).list_tokens(state="all").total == before + 1
    git(env, "checkout", "-q", "main", cwd=work)
    assert (work / "big.bin").read_bytes() == bytes(range(256)) * 64
    # The helper was set up with --scope read: pushing is refused.
    (work / "x").write_text("x\n")
    git(env, "add", "x", cwd=work)
    git(env, "commit", "-q", "-m", "x", cwd=work)
    assert git(env, "push", "-q", "origin", "main", cwd=work, check=False).returncode != 0


def test_helper_protocol(env: dict[str, str], artifacts: Artifacts, sqlite_server: Server,
                         unique_name: str) -> None:
    created = artifacts.create(unique_name)
    reply = helper(env, "get", stdin=request(created.remote)).stdout
    lines = dict(line.split("=", 1) for line in reply.splitlines())
    assert set(lines) == {"username", "password", "password_expiry_utc"}
    assert lines["username"] == "x" and lines["password"].startswith("art_v1_")
    assert "?expires=" not in lines["password"] and int(lines["password_expiry_utc"]) > 0
    tokens = artifacts.get(unique_name).list_tokens().tokens
    assert {t.scope for t in tokens} == {"write"} and len(tokens) == 2

    read = helper(env, "--scope", "read", "--ttl", "120", "get", stdin=request(created.remote, username="me"))
    assert "username=me\n" in read.stdout
    assert "read" in {t.scope for t in artifacts.get(unique_name).list_tokens().tokens}

    # Not ours, or not enough to tell: no answer, so git asks the next helper (in-process:
    # the same function the script calls).
    settings = _config.load(env=env)
    github = parse_request(["protocol=https", "host=github.com", "path=cloudflare/workers-sdk.git"])
    assert answer(settings, github, "auto", 900) is None
    unknown = created.remote.replace(unique_name, unique_name + "-no")
    assert answer(settings, parse_request(request(unknown).splitlines()), "auto", 900) is None
    no_path = parse_request(["protocol=http", f"host={urlsplit(created.remote).netloc}"])
    assert answer(settings, no_path, "auto", 900) is None
    other_account = created.remote.replace(sqlite_server.account_id, "f" * 32)
    assert answer(settings, parse_request(request(other_account).splitlines()), "auto", 900) is None
    elsewhere = created.remote.replace(urlsplit(created.remote).netloc, "127.0.0.2:1")
    assert answer(settings, parse_request(request(elsewhere).splitlines()), "auto", 900) is None
    assert helper(env, "get", stdin=github_request()).stdout == ""
    # store: nothing to add; erase of a secret not in the cache: nothing to drop.
    assert helper(env, "store", stdin=request(created.remote, username="x", password="p")).stdout == ""
    assert helper(env, "erase", stdin=request(created.remote, username="x", password="p")).stdout == ""
    # Not logged in at all: no answer.
    bare = {k: v for k, v in env.items() if not k.startswith("ARTIFACTD_")}
    assert helper(bare, "get", stdin=request(created.remote)).stdout == ""


def test_helper_errors_are_one_line(env: dict[str, str], artifacts: Artifacts, sqlite_server: Server,
                                    unique_name: str) -> None:
    created = artifacts.create(unique_name)
    reader = {**env, "ARTIFACTD_API_TOKEN": sqlite_server.read_token}
    denied = helper(reader, "get", stdin=request(created.remote), code=1)
    assert denied.stdout == "" and denied.stderr.startswith("git-credential-artifactd: ")
    assert "(code 11012)" in denied.stderr


def test_helper_reads_the_login_file(sqlite_server: Server, artifacts: Artifacts, unique_name: str,
                                     tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    login = run_cli(env, "login")
    assert login.returncode == 0, login.stderr
    from_file = {k: v for k, v in env.items() if not k.startswith("ARTIFACTD_")}
    created = artifacts.create(unique_name)
    assert "password=art_v1_" in helper(from_file, "get", stdin=request(created.remote)).stdout
    listed = run_cli(from_file, "repo", "list", "--search", unique_name, "--json")
    assert [r["name"] for r in json.loads(listed.stdout)["repos"]] == [unique_name]


def test_helper_reuses_a_live_cached_token_and_forgets_a_refused_one(
    env: dict[str, str], artifacts: Artifacts, unique_name: str, tmp_path: Path,
) -> None:
    created = artifacts.create(unique_name)
    handle = artifacts.get(unique_name)
    first = helper(env, "--scope", "read", "get", stdin=request(created.remote)).stdout
    again = helper(env, "--scope", "read", "get", stdin=request(created.remote)).stdout
    assert first == again and "password=art_v1_" in first
    assert [t.scope for t in handle.list_tokens().tokens].count("read") == 1
    secret = dict(line.split("=", 1) for line in first.splitlines())["password"]
    cache = tmp_path / "home" / ".cache" / "artifactd" / "git-tokens.json"
    assert secret in cache.read_text() and oct(cache.stat().st_mode & 0o777) == "0o600"
    # git erases a credential the server refused (say, revoked): the next get mints anew.
    assert handle.revoke_token(secret)
    helper(env, "erase", stdin=request(created.remote, username="x", password=secret))
    assert secret not in cache.read_text()
    fresh = helper(env, "--scope", "read", "get", stdin=request(created.remote)).stdout
    assert fresh != first and "password=art_v1_" in fresh
    # A cache other users could read is not trusted: ignored (a new token), then replaced.
    cache.chmod(0o644)
    widened = helper(env, "--scope", "read", "get", stdin=request(created.remote)).stdout
    assert widened != fresh and oct(cache.stat().st_mode & 0o777) == "0o600"
    # --no-cache mints every time.
    before = handle.list_tokens().total
    helper(env, "--scope", "read", "--no-cache", "get", stdin=request(created.remote))
    assert handle.list_tokens().total == before + 1


def test_git_subcommand_and_ancestry() -> None:
    import os

    from artifactd.cli._git_operation import asking_operation, git_subcommand

    assert git_subcommand(["git", "-C", "dir", "-c", "a=b", "push", "origin"]) == "push"
    assert git_subcommand(["/usr/lib/git-core/git-remote-http", "origin", "http://x"]) == "remote-http"
    assert git_subcommand(["git", "--no-pager"]) is None and git_subcommand(["python"]) is None
    assert asking_operation(os.getpid()) is None  # pytest has no git ancestor
