"""``artifactd login`` and ``artifactd logout``: the client's saved server and API token."""

from __future__ import annotations

import sys

import click

from artifactd.cli import _config
from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.client import Artifacts


@click.command()
@click.option("--url", default=None, help="Server URL, e.g. http://127.0.0.1:8787. [env: ARTIFACTD_URL]")
@click.option("--account-id", default=None, help="Account id (32 hex). [env: ARTIFACTD_ACCOUNT_ID]")
@click.option(
    "--api-token", default=None,
    help="API token (artd_...). Prefer --api-token-stdin or the prompt: options show in `ps`. "
         "[env: ARTIFACTD_API_TOKEN]",
)
@click.option("--api-token-stdin", is_flag=True, help="Read the API token from the first line of stdin.")
@click.option("--no-verify", is_flag=True, help="Save without checking the token against the server.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"url", "account_id", "namespace", "config_file"} (never the token).')
@pass_app
def login(
    app: Application, url: str | None, account_id: str | None, api_token: str | None,
    api_token_stdin: bool, no_verify: bool, as_json: bool,
) -> None:
    """Save the server URL, account id and API token for the client commands.

    Values not given as options come from the ARTIFACTD_* environment, then from the
    current config file, then from a prompt. The token is checked against the server,
    then written to ~/.config/artifactd/client.toml (or $ARTIFACTD_CLIENT_CONFIG) with
    mode 0600.

    \b
    Examples:
      artifactd login --url http://127.0.0.1:8787 --account-id 0123...cdef
      echo "$TOKEN" | artifactd login --url http://127.0.0.1:8787 --account-id ID --api-token-stdin
      ARTIFACTD_URL=... ARTIFACTD_ACCOUNT_ID=... ARTIFACTD_API_TOKEN=... artifactd login
    """
    if api_token_stdin:
        api_token = sys.stdin.readline().strip()
        if not api_token:
            app.abort("--api-token-stdin: stdin is empty", ExitCode.USAGE)
    try:
        current = _config.load(namespace=app.namespace_option)
    except _config.ConfigFileError as exc:
        app.display_warning(f"{exc}; login replaces it")
        current = _config.load(namespace=app.namespace_option, use_file=False)
    url = url or current.url
    account_id = account_id or current.account_id
    api_token = api_token or current.api_token
    interactive = sys.stdin.isatty()
    if not (url and account_id and api_token) and not interactive:
        missing = [n for n, v in (("--url", url), ("--account-id", account_id),
                                  ("--api-token-stdin", api_token)) if not v]
        app.abort(f"missing {', '.join(missing)} (stdin is not a terminal, so no prompt)", ExitCode.USAGE)
    url = url or click.prompt("Server URL", default="http://127.0.0.1:8787")
    account_id = account_id or click.prompt("Account id")
    api_token = api_token or click.prompt("API token", hide_input=True)
    if not no_verify:
        with Artifacts(
            url, account_id, api_token, current.namespace or None, timeout=current.timeout
        ) as client:
            client.list(limit=1)  # any error (wrong token, wrong URL) aborts before saving
    path = _config.config_path()
    values = {"url": url, "account_id": account_id, "api_token": api_token}
    if app.namespace_option:
        values["namespace"] = app.namespace_option
    try:
        _config.write_file(path, values)
    except OSError as exc:
        app.abort(f"cannot write {path}: {exc.strerror or exc}", ExitCode.CONFIG)
    if as_json:
        app.display_json({"url": url, "account_id": account_id, "namespace": values.get("namespace"),
                          "config_file": str(path)})
        return
    app.display_success(f"Logged in to {url} as account {account_id}; saved to {path} (mode 0600).")


@click.command()
@click.option("--json", "as_json", is_flag=True, help='Print JSON: {"config_file", "removed": bool}.')
@pass_app
def logout(app: Application, as_json: bool) -> None:
    """Delete the saved config file (the API token itself stays valid: revoke it on the server).

    \b
    Examples:
      artifactd logout
    """
    path = _config.config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        if as_json:
            app.display_json({"config_file": str(path), "removed": False})
            return
        app.display_info(f"Not logged in ({path} does not exist).")
        return
    if as_json:
        app.display_json({"config_file": str(path), "removed": True})
        return
    app.display_success(f"Removed {path}.")
