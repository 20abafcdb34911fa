"""Events: what happened to which repo, for analytics (the spec's GraphQL dataset).

Services call ``record`` at the point where an action or an error is decided. Recording is
delegated to the sinks registered on the backend (the analytics writer registers one);
with no sink registered an event costs one attribute look-up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from artifactd.errors import ArtifactdError, InternalError, RateLimited, StorageLimitExceeded
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage.metadata import RepoRow

ACTIONS = ("create", "fork", "push", "pull", "delete")
ERRORS = ("storageLimitReached", "serverError", "clientError", "rateLimited")


@dataclass(frozen=True)
class Event:
    """One row of the analytics dataset."""

    account_id: str
    namespace: str
    repo_name: str
    event_type: str
    datetime_us: int
    duration_ms: float
    error_message: str | None = None

    @property
    def event_kind(self) -> str:
        return "action" if self.event_type in ACTIONS else "error"


EventSink = Callable[[Event], None]


def add_sink(backend: Backend, sink: EventSink) -> None:
    sinks = backend.extras.setdefault("event_sinks", [])
    assert isinstance(sinks, list)
    sinks.append(sink)


def emit(backend: Backend, event: Event) -> None:
    for sink in backend.extras.get("event_sinks", ()):  # type: ignore[attr-defined]
        sink(event)


def record(
    backend: Backend,
    repo: RepoRow,
    event_type: str,
    *,
    started_us: int,
    error_message: str | None = None,
) -> None:
    now = now_us()
    emit(backend, Event(
        account_id=repo.account_id, namespace=repo.namespace, repo_name=repo.name,
        event_type=event_type, datetime_us=now, duration_ms=(now - started_us) / 1000.0,
        error_message=error_message,
    ))


def error_event_type(exc: BaseException) -> str:
    """The spec's error ``eventType`` for an exception that ended a request."""
    if isinstance(exc, RateLimited):
        return "rateLimited"
    if isinstance(exc, StorageLimitExceeded):
        return "storageLimitReached"
    if isinstance(exc, ArtifactdError) and not isinstance(exc, InternalError):
        return "clientError"
    return "serverError"


def record_error(
    backend: Backend, account_id: str, namespace: str, repo_name: str, exc: BaseException,
    *, started_us: int,
) -> None:
    message = exc.message if isinstance(exc, ArtifactdError) else "Internal server error"
    now = now_us()
    emit(backend, Event(
        account_id=account_id, namespace=namespace, repo_name=repo_name,
        event_type=error_event_type(exc), datetime_us=now,
        duration_ms=(now - started_us) / 1000.0, error_message=message,
    ))
