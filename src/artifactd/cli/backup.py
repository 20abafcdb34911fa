"""``artifactd backup`` and ``artifactd restore``: snapshots of a deployment (docs/backup.md).

Admin commands like ``migrate``: they work on the data dir and the database directly, and
``backup`` does so while the server runs. Errors leave as one line with their code
(docs/errors.md) and exit status 1; usage errors (a malformed location) exit 2.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import click

from artifactd.cli.server_options import resolve_settings, server_options

if TYPE_CHECKING:
    from artifactd.config import Settings
    from artifactd.storage.backupstore import BackupStore
    from artifactd.storage.objectstore import ObjectStore

_ENDPOINT = click.option(
    "--endpoint-url", default=None, metavar="URL",
    help="S3 endpoint for s3:// locations (default: AWS). [env: AWS_ENDPOINT_URL]",
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")


def _open_store(location: str, endpoint_url: str | None) -> BackupStore:
    from artifactd.storage.backupstore import open_store

    try:
        return open_store(location, endpoint_url=endpoint_url)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _target_bucket(settings: Settings) -> ObjectStore | None:
    """With ``storage_backend = "s3"``: the bucket prefix the restored deployment will use
    (its ``s3_*`` settings, as ``serve`` would read them). Checked by the restore."""
    if settings.storage_backend != "s3":
        return None
    from artifactd.storage.objectstore import ObjectStore, ObjectStoreConfig

    return ObjectStore(ObjectStoreConfig(
        endpoint_url=settings.s3_endpoint_url, bucket=settings.s3_bucket,
        region=settings.s3_region, prefix=settings.s3_prefix,
        access_key_id=settings.s3_access_key_id or None,
        secret_access_key=settings.s3_secret_access_key or None,
    ))


def _fail(exc: Exception) -> click.ClickException:
    from artifactd.services.backup import BackupError

    if isinstance(exc, BackupError):
        return click.ClickException(f"[{int(exc.code)}] {exc.message}")
    return click.ClickException(str(exc))


@click.command()
@click.argument("dest")
@server_options
@_ENDPOINT
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=300.0, show_default=True,
              help="Seconds to wait for one repo's pushes in flight to end.")
@_JSON
def backup(dest: str, config_file: str | None, data_dir: str | None, database_url: str | None,
           endpoint_url: str | None, lock_timeout: float, as_json: bool) -> None:
    """Write a consistent backup of the deployment (metadata and repos) to DEST.

    DEST is a new or empty directory, or s3://bucket/prefix (credentials from
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Safe while the server runs: a push
    acknowledged before the backup began is in it, one landing meanwhile is in it or not,
    never half. The backup is complete once its manifest.json is written.

    \b
    Examples:
      artifactd backup /backups/artifactd-2026-12-02 --data-dir /var/lib/artifactd
      artifactd backup s3://backups/artifactd/2026-12-02
    """
    from artifactd.cli import startup
    from artifactd.logs import configure_logging
    from artifactd.services.backup import BackupError, take_backup

    store = _open_store(dest, endpoint_url)
    settings = resolve_settings(config_file, data_dir=data_dir, database_url=database_url)
    configure_logging(settings)
    startup.require_data_dir(settings)
    backend = startup.open_backend(settings, run_migrations=False)
    try:
        summary = take_backup(backend, store, lock_timeout=lock_timeout,
                              progress=lambda text: click.echo(text, err=True))
    except BackupError as exc:
        raise _fail(exc) from None
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary)))
        return
    click.echo(f"backed up {summary.repos} repos and {sum(summary.tables.values())} rows "
               f"({summary.files} files, {summary.bytes} bytes, {summary.stored_bytes} stored) "
               f"at revision {summary.schema_revision} to {summary.location}")


@click.command()
@click.argument("src")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML config file of the restored deployment: with storage_backend = 's3' "
                   "its s3_* settings name the new, empty bucket prefix. [env: ARTIFACTD_CONFIG]")
@click.option("--data-dir", required=False, default=None, type=click.Path(file_okay=False),
              help="The new data dir (missing or empty). Required unless --check.")
@click.option("--database-url", default=None,
              help="A new, empty database to restore the metadata into (default: SQLite in the "
                   "data dir).")
@_ENDPOINT
@click.option("--check", "check_only", is_flag=True,
              help="Verify every file's checksum and write nothing.")
@_JSON
def restore(src: str, config_file: str | None, data_dir: str | None, database_url: str | None,
            endpoint_url: str | None, check_only: bool, as_json: bool) -> None:
    """Restore the backup SRC into a new data dir (and database), or --check it.

    Refuses a non-empty data dir or database, a corrupt or truncated backup (naming the
    file), and a backup of a newer schema than this release; a refused restore writes
    nothing. Then serve the data dir as usual: every repo, ref, token and setting is back.

    A backup of the s3 repo store restores with storage_backend = 's3' (config file or
    ARTIFACTD_STORAGE_BACKEND, ARTIFACTD_S3_*): its packs go to that new, empty bucket
    prefix, its metadata to --database-url, and --data-dir is the first node's empty cache.

    \b
    Examples:
      artifactd restore /backups/artifactd-2026-12-02 --data-dir /var/lib/artifactd
      artifactd restore s3://backups/artifactd/2026-12-02 --data-dir /srv/a \\
          --database-url postgresql://artifactd@db/artifactd
      artifactd restore /backups/artifactd-2026-12-02 --check
      ARTIFACTD_STORAGE_BACKEND=s3 ARTIFACTD_S3_BUCKET=artifactd-new artifactd restore \\
          s3://backups/artifactd/2026-12-02 --data-dir /var/cache/artifactd \\
          --database-url postgresql://artifactd@db/artifactd_new
    """
    from pathlib import Path

    from artifactd.cli.startup import StartupError, safe_url
    from artifactd.services.backup import BackupError, restore_backup

    if data_dir is None and not check_only:
        raise click.UsageError("--data-dir is required (or --check to only verify the backup)")
    store = _open_store(src, endpoint_url)
    bucket = None if check_only else _target_bucket(resolve_settings(config_file))
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    try:
        summary = restore_backup(store, Path(data_dir or "."), database_url, bucket=bucket,
                                 check_only=check_only,
                                 progress=lambda text: click.echo(text, err=True))
    except BackupError as exc:
        raise _fail(exc) from None
    except (DBAPIError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StartupError(f"cannot use the database {safe_url(database_url or '')}: {reason}") from None
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary)))
        return
    if check_only:
        click.echo(f"{summary.location}: {summary.files} files, {summary.bytes} bytes, every "
                   f"checksum matches (schema revision {summary.schema_revision})")
        return
    click.echo(f"restored {summary.repos} repos and {sum(summary.tables.values())} rows from "
               f"{summary.location} into {Path(data_dir or '.').resolve()} "
               f"(schema {summary.schema_revision} -> {summary.migrated_to})")
