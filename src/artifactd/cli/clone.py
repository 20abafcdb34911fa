"""``artifactd clone``: clone a repo with a token minted for this clone only."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.client import ArtifactsError

CLONE_TTL = 600  # seconds: long enough to start any clone; the token is revoked right after


def command_config_env(base: Mapping[str, str], key: str, value: str) -> dict[str, str]:
    """Git configuration for one command through ``GIT_CONFIG_COUNT`` (git >= 2.31).

    It has the scope of ``git -c key=value`` (nothing is written to ``.git/config``) but stays
    out of the argument list, which every local user can read in ``ps``.
    """
    env = dict(base)
    index = int(env.get("GIT_CONFIG_COUNT") or 0)
    env[f"GIT_CONFIG_KEY_{index}"] = key
    env[f"GIT_CONFIG_VALUE_{index}"] = value
    env["GIT_CONFIG_COUNT"] = str(index + 1)
    return env


def split_target(target: str, default_namespace: str) -> tuple[str, str]:
    namespace, sep, name = target.rpartition("/")
    if not sep:
        return default_namespace, name
    if not namespace or not name or "/" in namespace:
        raise click.BadParameter("use NAMESPACE/REPO or REPO", param_hint="TARGET")
    return namespace, name


@click.command()
@click.argument("target", metavar="[NAMESPACE/]REPO")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--scope", type=click.Choice(["read", "write"]), default="read", show_default=True,
              help="Scope of the token minted for the clone.")
@click.option("--ttl", type=click.IntRange(60, 86_400), default=CLONE_TTL, show_default=True,
              metavar="SECONDS", help="Lifetime of that token.")
@click.option("-b", "--branch", default=None, help="Check out this branch instead of the default.")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="Shallow clone depth.")
@click.option("--filter", "filter_spec", default=None, metavar="SPEC",
              help="Partial clone filter, e.g. blob:none (later fetches need the credential helper).")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"namespace", "repo", "directory", "remote"}; git prints to stderr.')
@pass_app
def clone(
    app: Application, target: str, directory: Path | None, scope: str, ttl: int, branch: str | None,
    depth: int | None, filter_spec: str | None, as_json: bool,
) -> None:
    """Clone NAMESPACE/REPO into DIRECTORY (default: the repo's name).

    A token is minted for this clone, handed to git as an `http.extraHeader` for this one
    command (never written to .git/config), and revoked when git is done. The clone's
    remote is the plain URL: for later fetches and pushes, set up the credential helper
    (`artifactd credential-helper setup`).

    \b
    Examples:
      artifactd clone default/starter-repo
      artifactd clone agents/task-42 work --depth 1
      artifactd clone starter-repo --filter blob:none
    """
    namespace, name = split_target(target, app.namespace)
    destination = directory or Path(name)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        app.abort(f"destination path '{destination}' already exists and is not an empty directory",
                  ExitCode.CONFLICT)
    git = shutil.which("git")
    if git is None:
        app.abort("git is not installed (or not on PATH)", ExitCode.ERROR)
    handle = app.client.with_namespace(namespace).get(name)
    minted = handle.create_token(scope, ttl)
    argv = [git, "clone"]
    if branch:
        argv += ["--branch", branch]
    if depth:
        argv += ["--depth", str(depth)]
    if filter_spec:
        argv += [f"--filter={filter_spec}"]
    argv += ["--", handle.remote, str(destination)]
    env = command_config_env(os.environ, "http.extraHeader", f"Authorization: Bearer {minted.plaintext}")
    env["GIT_TERMINAL_PROMPT"] = "0"  # a refused token must fail, not prompt for a password
    try:
        # With --json, stdout is the JSON document alone: git's own output goes to stderr.
        returncode = subprocess.run(argv, env=env, check=False,
                                    stdout=sys.stderr if as_json else None).returncode
    finally:
        with contextlib.suppress(ArtifactsError):
            handle.revoke_token(minted.id)
    if returncode != 0:
        app.abort(f"git clone failed (exit status {returncode})", ExitCode.ERROR)
    if as_json:
        app.display_json({"namespace": namespace, "repo": name, "directory": str(destination),
                          "remote": handle.remote})
        return
    app.display_success(f"Cloned {namespace}/{name} into {destination}.")
