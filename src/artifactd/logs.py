"""Logging set-up shared by the server and the CLI."""

from __future__ import annotations

import logging
import sys

from artifactd.config import Settings
from artifactd.redact import RedactingFilter


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())  # no token reaches a log line, whoever logs it
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("artifactd")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
