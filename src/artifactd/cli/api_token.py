"""``artifactd api-token``: offline admin commands for control-plane API tokens."""

from __future__ import annotations

import json

import click
from rich.console import Console

from artifactd.cli._app import print_table
from artifactd.cli.server_options import init_option, open_admin_backend, server_options
from artifactd.errors import ArtifactdError
from artifactd.services.access import accounts
from artifactd.services.clock import iso


@click.group("api-token")
def api_token() -> None:
    """Create, list and revoke API tokens (works on the data dir, also while serving)."""


@api_token.command("create")
@server_options
@init_option
@click.option("--account", default=None, help="Account id (32 hex). Default: the data dir's default account.")
@click.option("--permission", type=click.Choice(["read", "edit"]), default="edit", show_default=True)
@click.option("--name", default=None, help="A label to recognise the token by.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: account_id, id, token, permission.")
def create(
    config_file: str | None, data_dir: str | None, database_url: str | None, init: bool,
    account: str | None, permission: str, name: str | None, as_json: bool,
) -> None:
    """Create an API token and print it once.

    \b
    Examples:
      artifactd api-token create
      artifactd api-token create --permission read --json
      artifactd api-token create --init --data-dir /var/lib/artifactd   # before the first serve
    """
    backend = open_admin_backend(config_file, data_dir, database_url, init)
    try:
        row, token = accounts.create_api_token(backend, account, permission, name)
    except ArtifactdError as exc:
        raise click.UsageError(exc.message) from exc
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps({
            "account_id": row.account_id, "id": row.id, "token": token,
            "permission": row.permission,
        }))
        return
    click.echo(f"account_id: {row.account_id}")
    click.echo(f"id:         {row.id}")
    click.echo(f"permission: {row.permission}")
    click.echo(f"token:      {token}")
    click.echo("Store the token now: it is not shown again.", err=True)


@api_token.command("list")
@server_options
@click.option("--account", default=None, help="Only this account's tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(
    config_file: str | None, data_dir: str | None, database_url: str | None,
    account: str | None, as_json: bool,
) -> None:
    """List API tokens (never their secrets)."""
    backend = open_admin_backend(config_file, data_dir, database_url, init=False)
    try:
        rows = backend.meta.list_api_tokens(account)
    finally:
        backend.close()
    items = [{
        "id": r.id, "account_id": r.account_id, "permission": r.permission, "name": r.name,
        "created_at": iso(r.created_us), "revoked_at": iso(r.revoked_us),
        "state": "revoked" if r.revoked_us else "active",
    } for r in rows]
    if as_json:
        click.echo(json.dumps(items))
        return
    print_table(
        Console(highlight=False), ["ID", "ACCOUNT", "PERMISSION", "STATE", "CREATED", "NAME"],
        [[item["id"], item["account_id"], item["permission"], item["state"], item["created_at"],
          item["name"]] for item in items],
    )


@api_token.command("revoke")
@server_options
@click.argument("token_id")
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"id", "state": "revoked"}.')
def revoke(
    config_file: str | None, data_dir: str | None, database_url: str | None, token_id: str, as_json: bool,
) -> None:
    """Revoke an API token by id; it stops working on the next request."""
    backend = open_admin_backend(config_file, data_dir, database_url, init=False)
    try:
        accounts.revoke_api_token(backend, token_id)
    except ArtifactdError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps({"id": token_id, "state": "revoked"}))
        return
    click.echo(f"revoked {token_id}")
