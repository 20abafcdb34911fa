"""Checks ``serve`` and the admin commands make before touching anything, with one-line errors.

Every failure an operator can cause (a data dir that cannot be created, a missing database
driver, an unreachable database, a port already taken, a missing TLS file) leaves through
``StartupError``, which click prints as ``Error: <message>`` and exit status 1: no traceback.
Database URLs are printed with the password hidden.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from artifactd.config import Settings
from artifactd.logs import json_logs
from artifactd.services.backend import Backend
from artifactd.storage.db import is_migrated, make_engine, normalise_url, sqlite_path

log = logging.getLogger("artifactd.serve")


class StartupError(click.ClickException):
    """A one-line reason why the command cannot run."""

    def show(self, file: IO[Any] | None = None) -> None:
        if json_logs():
            log.error(self.message)
        else:
            super().show(file)


def safe_url(url: str) -> str:
    try:
        return make_url(normalise_url(url)).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable URL)"


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def require_data_dir(settings: Settings) -> None:
    """Admin commands work on an existing data dir: a typo in ``--data-dir`` must not make a
    second data dir (and a second default account) without a word."""
    path = settings.data_path
    hint = f"start `artifactd serve --data-dir {path}` once, or pass --init to create it"
    if not path.is_dir():
        raise StartupError(f"no data dir at {path}: {hint}")
    url = settings.effective_database_url
    database = sqlite_path(url)
    if database is not None:
        if not database.exists():
            raise StartupError(f"{path} is not an artifactd data dir (no {database.name}): {hint}")
        return
    # A server database that is empty is as likely a wrong URL as a wrong --data-dir.
    with database_errors(settings):
        engine = make_engine(url)
        try:
            migrated = is_migrated(engine)
        finally:
            engine.dispose()
    if not migrated:
        raise StartupError(
            f"the database {safe_url(url)} has no artifactd schema: pass --init to create it"
        )


def prepare_data_dir(path: Path, database: Path | None = None) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data dir {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StartupError(f"the data dir {path} is not writable by this user")
    # Made by us, they are private; made by an operator (or an older release), say so once.
    _warn_if_shared(path, "data dir")
    if database is not None and database.exists():
        _warn_if_shared(database, "database")


def _warn_if_shared(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the %s %s is accessible to other users (mode %04o): chmod %s %s",
                    what, path, mode, "700" if path.is_dir() else "600", path)


def open_backend(settings: Settings, *, run_migrations: bool = True) -> Backend:
    """``Backend.open`` with every operator mistake turned into one line."""
    prepare_data_dir(settings.data_path, sqlite_path(settings.effective_database_url))
    with database_errors(settings):
        try:
            return Backend.open(settings, run_migrations=run_migrations)
        except Exception as exc:
            problem = _object_store_problem(exc)
            if problem is None:
                raise
            raise StartupError(f"storage_backend 's3': {problem}") from None


def _object_store_problem(exc: Exception) -> str | None:
    """The one line to print for an ``s3`` store that cannot start (boto3 is imported only
    by that backend, so neither it nor its exceptions are imported here otherwise)."""
    if isinstance(exc, ModuleNotFoundError) and exc.name \
            and exc.name.split(".")[0] in {"boto3", "botocore"}:
        return "boto3 is not installed: pip install 'artifactd[s3]'"
    objectstore = sys.modules.get("artifactd.storage.objectstore")
    if objectstore is not None and isinstance(exc, objectstore.ObjectStoreUnavailable):
        return str(exc)
    return None


@contextlib.contextmanager
def database_errors(settings: Settings) -> Iterator[None]:
    url = settings.effective_database_url
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in {"psycopg", "psycopg2"}:
            raise StartupError(
                "the PostgreSQL driver is not installed: pip install 'artifactd[postgres]'"
            ) from None
        raise
    except NoSuchModuleError:
        raise StartupError(f"unsupported database URL {safe_url(url)}") from None
    except ArgumentError:
        raise StartupError("database_url is not a valid database URL") from None
    except DBAPIError as exc:
        raise StartupError(f"cannot use the database {safe_url(url)}: {_first_line(exc)}") from None
    except OSError as exc:
        raise StartupError(f"cannot use the data dir {settings.data_path}: {exc.strerror or exc}") from None


def check_port_free(host: str, port: int) -> None:
    """Bind once, as uvicorn will, so that a taken port is reported before "listening"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use") from None
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def check_tls_files(settings: Settings) -> None:
    for label, name in (("certificate", settings.tls_cert), ("key", settings.tls_key)):
        if name and not os.access(name, os.R_OK):
            raise StartupError(f"cannot read the TLS {label} file {name}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere
