"""Options shared by ``serve`` and the offline admin commands (they read the same data dir)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from artifactd.config import Settings, load_settings
from artifactd.errors import ConfigError
from artifactd.logs import configure_logging

if TYPE_CHECKING:
    from artifactd.services.backend import Backend

F = Callable[..., Any]


def server_options(func: F) -> F:
    func = click.option(
        "--config", "config_file", type=click.Path(dir_okay=False),
        help="TOML config file. [env: ARTIFACTD_CONFIG]",
    )(func)
    func = click.option(
        "--database-url", default=None,
        help="Metadata database URL (default: SQLite in the data dir). [env: ARTIFACTD_DATABASE_URL]",
    )(func)
    func = click.option(
        "--data-dir", default=None, type=click.Path(file_okay=False),
        help="Data directory (default ./artifactd-data). [env: ARTIFACTD_DATA_DIR]",
    )(func)
    return func


def resolve_settings(config_file: str | None, **flags: Any) -> Settings:
    try:
        return load_settings(flags=flags, config_file=config_file)
    except ConfigError as exc:
        raise click.UsageError(exc.message) from exc


def init_option(func: F) -> F:
    """``--init`` of the admin commands: without it they refuse a data dir that does not exist."""
    return click.option(
        "--init", is_flag=True,
        help="Create the data dir (and the database schema) if they do not exist yet.",
    )(func)


def open_admin_backend(
    config_file: str | None, data_dir: str | None, database_url: str | None, init: bool,
) -> Backend:
    from artifactd.cli import startup  # imports the server side: only when a command runs

    settings = resolve_settings(config_file, data_dir=data_dir, database_url=database_url)
    configure_logging(settings)
    if not init:
        startup.require_data_dir(settings)
    return startup.open_backend(settings)
