"""What a route tells the OpenAPI document about itself, attached where the route is declared.

``endpoint(...)``, ``routed(...)`` and the other route tables call ``describe`` on the ASGI
callable they mount; ``openapi.py`` walks the app's routes and documents every callable that
carries an ``Operation``, whatever path it is mounted under (so a route table mounted twice
is documented twice, and a route without one is not documented at all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

Security = Literal["api_token", "repo_token", "none"]
T = TypeVar("T")

ATTRIBUTE = "__artifactd_operation__"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Operation:
    """One documented operation.

    ``response`` is the model of the envelope's ``result`` (``many``: a list of it), or, when
    ``enveloped`` is false, of the whole body; ``media`` replaces it for byte responses.
    ``variants`` replaces the mounted path for a route that serves a family of paths (git):
    each ``(method, path, operation)`` is documented instead of this operation.
    """

    summary: str
    tag: str
    description: str = ""
    operation_id: str = ""  # default: the handler's name
    request: type[BaseModel] | None = None
    raw_request: str | None = None  # media type of a byte request body (git)
    response: type[BaseModel] | None = None
    many: bool = False
    result_info: type[BaseModel] | None = None
    status: int = 200
    security: Security = "api_token"
    query: tuple[Query, ...] = ()
    media: dict[str, dict[str, Any]] | None = None
    enveloped: bool = True
    errors: tuple[int, ...] = ()
    extra_responses: dict[int, str] = field(default_factory=dict)
    variants: tuple[tuple[str, str, Operation], ...] = ()


def describe(target: T, operation: Operation) -> T:
    setattr(target, ATTRIBUTE, operation)
    return target


def operation_of(target: object) -> Operation | None:
    """The operation of ``target``, or of what it wraps (``functools.wraps`` sets
    ``__wrapped__``), so that a wrapper around a described endpoint stays described."""
    seen = 0
    while target is not None and seen < 10:
        found = getattr(target, ATTRIBUTE, None)
        if isinstance(found, Operation):
            return found
        target = getattr(target, "__wrapped__", None)
        seen += 1
    return None
