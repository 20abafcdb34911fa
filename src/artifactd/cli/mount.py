"""``artifactd mount REMOTE DIR`` / ``artifactd unmount DIR``: ArtifactFS in one step.

Needs the ``fs`` extra (``pip install 'artifactd[fs]'``: pyfuse3 on libfuse3); see
docs/mount.md. ``artifact-fs`` is the multi-repo form with a daemon.
"""

from __future__ import annotations

import click

from artifactd.cli._app import Application, pass_app


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
@pass_app
def mount(app: Application, remote: str, directory: str, branch: str) -> None:
    """Mount REMOTE's branch at DIR, read-only, hydrating file contents on demand."""
    oneshot = _oneshot(app)
    try:
        target = oneshot.mount(remote, directory, branch)
    except oneshot.InputError as exc:
        app.abort(str(exc))
    app.display_success(f"mounted {target}")


@click.command()
@click.argument("directory", metavar="DIR")
@pass_app
def unmount(app: Application, directory: str) -> None:
    """Unmount an ArtifactFS mount made by `artifactd mount` (its process exits)."""
    oneshot = _oneshot(app)
    try:
        oneshot.unmount(directory)
    except oneshot.InputError as exc:
        app.abort(str(exc))
    app.display_success(f"unmounted {directory}")
