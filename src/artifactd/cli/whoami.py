"""``artifactd whoami``: which server, account and API token the client commands use."""

from __future__ import annotations

import click

from artifactd.cli._app import Application, pass_app
from artifactd.client._core import redacted_url

JSON_HELP = 'Print JSON: {"url", "account_id", "token_id", "permission", "namespace", "config_file"}.'


@click.command()
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def whoami(app: Application, as_json: bool) -> None:
    """Show the account and permission of the configured API token (asks the server).

    \b
    Examples:
      artifactd whoami
      artifactd whoami --json | jq -r .permission
    """
    identity = app.client.whoami()
    settings = app.settings
    shown = {
        "url": redacted_url(app.client.base_url),
        "account_id": identity.get("account_id"),
        "token_id": identity.get("token_id"),
        "permission": identity.get("permission"),
        "namespace": app.namespace,
        "config_file": str(settings.path) if settings.path else None,
    }
    if as_json:
        app.display_json(shown)
        return
    app.display_pairs([(key, value if value is not None else "(environment only)" if key == "config_file"
                        else "") for key, value in shown.items()])
