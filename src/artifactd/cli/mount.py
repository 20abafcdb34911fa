"""``artifactd mount REMOTE DIR`` / ``artifactd unmount DIR``: ArtifactFS in one step.

Needs the ``fs`` extra (``pip install 'artifactd[fs]'``: pyfuse3 on libfuse3); see
docs/mount.md. ``artifact-fs`` is the multi-repo form with a daemon.
"""

from __future__ import annotations

import click

from artifactd.cli._app import Application, pass_app

JSON_HELP = "Print the result as JSON (docs/cli.md)."


def _done(text: str) -> None:
    """The success line on stderr, as ``display_success`` prints it, without importing rich."""
    click.secho(text, fg="green", err=True)


def _oneshot(app: Application):  # type: ignore[no-untyped-def]
    try:
        from artifactd.fs import oneshot
    except ImportError as exc:
        app.abort(f"mounting needs the fs extra: pip install 'artifactd[fs]' ({exc})")
    return oneshot


@click.command()
@click.argument("remote")
@click.argument("directory", metavar="DIR")
@click.option("--branch", default="main", show_default=True, help="Branch to mount.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def mount(app: Application, remote: str, directory: str, branch: str, as_json: bool) -> None:
    """Mount REMOTE's branch at DIR, read-only, hydrating file contents on demand.

    Credentials in REMOTE (https://x:TOKEN@host/...) go to git's in-memory credential
    cache, never to disk. See docs/mount.md.

    \b
    Examples:
      artifactd mount "https://x:$TOKEN@artifacts.example/git/ns/repo.git" ./repo
      artifactd unmount ./repo
    """
    oneshot = _oneshot(app)
    try:
        target = oneshot.mount(remote, directory, branch)
    except oneshot.InputError as exc:
        app.abort(str(exc))
    if as_json:
        app.display_json({"mount_point": str(target), "branch": branch, "mounted": True})
    else:
        _done(f"mounted {target}")


@click.command()
@click.argument("directory", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def unmount(app: Application, directory: str, as_json: bool) -> None:
    """Unmount an ArtifactFS mount made by `artifactd mount` (its process exits).

    \b
    Examples:
      artifactd unmount ./repo
    """
    oneshot = _oneshot(app)
    try:
        oneshot.unmount(directory)
    except oneshot.InputError as exc:
        app.abort(str(exc))
    if as_json:
        app.display_json({"mount_point": directory, "mounted": False})
    else:
        _done(f"unmounted {directory}")
