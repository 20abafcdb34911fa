"""Entry point for uvicorn worker processes: rebuild settings from the environment."""

from __future__ import annotations

import dataclasses
import json
import os

from starlette.applications import Starlette

from artifactd.config import Settings
from artifactd.http.app import create_app
from artifactd.logs import configure_logging
from artifactd.services.backend import Backend

SETTINGS_ENV = "ARTIFACTD_SERVE_SETTINGS"


def export_settings(settings: Settings) -> None:
    """Hand the parent's resolved settings to worker processes."""
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))


def app_factory() -> Starlette:
    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    configure_logging(settings)
    return create_app(Backend.open(settings, run_migrations=False, serving=True))
