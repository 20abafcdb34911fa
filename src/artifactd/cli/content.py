"""``artifactd log`` and ``artifactd cat``: read a repo's history and files without cloning."""

from __future__ import annotations

import base64

import click

from artifactd.cli._app import Application, pass_app, stdout_binary
from artifactd.cli.repo import JSON_HELP


@click.command()
@click.argument("repo")
@click.option("--ref", default=None, help="Branch, tag or commit (default: the default branch).")
@click.option("-n", "--limit", type=click.IntRange(1, 200), default=20, show_default=True,
              help="Commits to show.")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many commits first.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " (a list of commits)")
@pass_app
def log(app: Application, repo: str, ref: str | None, limit: int, offset: int, as_json: bool) -> None:
    """Show REPO's commit history, newest first.

    \b
    Examples:
      artifactd log starter-repo
      artifactd log starter-repo --ref feature -n 5
      artifactd log starter-repo --json | jq -r '.[0].sha'
    """
    page = app.client.get(repo).log(ref, limit=limit, offset=offset)
    if as_json:
        app.display_json([commit.to_json() for commit in page])
        return
    app.display_table(
        ["COMMIT", "DATE", "AUTHOR", "SUBJECT"],
        [
            # The short sha for people, as git log does; the whole of it for scripts.
            [c.sha[:12] if app.console.is_terminal else c.sha,
             c.author.date.strftime("%Y-%m-%d %H:%M") if c.author.date else "", c.author.name, c.subject]
            for c in page
        ],
    )
    if page.has_more:
        app.display_info(f"More commits: --offset {offset + limit}")


@click.command()
@click.argument("repo")
@click.argument("path")
@click.option("--ref", default=None, help="Branch, tag or commit (default: the default branch).")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"repo", "path", "ref", "size", "content_base64"}.')
@pass_app
def cat(app: Application, repo: str, path: str, ref: str | None, as_json: bool) -> None:
    """Print the bytes of file PATH of REPO, as they are.

    \b
    Examples:
      artifactd cat starter-repo README.md
      artifactd cat starter-repo src/app.py --ref v1.0 > app.py
    """
    data = app.client.get(repo).file(path, ref)
    if as_json:
        app.display_json({"repo": repo, "path": path, "ref": ref, "size": len(data),
                          "content_base64": base64.b64encode(data).decode("ascii")})
        return
    out = stdout_binary()
    out.write(data)
    out.flush()
