"""CLI polish: whoami, --json on every command, values never cut, shell completion, import phases."""

from __future__ import annotations

import base64
import json
import os
import pty
import re
import select
import subprocess
from pathlib import Path

import click
import pytest

from artifactd import Artifacts, AsyncArtifacts
from artifactd.cli import COMMANDS, main
from tests.clientutil import SCRIPTS, client_env, git_source, make_source_repo, push_files, run_cli
from tests.harness import Server
from tests.test_cli import run  # in-process, for the many variations

NOT_JSON = {"serve"}  # a long-running server, not a command with a result


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def leaf_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    context = click.Context(main)

    def walk(prefix: str, command: click.Command) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(context):
                sub = command.get_command(context, name)
                assert sub is not None
                walk(f"{prefix} {name}".strip(), sub)
        else:
            found.append((prefix, command))

    walk("", main)
    return found


def test_every_command_takes_json() -> None:
    commands = leaf_commands()
    assert {name.split()[0] for name, _ in commands} == set(COMMANDS)
    missing = [name for name, command in commands if name not in NOT_JSON
               and not any("--json" in param.opts for param in command.params if isinstance(param, click.Option))]
    assert missing == []


def test_every_json_shape_is_documented() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for name, _ in leaf_commands():
        if name not in NOT_JSON:
            assert f"`artifactd {name} --json`" in text, name


def test_whoami(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    human = ok(run_cli(env, "whoami")).stdout
    assert f"account_id:  {sqlite_server.account_id}" in human and "permission:  edit" in human
    shown = json.loads(run(env, "whoami", "--json").stdout)
    assert shown["account_id"] == sqlite_server.account_id and shown["permission"] == "edit"
    assert re.fullmatch(r"[0-9a-f]{16}", shown["token_id"]) and shown["config_file"] is None
    assert sqlite_server.token not in human + json.dumps(shown)
    reader = json.loads(run({**env, "ARTIFACTD_API_TOKEN": sqlite_server.read_token}, "whoami", "--json").stdout)
    assert reader["permission"] == "read" and reader["token_id"] != shown["token_id"]
    wrong = run({**env, "ARTIFACTD_API_TOKEN": "artd_" + "0" * 40}, "whoami", code=6)
    assert wrong.stdout == ""
    run({**env, "ARTIFACTD_ACCOUNT_ID": "f" * 32}, "whoami", code=6)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_sdk_whoami(sqlite_server: Server, anyio_backend: str) -> None:
    with Artifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.read_token) as client:
        assert client.whoami()["permission"] == "read"
    async with AsyncArtifacts(sqlite_server.url, sqlite_server.account_id, sqlite_server.token) as aclient:
        identity = await aclient.whoami()
    assert identity["account_id"] == sqlite_server.account_id and identity["permission"] == "edit"


