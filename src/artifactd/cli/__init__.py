"""The ``artifactd`` command: ``serve``, offline admin commands, and client commands.

Subcommands are imported when used: the client commands and the git credential helper start
without loading the server (uvicorn, SQLAlchemy, Alembic), which would triple their start-up.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from artifactd import __version__
from artifactd.cli._app import Application, run_guarded

COMMANDS = {
    "serve": "artifactd.cli.serve:serve",
    "api-token": "artifactd.cli.api_token:api_token",
    "migrate": "artifactd.cli.migrate:migrate",
    "backup": "artifactd.cli.backup:backup",
    "restore": "artifactd.cli.backup:restore",
    "login": "artifactd.cli.login:login",
    "logout": "artifactd.cli.login:logout",
    "repo": "artifactd.cli.repo:repo",
    "token": "artifactd.cli.token:token",
    "log": "artifactd.cli.content:log",
    "cat": "artifactd.cli.content:cat",
    "compare": "artifactd.cli.reads:compare",
    "archive": "artifactd.cli.reads:archive",
    "commit": "artifactd.cli.writes:commit",
    "merge": "artifactd.cli.writes:merge",
    "clone": "artifactd.cli.clone:clone",
    "credential-helper": "artifactd.cli.credential:credential_helper",
    "whoami": "artifactd.cli.whoami:whoami",
    "mount": "artifactd.cli.mount:mount",
    "unmount": "artifactd.cli.mount:unmount",
    "subscription": "artifactd.cli.events:subscription",
    "events": "artifactd.cli.events:events",
}


class RootGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        return run_guarded(ctx, lambda: super(RootGroup, self).invoke(ctx))


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="artifactd")
@click.option(
    "-n", "--namespace", metavar="NAME", default=None,
    help="Namespace of the client commands (default: `default`, or the login file's). "
         "[env: ARTIFACTD_NAMESPACE]",
)
@click.pass_context
def main(ctx: click.Context, namespace: str | None) -> None:
    """artifactd: self-hosted, Git-compatible versioned storage.

    Start a server with `artifactd serve`, create an API token with
    `artifactd api-token create`, then use the REST API, git, or the client commands
    (`artifactd login`, `repo`, `token`, `clone`, ...). Client settings come from
    `artifactd login` or ARTIFACTD_URL, ARTIFACTD_ACCOUNT_ID and ARTIFACTD_API_TOKEN;
    `artifactd whoami` checks them. Requests are retried on 429, 503 and connection errors
    (ARTIFACTD_RETRIES, default 3; 0 for none). Shell completion: docs/cli.md.
    """
    ctx.obj = Application(namespace=namespace)
