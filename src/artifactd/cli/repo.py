"""``artifactd repo``: create, list, get, delete, fork and import repos."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import click

from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.client import CreateRepoResult, ImportFailed, RepoInfo, WaitTimeout
from artifactd.client._core import IMPORT_POLL_INTERVAL, IMPORT_POLL_MAX_INTERVAL

JSON_HELP = "Print JSON for scripts."


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC" if value else ""


def show_created(app: Application, created: CreateRepoResult, verb: str, as_json: bool) -> None:
    if as_json:
        app.display_json(created.to_json())
        return
    pairs: list[tuple[str, object]] = [
        ("name", created.name), ("namespace", created.namespace), ("id", created.id),
        ("default_branch", created.default_branch), ("remote", created.remote),
    ]
    if created.objects is not None:
        pairs.append(("objects", created.objects))
    pairs.append(("token", created.token))
    app.display_pairs(pairs)
    app.display_success(
        f"{verb} repo {created.name!r}. The write token is shown once; it expires {when(created.expires_at)}."
    )


def show_repo(app: Application, repo: RepoInfo) -> None:
    app.display_pairs([
        ("name", repo.name), ("namespace", repo.namespace), ("id", repo.id),
        ("status", repo.status + (f" ({repo.status_reason})" if repo.status_reason else "")),
        ("description", repo.description), ("default_branch", repo.default_branch),
        ("read_only", "yes" if repo.read_only else "no"), ("remote", repo.remote),
        ("source", repo.source), ("size", repo.size), ("created_at", when(repo.created_at)),
        ("updated_at", when(repo.updated_at)), ("last_push_at", when(repo.last_push_at)),
    ])


@click.group()
def repo() -> None:
    """Create, list, inspect, delete, fork and import repos of a namespace."""


@repo.command()
@click.argument("name")
@click.option("--description", default=None, help="A description of the repo.")
@click.option("--read-only", is_flag=True, help="Refuse pushes.")
@click.option("--default-branch", default=None, help="Default branch (default: main).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def create(
    app: Application, name: str, description: str | None, read_only: bool,
    default_branch: str | None, as_json: bool,
) -> None:
    """Create a repo and print its remote and an initial write token.

    \b
    Examples:
      artifactd repo create starter-repo
      artifactd repo create starter-repo --description "Automation" --default-branch main
      artifactd --namespace agents repo create task-42 --json
    """
    created = app.client.create(
        name, read_only=read_only, description=description, default_branch=default_branch,
    )
    show_created(app, created, "Created", as_json)


@repo.command("list")
@click.option("--limit", type=click.IntRange(1, 200), default=None, help="Repos per page (default 50).")
@click.option("--cursor", default=None, help="Continue from a previous page's cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Fetch every page.")
@click.option("--search", default=None, help="Only repos whose name contains this text.")
@click.option("--sort", type=click.Choice(["created_at", "updated_at", "last_push_at", "name"]),
              default=None, help="Sort field (default created_at).")
@click.option("--direction", type=click.Choice(["asc", "desc"]), default=None,
              help="Sort direction (default desc).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + ' {"repos": [...], "cursor": ...}')
@pass_app
def list_(
    app: Application, limit: int | None, cursor: str | None, all_pages: bool, search: str | None,
    sort: str | None, direction: str | None, as_json: bool,
) -> None:
    """List the repos of the namespace, one page (or --all).

    When there is a further page, its cursor is printed on stderr.

    \b
    Examples:
      artifactd repo list
      artifactd repo list --all --sort name --direction asc
      artifactd repo list --search task- --json | jq -r '.repos[].name'
    """
    next_cursor: str | None
    if all_pages:
        repos = list(app.client.iter_repos(search=search, sort=sort, direction=direction, page_size=limit))
        next_cursor = None
    else:
        page = app.client.list(limit=limit, cursor=cursor, search=search, sort=sort, direction=direction)
        repos, next_cursor = page.repos, page.cursor
    if as_json:
        app.display_json({"repos": [r.to_json() for r in repos], "cursor": next_cursor})
        return
    app.display_table(
        ["NAME", "STATUS", "BRANCH", "LAST PUSH", "DESCRIPTION"],
        [[r.name, r.status, r.default_branch, when(r.last_push_at), r.description] for r in repos],
    )
    if next_cursor:
        app.display_info(f"More repos: --cursor {next_cursor} (or --all)")


@repo.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def get(app: Application, name: str, as_json: bool) -> None:
    """Show a repo's metadata, whatever its status (ready, importing, forking, failed).

    \b
    Examples:
      artifactd repo get starter-repo
      artifactd repo get starter-repo --json | jq -r .remote
    """
    info = app.client.info(name)
    if as_json:
        app.display_json(info.to_json())
    else:
        show_repo(app, info)


@repo.command()
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + ' {"name", "namespace", "deleted": true}')
@pass_app
def delete(app: Application, name: str, yes: bool, as_json: bool) -> None:
    """Delete a repo, its tokens and its content.

    \b
    Examples:
      artifactd repo delete starter-repo
      artifactd repo delete starter-repo --yes
    """
    if not yes:
        try:
            confirmed = click.confirm(
                f"Delete repo {name!r} of namespace {app.namespace!r}?", err=True, default=False
            )
        except click.Abort:  # end of input
            click.echo(err=True)
            confirmed = False
        if not confirmed:
            app.abort(f"repo {name!r} not deleted (confirm, or pass --yes)", ExitCode.USAGE)
    if not app.client.delete(name):
        app.abort(f"Repo {name!r} not found in namespace {app.namespace!r}", ExitCode.NOT_FOUND)
    if as_json:
        app.display_json({"name": name, "namespace": app.namespace, "deleted": True})
        return
    app.display_success(f"Deleted repo {name!r}.")


@repo.command()
@click.argument("source")
@click.argument("name")
@click.option("--description", default=None, help="Description of the fork (default: the source's).")
@click.option("--read-only", is_flag=True, help="Make the fork read-only.")
@click.option("--default-branch-only", is_flag=True, help="Copy only the default branch.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def fork(
    app: Application, source: str, name: str, description: str | None, read_only: bool,
    default_branch_only: bool, as_json: bool,
) -> None:
    """Fork SOURCE into a new repo NAME of the same namespace.

    \b
    Examples:
      artifactd repo fork baseline task-42
      artifactd repo fork baseline task-42 --default-branch-only --json
    """
    handle = app.client.get(source)
    with app.status(f"Forking {source} into {name}..."):
        created = handle.fork(
            name, description=description, read_only=read_only,
            default_branch_only=default_branch_only,
        )
    show_created(app, created, "Forked", as_json)


@repo.command("import")
@click.argument("url")
@click.argument("name")
@click.option("--branch", default=None, help="Branch to import (default: the remote's default).")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="Shallow import depth.")
@click.option("--read-only", is_flag=True, help="Make the imported repo read-only.")
@click.option("--description", default=None, help="A description of the repo.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until the import is ready (or failed).")
@click.option("--wait-timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds to wait before giving up (the import goes on).")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def import_(
    app: Application, url: str, name: str, branch: str | None, depth: int | None, read_only: bool,
    description: str | None, wait: bool, wait_timeout: float, as_json: bool,
) -> None:
    """Import a public HTTPS git remote URL into a new repo NAME.

    Waits until the repo is ready, showing the phases the server reports (importing, then
    ready with its size, or failed with the reason) on stderr; exit status 8 if it fails.

    \b
    Examples:
      artifactd repo import https://github.com/cloudflare/workers-sdk workers-sdk --branch main
      artifactd repo import https://gitlab.com/group/project.git project --depth 100 --no-wait
    """
    with app.status(f"Importing {url} into {name}...") as update:
        created = app.client.import_repo(
            url, name, branch=branch, depth=depth, read_only=read_only, description=description,
        )
        if wait:
            follow_import(app, name, wait_timeout, update)
    show_created(app, created, "Imported" if wait else "Started importing", as_json)


def follow_import(app: Application, name: str, timeout: float, update: Callable[[str], None]) -> None:
    """Poll the repo until the import ends, showing each phase the server reports.

    While the repo is ``importing`` the server reports git's phase and counts as its
    ``status_reason`` (``receiving objects 450/1000 (1.20 MiB)``); then ``ready`` (with its
    size) or ``failed`` (with the reason).
    """
    started = time.monotonic()
    interval = IMPORT_POLL_INTERVAL
    shown = ""
    while True:
        info = app.client.info(name)
        elapsed = time.monotonic() - started
        phase = info.status + (f": {info.status_reason}" if info.status == "importing"
                               and info.status_reason else "")
        if phase != shown:
            update(f"import: {phase}" + (f" ({elapsed:.1f} s)" if shown else ""))
            shown = phase
        if info.status == "ready":
            app.display_info(f"import: ready after {elapsed:.1f} s, {info.size} bytes")
            return
        if info.status == "failed":
            raise ImportFailed(
                f"Import of {name!r} failed: {info.status_reason or 'unknown reason'}",
                name=name, reason=info.status_reason,
            )
        if elapsed >= timeout:
            raise WaitTimeout(
                f"Import of {name!r} is still {info.status} after {timeout:g} s; it goes on on the "
                "server (check it with `artifactd repo get`)"
            )
        if app.error_console.is_terminal:
            update(f"import: {phase} ({elapsed:.0f} s)")
        time.sleep(min(interval, max(0.0, timeout - elapsed)))
        interval = min(interval * 2, IMPORT_POLL_MAX_INTERVAL)