def test_new_json_outputs(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    env = client_env(sqlite_server, tmp_path / "home", ARTIFACTD_NAMESPACE=unique_name)
    created = json.loads(run(env, "repo", "create", unique_name, "--json").stdout)
    push_files(tmp_path / "git", created["remote"], created["token"], {"a.bin": b"\x00\xffdata"})
    cat = json.loads(run(env, "cat", unique_name, "a.bin", "--json").stdout)
    assert cat == {"repo": unique_name, "path": "a.bin", "ref": None, "size": 6,
                   "content_base64": base64.b64encode(b"\x00\xffdata").decode()}
    cloned = json.loads(ok(run_cli(env, "clone", unique_name, str(tmp_path / "c"), "--json")).stdout)
    assert cloned == {"namespace": unique_name, "repo": unique_name, "directory": str(tmp_path / "c"),
                      "remote": created["remote"]}
    minted = json.loads(run(env, "token", "create", unique_name, "--json").stdout)
    revoked = json.loads(run(env, "token", "revoke", minted["id"], "--json").stdout)
    assert revoked == {"id": minted["id"], "namespace": unique_name, "revoked": True}
    setup = json.loads(run(env, "credential-helper", "setup", "--print", "--json").stdout)
    assert setup["origin"] == sqlite_server.url and setup["written"] is False
    assert setup["commands"][-1][-2:] == [f"credential.{sqlite_server.url}.useHttpPath", "true"]
    deleted = json.loads(run(env, "repo", "delete", unique_name, "--yes", "--json").stdout)
    assert deleted == {"name": unique_name, "namespace": unique_name, "deleted": True}
    login = json.loads(run(env, "login", "--json").stdout)
    assert login["account_id"] == sqlite_server.account_id and sqlite_server.token not in json.dumps(login)
    assert json.loads(run(env, "logout", "--json").stdout)["removed"] is True
    assert json.loads(run(env, "logout", "--json").stdout)["removed"] is False
    api = json.loads(run(env, "api-token", "create", "--data-dir", str(sqlite_server.data_dir),
                                "--json").stdout)
    gone = json.loads(run(env, "api-token", "revoke", api["id"], "--data-dir",
                                 str(sqlite_server.data_dir), "--json").stdout)
    assert gone == {"id": api["id"], "state": "revoked"}


def in_terminal(env: dict[str, str], *args: str, columns: int) -> str:
    """Run the CLI on a pseudo-terminal ``columns`` wide; its output without colour codes."""
    controller, terminal = pty.openpty()
    env = {**env, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm", "NO_COLOR": "1"}
    process = subprocess.Popen([os.path.join(SCRIPTS, "artifactd"), *args], stdin=terminal,
                               stdout=terminal, stderr=subprocess.DEVNULL, env=env)
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=30) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")


def test_values_are_never_cut(sqlite_server: Server, tmp_path: Path, unique_name: str) -> None:
    env = client_env(sqlite_server, tmp_path / "home", ARTIFACTD_NAMESPACE=unique_name)
    name = (unique_name + "-a-rather-long-repo-name-to-fit")[:64]
    created = json.loads(run(env, "repo", "create", name, "--description", "words " * 12, "--json").stdout)
    sha = push_files(tmp_path / "git", created["remote"], created["token"], {"a.txt": "a\n"})
    token_ids = [json.loads(run(env, "token", "create", name, "--json").stdout)["id"] for _ in range(2)]
    piped = ok(run_cli({**env, "COLUMNS": "20"}, "token", "list", name)).stdout
    assert all(token_id in piped for token_id in token_ids) and "…" not in piped
    narrow = in_terminal(env, "token", "list", name, columns=30)
    assert "ID" in narrow and "…" not in narrow
    assert all(token_id in narrow.replace("\n", "") for token_id in token_ids)
    listing = in_terminal(env, "repo", "list", columns=40)
    assert "…" not in listing and name in listing.replace("\n", "")
    logged = ok(run_cli({**env, "COLUMNS": "20"}, "log", name)).stdout
    assert logged.split("\t")[0] == sha  # whole, for scripts
    assert sha[:12] in in_terminal(env, "log", name, columns=30)  # short, for people, as git log


def test_shell_completion(sqlite_server: Server, tmp_path: Path) -> None:
    env = client_env(sqlite_server, tmp_path / "home")
    script = os.path.join(SCRIPTS, "artifactd")
    source = subprocess.run([script], env={**env, "_ARTIFACTD_COMPLETE": "bash_source"},
                            capture_output=True, text=True, timeout=30)
    assert source.returncode == 0 and "_artifactd_completion" in source.stdout
    words = subprocess.run([script], env={**env, "_ARTIFACTD_COMPLETE": "bash_complete",
                                          "COMP_WORDS": "artifactd wh", "COMP_CWORD": "1"},
                           capture_output=True, text=True, timeout=30)
    assert "plain,whoami" in words.stdout.splitlines()
    sub = subprocess.run([script], env={**env, "_ARTIFACTD_COMPLETE": "bash_complete",
                                        "COMP_WORDS": "artifactd repo imp", "COMP_CWORD": "2"},
                         capture_output=True, text=True, timeout=30)
    assert "plain,import" in sub.stdout.splitlines()


def test_import_shows_its_phases(import_server: Server, tmp_path: Path, unique_name: str) -> None:
    env = client_env(import_server, tmp_path / "home")
    root = tmp_path / "sources"
    make_source_repo(tmp_path / "git", root, "upstream", {"README.md": "imported\n"})
    with git_source(root, delay=1.0) as url:  # slow enough to be seen importing
        done = ok(run_cli(env, "repo", "import", f"{url}/upstream.git", unique_name))
    size = Artifacts(import_server.url, import_server.account_id, import_server.token).info(unique_name).size
    assert re.search(rf"import: ready after \d+\.\d s, {size} bytes", done.stderr), done.stderr
    phases = re.findall(r"^import: (\w+)", done.stderr, re.M)
    assert phases[0] == "importing" and phases[-1] == "ready" and set(phases) == {"importing", "ready"}
