"""Cheap checks of the stores for readiness probes: nothing here changes any data."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from artifactd.storage.db import MIGRATIONS_DIR


@functools.cache
def head_revision() -> str | None:
    """The newest migration this build ships (read once: the files never change at run time)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def schema_revision(engine: Engine) -> str | None:
    """The migration the database is at; raises if the database cannot be reached."""
    with engine.connect() as connection:
        row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row is not None else None


def writable(directory: Path) -> bool:
    """Whether a file can be created (and removed) in ``directory``: pushes and imports stage
    there. A real file rather than ``os.access``, which says yes to root on a read-only mount."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ready-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def git_binary() -> str | None:
    return shutil.which("git")
