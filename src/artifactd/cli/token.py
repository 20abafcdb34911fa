"""``artifactd token``: repo tokens (the git credentials), not API tokens (``artifactd api-token``)."""

from __future__ import annotations

import click

from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.cli.repo import JSON_HELP, when
from artifactd.client import TokenInfo


@click.group()
def token() -> None:
    """Mint, list and revoke repo tokens: the credentials git uses.

    Not to be confused with `artifactd api-token`, the server admin command for the API
    tokens that the client itself authenticates with.
    """


@token.command()
@click.argument("repo")
@click.option("--scope", type=click.Choice(["read", "write"]), default="write", show_default=True,
              help="read: clone and fetch; write: also push.")
@click.option("--ttl", type=click.IntRange(60, 31_536_000), default=None, metavar="SECONDS",
              help="Lifetime in seconds, 60 to 31536000 (default 86400).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def create(app: Application, repo: str, scope: str, ttl: int | None, as_json: bool) -> None:
    """Mint a token for REPO and print it (only the token on stdout, details on stderr).

    \b
    Examples:
      artifactd token create starter-repo --scope read --ttl 3600
      TOKEN=$(artifactd token create starter-repo --ttl 600)
      git -c http.extraHeader="Authorization: Bearer $TOKEN" clone REMOTE
    """
    minted = app.client.get(repo).create_token(scope, ttl)
    if as_json:
        app.display_json(minted.to_json())
        return
    click.echo(minted.plaintext)
    app.display_info(f"token {minted.id}: {minted.scope}, expires {when(minted.expires_at)}")


@token.command("list")
@click.argument("repo")
@click.option("--state", type=click.Choice(["active", "expired", "revoked", "all"]), default="active",
              show_default=True, help="Which tokens to list.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " (a list of tokens)")
@pass_app
def list_(app: Application, repo: str, state: str, as_json: bool) -> None:
    """List REPO's tokens (ids, scopes, states; never the secrets).

    \b
    Examples:
      artifactd token list starter-repo
      artifactd token list starter-repo --state all --json
    """
    handle = app.client.get(repo)
    tokens: list[TokenInfo] = []
    page = 1
    while True:
        result = handle.list_tokens(state=state, page=page, per_page=100)
        tokens.extend(result.tokens)
        if page >= result.total_pages or not result.tokens:
            break
        page += 1
    if as_json:
        app.display_json([t.to_json() for t in tokens])
        return
    app.display_table(
        ["ID", "SCOPE", "STATE", "CREATED", "EXPIRES"],
        [[t.id, t.scope, t.state, when(t.created_at), when(t.expires_at)] for t in tokens],
    )


@token.command()
@click.argument("token_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + ' {"id", "namespace", "revoked": true}')
@pass_app
def revoke(app: Application, token_id: str, as_json: bool) -> None:
    """Revoke a repo token of the namespace by its id; git refuses it on the next request.

    \b
    Examples:
      artifactd token revoke 0123456789abcdef
      artifactd --namespace agents token revoke 0123456789abcdef
    """
    if not app.client.revoke_token(token_id):
        app.abort(
            f"No active token {token_id!r} in namespace {app.namespace!r} (unknown or already revoked)",
            ExitCode.NOT_FOUND,
        )
    if as_json:
        app.display_json({"id": token_id, "namespace": app.namespace, "revoked": True})
        return
    app.display_success(f"Revoked token {token_id}.")
