"""The client commands as a user runs them: subprocesses, exact exit codes, no tracebacks."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from artifactd import Artifacts, RateLimited
from artifactd.cli import main
from tests.clientutil import (
    client_env,
    closed_port_url,
    git_source,
    make_source_repo,
    proxy_502,
    push_files,
    run_cli,
    silent_server,
)
from tests.conftest import IMPORT_SERVER_RATE
from tests.harness import Server


def cli(env: dict[str, str], *args: str, code: int = 0, input: str | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = run_cli(env, *args, input=input, cwd=cwd)
    assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run(env: dict[str, str], *args: str, code: int = 0, input: str | None = None,
        cwd: Path | None = None) -> Ran:
    """The same command in this process (click's runner, same environment): for the many
    variations, once each command has been run as a subprocess."""
    environment: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    environment.update(env)
    with contextlib.chdir(cwd or Path.cwd()):
        result = CliRunner().invoke(main, list(args), input=input, env=environment,
                                    catch_exceptions=False)
    ran = Ran(result.exit_code, result.stdout, result.stderr, result.stdout_bytes)
    assert ran.returncode == code, (args, ran.returncode, ran.stdout, ran.stderr)
    return ran


@pytest.fixture
def env(sqlite_server: Server, tmp_path: Path) -> dict[str, str]:
    return client_env(sqlite_server, tmp_path / "home")


def all_commands() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            paths += [(name, sub) for sub in command.list_commands(ctx)]
        else:
            paths.append((name,))
    return paths


CLIENT_COMMANDS = {
    ("login",), ("logout",), ("repo", "create"), ("repo", "list"), ("repo", "get"),
    ("repo", "delete"), ("repo", "fork"), ("repo", "import"), ("token", "create"),
    ("token", "list"), ("token", "revoke"), ("log",), ("cat",), ("clone",),
    ("credential-helper", "setup"),
}


def test_every_command_has_help_with_examples() -> None:
    commands = set(all_commands())
    assert commands >= CLIENT_COMMANDS
    runner = CliRunner()
    for path in CLIENT_COMMANDS:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Examples:" in result.output, path
        assert f"artifactd {' '.join(path)}" in result.output, path
    top = runner.invoke(main, ["--help"])
    assert "[env: ARTIFACTD_NAMESPACE]" in top.output


def test_listings_and_results_have_json() -> None:
    runner = CliRunner()
    for path in [("repo", "list"), ("repo", "get"), ("repo", "create"), ("repo", "fork"),
                 ("repo", "import"), ("token", "list"), ("token", "create"), ("log",)]:
        assert "--json" in runner.invoke(main, [*path, "--help"]).output, path


def test_help_as_a_subprocess(env: dict[str, str]) -> None:
    result = cli(env, "repo", "create", "--help")
    assert "Usage: python -m artifactd repo create [OPTIONS] NAME" in result.stdout


def test_login_writes_a_private_file_and_logout_removes_it(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    for name in ("ARTIFACTD_URL", "ARTIFACTD_ACCOUNT_ID", "ARTIFACTD_API_TOKEN"):
        env.pop(name)
    cli(env, "repo", "list", code=3)  # not logged in
    args = ("login", "--url", sqlite_server.url, "--account-id", sqlite_server.account_id,
            "--api-token-stdin")
    wrong = cli(env, *args, input="artd_" + "0" * 40 + "\n", code=6)
    assert "Invalid API token" in wrong.stderr
    path = tmp_path / "home" / ".config" / "artifactd" / "client.toml"
    assert not path.exists()  # nothing saved on failure

    done = cli(env, "--namespace", "cli-login", *args, input=sqlite_server.token + "\n")
    assert str(path) in done.stderr and sqlite_server.token not in done.stderr + done.stdout
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert f'api_token = "{sqlite_server.token}"' in text and 'namespace = "cli-login"' in text
    run(env, "repo", "create", "from-login")
    listed = json.loads(cli(env, "repo", "list", "--json").stdout)
    assert [r["name"] for r in listed["repos"]] == ["from-login"]
    assert listed["repos"][0]["namespace"] == "cli-login"

    # The environment wins over the file.
    other = run({**env, "ARTIFACTD_NAMESPACE": "cli-login-env"}, "repo", "list", "--json").stdout
    assert json.loads(other)["repos"] == []

    run(env, "login", input="")  # logging in again reuses (and re-checks) the file's values
    cli(env, "logout")
    assert not path.exists()
    again = run(env, "logout")
    assert "Not logged in" in again.stderr


def test_login_from_environment(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home", ARTIFACTD_CLIENT_CONFIG=str(tmp_path / "c.toml"))
    run(env, "login")
    assert stat.S_IMODE((tmp_path / "c.toml").stat().st_mode) == 0o600
    bare = {k: v for k, v in env.items() if k not in ("ARTIFACTD_URL", "ARTIFACTD_API_TOKEN")}
    # The login file alone is enough (the shared server's namespace may hold many pages).
    listed = json.loads(run(bare, "repo", "list", "--json").stdout)
    assert isinstance(listed["repos"], list) and "cursor" in listed


def test_login_no_verify_and_setup_options(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home", ARTIFACTD_CLIENT_CONFIG=str(tmp_path / "c.toml"))
    down = closed_port_url()
    run(env, "login", "--url", down, "--no-verify")  # nothing is contacted
    assert f'url = "{down}"' in (tmp_path / "c.toml").read_text()
    run(env, "login", "--url", down, code=7)  # verified: the server is not there
    printed = run(env, "credential-helper", "setup", "--print", "--ttl", "120",
                  "--git-url", "https://acct.git.example.com/git/ns/repo.git").stdout
    assert "--add credential.https://acct.git.example.com.helper 'artifactd --ttl 120'" in printed
    gitconfig = tmp_path / "repo.gitconfig"
    run(env, "credential-helper", "setup", "--file", str(gitconfig), "--git-url", "http://h:1")
    text = gitconfig.read_text()
    assert '[credential "http://h:1"]' in text and "useHttpPath = true" in text
    assert '\thelper = \n\thelper = artifactd\n' in text
    run(env, "credential-helper", "setup", "--print", "--git-url", "ssh://x", code=2)


def test_login_without_terminal_names_what_is_missing(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    env.pop("ARTIFACTD_API_TOKEN")
    result = run(env, "login", code=2, input="")
    assert "--api-token-stdin" in result.stderr


def test_bad_config_files(sqlite_server: Server, tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    env = client_env(sqlite_server, tmp_path / "home", ARTIFACTD_CLIENT_CONFIG=str(config))
    config.write_text(f'url = "{sqlite_server.url}"\n')
    config.chmod(0o644)
    loose = cli(env, "repo", "list", code=3)
    assert "readable by other users (mode 0644)" in loose.stderr and f"chmod 600 {config}" in loose.stderr
    config.chmod(0o600)
    config.write_text('url = "unterminated\n')
    broken = run(env, "repo", "list", code=3)
    assert "is not valid TOML" in broken.stderr
    config.write_text('url = "x"\nwhatever = "y"\n')
    unknown = run(env, "repo", "list", code=3)
    assert "unknown key 'whatever'" in unknown.stderr
    # login replaces an unusable file
    config.write_text("= nope")
    config.chmod(0o644)
    run(env, "login")
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_repo_commands(env: dict[str, str], unique_name: str, sqlite_server: Server) -> None:
    created = cli(env, "repo", "create", unique_name, "--description", "CLI repo",
                  "--default-branch", "trunk")
    assert f"name:           {unique_name}" in created.stdout
    assert "remote:         " + sqlite_server.url in created.stdout
    assert "token:          art_v1_" in created.stdout
    assert "shown once" in created.stderr
    as_json = json.loads(run(env, "repo", "create", unique_name + "-2", "--read-only", "--json").stdout)
    assert as_json["name"] == unique_name + "-2" and as_json["token"].startswith("art_v1_")
    assert set(as_json) >= {"id", "namespace", "remote", "default_branch", "expires_at"}

    taken = run(env, "repo", "create", unique_name, code=5)
    assert taken.stderr.startswith("Error: A repo named") and "(code 10201)" in taken.stderr
    invalid = cli(env, "repo", "create", "bad name!", code=2)
    assert "(code 10101)" in invalid.stderr

    rows = cli(env, "repo", "list", "--search", unique_name, "--sort", "name", "--direction", "asc").stdout
    assert rows.splitlines() == [
        f"{unique_name}\tready\ttrunk\t\tCLI repo",
        f"{unique_name}-2\tready\tmain\t\t",
    ]
    page = run(env, "repo", "list", "--search", unique_name, "--limit", "1")
    assert len(page.stdout.splitlines()) == 1 and "More repos: --cursor " in page.stderr
    listed = json.loads(run(env, "repo", "list", "--search", unique_name, "--all", "--limit", "1",
                            "--json").stdout)
    assert sorted(r["name"] for r in listed["repos"]) == [unique_name, unique_name + "-2"]
    assert listed["cursor"] is None

    got = cli(env, "repo", "get", unique_name).stdout
    assert "status:         ready" in got and "description:    CLI repo" in got
    assert json.loads(run(env, "repo", "get", unique_name, "--json").stdout)["default_branch"] == "trunk"
    missing = cli(env, "repo", "get", unique_name + "-nope", code=4)
    assert "not found" in missing.stderr

    refused = run(env, "repo", "delete", unique_name, code=2, input="")
    assert "not deleted" in refused.stderr
    cli(env, "repo", "delete", unique_name, input="y\n")
    run(env, "repo", "delete", unique_name + "-2", "--yes")
    gone = run(env, "repo", "delete", unique_name, "--yes", code=4)
    assert "not found" in gone.stderr


def test_namespace_option_and_environment(env: dict[str, str], unique_name: str) -> None:
    run(env, "--namespace", "cli-ns", "repo", "create", unique_name)
    got = json.loads(run(env, "-n", "cli-ns", "repo", "get", unique_name, "--json").stdout)
    assert got["namespace"] == "cli-ns"
    run({**env, "ARTIFACTD_NAMESPACE": "cli-ns"}, "repo", "get", unique_name)
    run(env, "repo", "get", unique_name, code=4)


def test_token_commands(env: dict[str, str], unique_name: str) -> None:
    run(env, "repo", "create", unique_name)
    minted = cli(env, "token", "create", unique_name, "--scope", "read", "--ttl", "3600")
    plaintext = minted.stdout.strip()
    assert plaintext.startswith("art_v1_") and "?expires=" in plaintext and "\n" not in plaintext
    assert "read, expires" in minted.stderr
    as_json = json.loads(run(env, "token", "create", unique_name, "--json").stdout)
    assert as_json["scope"] == "write" and as_json["plaintext"].startswith("art_v1_")
    run(env, "token", "create", unique_name, "--ttl", "5", code=2)  # below the minimum

    tokens = json.loads(cli(env, "token", "list", unique_name, "--json").stdout)
    assert len(tokens) == 3 and all("plaintext" not in t for t in tokens)
    table = run(env, "token", "list", unique_name).stdout
    assert len(table.splitlines()) == 3 and as_json["id"] in table
    assert plaintext not in table

    cli(env, "token", "revoke", as_json["id"])
    again = run(env, "token", "revoke", as_json["id"], code=4)
    assert "already revoked" in again.stderr
    revoked = json.loads(run(env, "token", "list", unique_name, "--state", "revoked", "--json").stdout)
    assert [t["id"] for t in revoked] == [as_json["id"]]
    run(env, "token", "list", unique_name + "-nope", code=4)


def test_log_and_cat(env: dict[str, str], unique_name: str, tmp_path: Path) -> None:
    created = json.loads(run(env, "repo", "create", unique_name, "--json").stdout)
    first = push_files(tmp_path / "git", created["remote"], created["token"],
                       {"README.md": "# readme\n", "bin.dat": bytes(range(256))}, "First commit")
    table = cli(env, "log", unique_name).stdout
    assert table.splitlines() == [f"{first}\t2026-01-01 00:00\tTest Author\tFirst commit"]  # whole when piped
    commits = json.loads(run(env, "log", unique_name, "--json", "-n", "1").stdout)
    assert commits[0]["sha"] == first and commits[0]["message"].startswith("First commit")
    assert cli(env, "cat", unique_name, "README.md").stdout == "# readme\n"
    binary = run(env, "cat", unique_name, "bin.dat", "--ref", first)
    assert binary.stdout_bytes == bytes(range(256))
    missing = run(env, "cat", unique_name, "nope.txt", code=4)
    assert "(code 10200)" in missing.stderr
    run(env, "log", unique_name, "--ref", "no-such-branch", code=4)


def test_fork_and_import(import_server: Server, tmp_path: Path, unique_name: str) -> None:
    env = client_env(import_server, tmp_path / "home")
    root = tmp_path / "sources"
    make_source_repo(tmp_path / "git", root, "upstream", {"README.md": "imported\n"})
    with git_source(root) as url:
        imported = cli(env, "repo", "import", f"{url}/upstream.git", unique_name, "--branch", "main")
        assert f"Importing {url}/upstream.git into {unique_name}..." in imported.stderr
        assert f"name:           {unique_name}" in imported.stdout
        assert "Imported repo" in imported.stderr
        assert run(env, "cat", unique_name, "README.md").stdout == "imported\n"
        started = json.loads(run(env, "repo", "import", f"{url}/upstream.git", unique_name + "-bg",
                                 "--no-wait", "--json").stdout)
        assert started["name"] == unique_name + "-bg"
    with git_source(root, fail_fetch=True) as url:
        failed = cli(env, "repo", "import", f"{url}/upstream.git", unique_name + "-bad", code=8)
        assert f"Import of '{unique_name}-bad' failed" in failed.stderr
    refused = run(env, "repo", "import", "ftp://example.com/x.git", unique_name + "-ftp", code=2)
    assert "(code 11090)" in refused.stderr

    forked = json.loads(cli(env, "repo", "fork", unique_name, unique_name + "-fork",
                            "--default-branch-only", "--description", "copy", "--json").stdout)
    assert forked["name"] == unique_name + "-fork" and forked["objects"] > 0
    assert run(env, "cat", unique_name + "-fork", "README.md").stdout == "imported\n"
    human = run(env, "repo", "fork", unique_name, unique_name + "-fork2", "--read-only")
    assert "objects:" in human.stdout and "Forked repo" in human.stderr
    run(env, "repo", "fork", unique_name, unique_name + "-fork", code=5)
    run(env, "repo", "fork", unique_name + "-nope", unique_name + "-x", code=4)


def test_clone(env: dict[str, str], unique_name: str, tmp_path: Path, sqlite_server: Server) -> None:
    created = json.loads(run(env, "--namespace", "cli-clone", "repo", "create", unique_name, "--json").stdout)
    push_files(tmp_path / "git", created["remote"], created["token"], {"README.md": "clone me\n"})
    target = tmp_path / "checkout"
    done = cli(env, "clone", f"cli-clone/{unique_name}", str(target))
    assert (target / "README.md").read_text() == "clone me\n"
    assert f"Cloned cli-clone/{unique_name} into {target}" in done.stderr
    config = (target / ".git" / "config").read_text()
    assert "art_v1_" not in config and "extraHeader" not in config and "Authorization" not in config
    assert created["remote"] in config
    tokens = json.loads(run(env, "-n", "cli-clone", "token", "list", unique_name, "--state", "all",
                            "--json").stdout)
    clone_tokens = [t for t in tokens if t["scope"] == "read"]
    assert len(clone_tokens) == 1 and clone_tokens[0]["state"] == "revoked"  # revoked after use

    # Into the current directory's REPO name, with the global namespace option.
    work = tmp_path / "cwd"
    work.mkdir()
    run(env, "-n", "cli-clone", "clone", unique_name, "--depth", "1", cwd=work)
    assert (work / unique_name / "README.md").exists()

    # A non-empty target: refused before a token is minted.
    busy = cli(env, "clone", f"cli-clone/{unique_name}", str(target), code=5)
    assert "already exists and is not an empty directory" in busy.stderr
    after = json.loads(run(env, "-n", "cli-clone", "token", "list", unique_name, "--state", "all",
                           "--json").stdout)
    assert len(after) == len(tokens) + 1  # only the --depth clone's token was added
    missing = run(env, "clone", f"cli-clone/{unique_name}-nope", str(tmp_path / "x"), code=4)
    assert "not found" in missing.stderr and not (tmp_path / "x").exists()
    run(env, "clone", "a/b/c", code=2)


@pytest.mark.parametrize("case", ["refused", "wrong-token", "proxy-502", "timeout", "read-only-token"])
def test_bad_input_exits_cleanly(case: str, sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    if case == "refused":
        env["ARTIFACTD_URL"] = closed_port_url()
        result = cli(env, "repo", "list", code=7)
        assert f"Cannot connect to {env['ARTIFACTD_URL']} (connection refused)" in result.stderr
    elif case == "wrong-token":
        env["ARTIFACTD_API_TOKEN"] = "artd_" + "0" * 40
        result = cli(env, "repo", "get", "x", code=6)
        assert result.stderr == "Error: Invalid API token (code 11011)\n"
    elif case == "proxy-502":
        with proxy_502() as url:
            env["ARTIFACTD_URL"] = url
            result = cli(env, "repo", "create", "x", code=7)
        assert "answered HTTP 502 with text/html ('502 Bad Gateway')" in result.stderr
    elif case == "timeout":
        with silent_server() as url:
            env.update(ARTIFACTD_URL=url, ARTIFACTD_TIMEOUT="0.5")
            result = cli(env, "repo", "list", code=7)
        assert f"No answer from {url} within 0.5 s" in result.stderr
    else:
        env["ARTIFACTD_API_TOKEN"] = sqlite_server.read_token
        result = cli(env, "repo", "create", "x", code=6)
        assert "(code 11012)" in result.stderr
    assert result.stdout == ""
    assert env["ARTIFACTD_API_TOKEN"] not in result.stderr


def test_exit_codes_are_documented() -> None:
    from artifactd.cli._app import ExitCode
    text = (Path(__file__).resolve().parent.parent / "docs" / "sdk.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in text, code


def test_clone_header_goes_through_git_config_variables() -> None:
    # `clone` hands the header to git like `-c`, but in GIT_CONFIG_* variables: argv is public.
    from artifactd.cli.clone import command_config_env
    result = command_config_env({"GIT_CONFIG_COUNT": "1"}, "http.extraHeader", "Authorization: Bearer t")
    assert result["GIT_CONFIG_COUNT"] == "2"
    assert result["GIT_CONFIG_KEY_1"] == "http.extraHeader"
    assert result["GIT_CONFIG_VALUE_1"] == "Authorization: Bearer t"


def test_rate_limited_exits_7(import_server: Server, tmp_path: Path, unique_name: str) -> None:
    env = client_env(import_server, tmp_path / "home", ARTIFACTD_NAMESPACE=unique_name)
    with Artifacts(import_server.url, import_server.account_id, import_server.token,
                   namespace=unique_name) as client, contextlib.suppress(RateLimited):
        for _ in range(2 * IMPORT_SERVER_RATE):
            client.list(limit=1)
    limited = cli(env, "repo", "list", code=7)
    assert "(code 11060)" in limited.stderr and limited.stdout == ""
