"""The ``artifactd`` command: ``serve``, offline admin commands, and client commands."""

from __future__ import annotations

import click

from artifactd import __version__
from artifactd.cli.api_token import api_token
from artifactd.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="artifactd")
def main() -> None:
    """artifactd: self-hosted, Git-compatible versioned storage.

    Start a server with `artifactd serve`, create an API token with
    `artifactd api-token create`, then use the REST API, git, or the client commands.
    """


main.add_command(serve)
main.add_command(api_token)
