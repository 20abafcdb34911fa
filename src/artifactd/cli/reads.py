"""``artifactd compare`` and ``artifactd archive``: what a fork changed, and a ref's files."""

from __future__ import annotations

from pathlib import Path

import click

from artifactd.cli._app import Application, pass_app, stdout_binary
from artifactd.cli.repo import JSON_HELP


@click.command()
@click.argument("repo")
@click.argument("base")
@click.argument("head")
@click.option("--patch", is_flag=True, help="Print the unified diff instead of the summary.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " (the compare result)")
@pass_app
def compare(app: Application, repo: str, base: str, head: str, patch: bool, as_json: bool) -> None:
    """Compare BASE...HEAD in REPO: commits ahead and behind, files changed.

    Each side is a ref of REPO or `other-repo:ref` (a repo of the same namespace, such as
    REPO's fork parent).

    \b
    Examples:
      artifactd compare agent-fork baseline:main main
      artifactd compare agent-fork baseline:main main --patch | less
      artifactd compare baseline v1 main --json | jq '.files[].path'
    """
    handle = app.client.get(repo)
    if patch:
        found = handle.compare_patch(base, head)
        out = stdout_binary()
        out.write(found.text.encode())
        out.flush()
        if found.truncated:
            app.display_info("The diff was cut by the server's size limit.")
        return
    result = handle.compare(base, head)
    if as_json:
        app.display_json(dict(result.data))
        return
    app.display_info(f"{result.ahead_by} ahead, {result.behind_by} behind; merge base "
                     f"{result.merge_base or '(none)'}")
    app.display_table(
        ["STATUS", "PATH", "+", "-"],
        [[f.status, f"{f.previous_path} -> {f.path}" if f.previous_path else f.path,
          "bin" if f.binary else f.additions, "bin" if f.binary else f.deletions]
         for f in result.files],
    )
    if result.truncated:
        app.display_info("More files changed than the server lists (300).")


@click.command()
@click.argument("repo")
@click.argument("ref")
@click.option("--format", "fmt", type=click.Choice(["tar.gz", "zip"]), default="tar.gz",
              show_default=True, help="Archive format.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: REPO-REF.FORMAT; `-` for stdout).")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"repo", "ref", "format", "path", "size"}.')
@pass_app
def archive(app: Application, repo: str, ref: str, fmt: str, output: Path | None,
            as_json: bool) -> None:
    """Download REF of REPO as a tar.gz or zip archive.

    \b
    Examples:
      artifactd archive starter-repo main
      artifactd archive starter-repo v1.0 --format zip -o release.zip
      artifactd archive starter-repo main -o - | tar tz
    """
    handle = app.client.get(repo)
    if output is not None and str(output) == "-":
        out = stdout_binary()
        out.write(handle.archive(ref, fmt))
        out.flush()
        return
    target = output or Path(f"{repo}-{ref.replace('/', '-')}.{fmt}")
    size = handle.archive_to(target, ref, fmt)  # streamed to the file, never held in memory
    if as_json:
        app.display_json({"repo": repo, "ref": ref, "format": fmt, "path": str(target),
                          "size": size})
        return
    app.display_info(f"Wrote {size} bytes to {target}")
