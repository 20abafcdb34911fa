"""``artifactd migrate``: bring the database schema to this release's revision.

``serve`` does the same at start; this command lets a deployment migrate once, before it
starts new nodes, and tells what it did. Both run under the migration lock
(``artifactd.storage.db``), so running it beside starting servers is safe.
"""

from __future__ import annotations

import json

import click

from artifactd.cli.server_options import init_option, resolve_settings, server_options


@click.command()
@server_options
@init_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON: before, after, changed.")
def migrate(
    config_file: str | None, data_dir: str | None, database_url: str | None, init: bool,
    as_json: bool,
) -> None:
    """Upgrade the database schema to the newest revision (idempotent).

    \b
    Examples:
      artifactd migrate --data-dir /var/lib/artifactd
      ARTIFACTD_DATABASE_URL=postgresql://u@db/artifactd artifactd migrate --init
    """
    from artifactd.cli import startup
    from artifactd.logs import configure_logging
    from artifactd.storage.db import make_engine, sqlite_path
    from artifactd.storage.db import migrate as run_migrations

    settings = resolve_settings(config_file, data_dir=data_dir, database_url=database_url)
    configure_logging(settings)
    if not init:
        startup.require_data_dir(settings)
    startup.prepare_data_dir(settings.data_path, sqlite_path(settings.effective_database_url))
    with startup.database_errors(settings):
        engine = make_engine(settings.effective_database_url)
        try:
            result = run_migrations(engine)
        finally:
            engine.dispose()
    if as_json:
        click.echo(json.dumps({"before": result.before, "after": result.after, "changed": result.changed}))
    elif result.changed:
        click.echo(f"migrated from {result.before or 'an empty database'} to {result.after}")
    else:
        click.echo(f"already at {result.after}: nothing to do")
