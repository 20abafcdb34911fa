"""Options shared by ``serve`` and the offline admin commands (they read the same data dir)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from artifactd.config import Settings, load_settings
from artifactd.errors import ConfigError

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
