"""Logging set-up shared by the server, its workers and the CLI: one format for every logger.

``logging_config`` is a ``logging.config.dictConfig`` document. ``artifactd serve`` applies
it and hands the same document to uvicorn (``log_config``), which applies it again in every
worker process before anything logs, so the access log, the application's loggers and
uvicorn's own messages all go through one handler on the root logger.

With ``log_format = "json"`` every line is one JSON object (python-json-logger) carrying
``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; lines written while a
request is being served also carry ``request_id`` and ``route``, and ``repo`` once known.

Nothing here reads headers: the request id is the only value taken from a request, and only
after ``safe_request_id`` checked it.
"""

from __future__ import annotations

import atexit
import collections
import contextvars
import copy
import logging
import logging.config
import logging.handlers
import multiprocessing.util
import re
import secrets
import sys
import threading
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from artifactd.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"

# Up to 128 characters from a set that cannot break a log line, a header or a shell:
# enough for a UUID, a W3C trace id or a load balancer's own request id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
# A client that pastes a token where the request id goes must not get it logged.
_TOKEN_PREFIXES = ("artd_", "art_v1_")


def safe_request_id(supplied: str | None) -> str:
    """The client's ``X-Request-Id`` if it is safe to log and echo, else a fresh one."""
    if (supplied is not None and _REQUEST_ID.fullmatch(supplied)
            and not supplied.startswith(_TOKEN_PREFIXES)):
        return supplied
    return secrets.token_hex(16)


@dataclass
class RequestContext:
    """What every log line written while serving one request says about that request."""

    request_id: str
    route: str
    # The ASGI scope's own dict: handlers record the repo there once they resolved it.
    scope: MutableMapping[str, Any] = field(default_factory=dict, repr=False)


current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "artifactd_request", default=None
)


def current_request_id() -> str:
    context = current_request.get()
    return context.request_id if context is not None else "-"


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``route`` and ``repo`` of the request being served to a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current_request.get()
        if context is not None:
            if not hasattr(record, "request_id"):
                record.request_id = context.request_id
            if not hasattr(record, "route"):
                record.route = context.route
            repo = context.scope.get("artifactd.repo")
            if repo and not hasattr(record, "repo"):
                record.repo = repo
        return True


# How long an INFO line (the access log) may wait in memory before the writing thread puts
# it out, together with every line queued meanwhile. Waking that thread for each line cost
# a request about 100-150 µs of the worker's CPU (the wake-up, then the two threads taking
# the GIL from each other), more than the rest of a small request's Python. A WARNING or
# worse wakes it at once.
BATCH_S = 0.05


class BackgroundStderrHandler(logging.Handler):
    """stderr, written by a thread of its own: the caller only queues the record.

    The access log is written on the event loop after every request, and a ``write`` to
    stderr can block: on a full pipe (a slow log collector) or, for a file, in the kernel's
    dirty-page throttling while git writes packs (a probe of the event loop during pushes
    and forks found it inside that write with the loop up to 95 ms late; every request of
    the worker waits behind it). The filters
    (request context, redaction) still run in the caller, where the request is known; the
    formatter runs in the writing thread, which writes what is queued every ``BATCH_S``
    (at once for a WARNING or worse), in one write.

    ``close`` (at exit, in a worker process when it ends, or when logging is configured
    again) writes what is queued, and later records are written directly.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stream = logging.StreamHandler(sys.stderr)
        self._queued: collections.deque[logging.LogRecord] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._direct = False
        self._closing = threading.Lock()
        self._writer = threading.Thread(target=self._write_queued, name="artifactd-log",
                                        daemon=True)
        self._writer.start()
        atexit.register(self.close)
        # multiprocessing's children (uvicorn's workers) end with os._exit after running
        # their finalizers, not atexit.
        multiprocessing.util.Finalize(self, self.close, exitpriority=10)

    def setFormatter(self, fmt: logging.Formatter | None) -> None:
        self._stream.setFormatter(fmt)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The message resolved now (its arguments may change once the caller goes on); the
        # exception stays for the formatter (same process: nothing is pickled).
        prepared = copy.copy(record)
        prepared.msg = record.getMessage()
        prepared.args = None
        return prepared

    def emit(self, record: logging.LogRecord) -> None:
        if self._direct:
            self._stream.handle(self.prepare(record))
            return
        try:
            self._queued.append(self.prepare(record))  # thread-safe, and wakes nobody
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def _write_queued(self) -> None:
        while not self._stopping:
            self._wake.wait(BATCH_S)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        lines = []
        while self._queued:
            record = self._queued.popleft()
            try:
                lines.append(self._stream.format(record) + self._stream.terminator)
            except Exception:
                self._stream.handleError(record)
        if lines:
            stream = self._stream.stream
            try:
                stream.write("".join(lines))
                stream.flush()
            except Exception:
                self.handleError(record)

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        with self._closing:
            if self._direct:  # closed already (logging configured again, then exit)
                return
            self._direct = True
            self._stopping = True
            self._wake.set()
            if self._writer is not threading.current_thread():
                self._writer.join()
            self._drain()  # what was queued before ``_direct`` was seen
        self._stream.flush()
        super().close()


def _formatter(settings: Settings) -> dict[str, Any]:
    if settings.log_format == "json":
        return {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": True,
        }
    return {"format": TEXT_FORMAT}


def logging_config(settings: Settings) -> dict[str, Any]:
    level = settings.log_level.upper()  # validated by artifactd.config
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request": {"()": "artifactd.logs.RequestContextFilter"},
            # Last, so it sees what the request filter added: no token reaches a log line,
            # whoever logs it (artifactd.redact).
            "redact": {"()": "artifactd.redact.RedactingFilter"},
        },
        "formatters": {"artifactd": _formatter(settings)},
        "handlers": {
            "stderr": {
                "()": "artifactd.logs.BackgroundStderrHandler",
                "formatter": "artifactd",
                "filters": ["request", "redact"],
            },
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
        "loggers": {
            "artifactd": {"level": level, "handlers": [], "propagate": True},
            # uvicorn's loggers keep no handler of their own: they reach ours on the root.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }


_json_configured = False  # what the last configure_logging chose, for json_logs()


def configure_logging(settings: Settings) -> None:
    global _json_configured
    logging.config.dictConfig(logging_config(settings))
    _json_configured = settings.log_format == "json"


def json_logs() -> bool:
    """Whether this process logs JSON: then even a fatal start-up error is a JSON line."""
    return _json_configured
