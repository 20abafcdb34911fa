"""The SDK's exceptions. Every failure a caller can act on is one of these.

    ArtifactsError                   message, code (envelope code or None), status (HTTP or None)
    ├── APIError                     the server answered with a v4 error envelope
    │   ├── ValidationError      400 a field is wrong; ``pointer`` names it (``status`` is None
    │   │                            when the SDK caught it before sending)
    │   ├── AuthenticationError  401 missing, unknown or revoked API token
    │   ├── PermissionDenied     403 token valid but not allowed (read-only token, other account)
    │   ├── NotFound             404 namespace, repo, token, ref, object or file
    │   ├── Conflict             409 name taken, already revoked; ``retriable`` while importing/forking
    │   ├── PayloadTooLarge      413
    │   ├── RateLimited          429 ``retry_after`` seconds
    │   └── ServerError          5xx ``retry_after`` seconds when the server sent one (503)
    ├── UnexpectedResponse           a body that is not the envelope (a proxy's HTML 502, wrong URL)
    ├── TransportError               no HTTP answer at all
    │   ├── ConnectError             refused, unresolvable host, TLS failure
    │   └── Timeout                  connect, read or write took longer than ``timeout``
    ├── ImportFailed                 ``import_repo(wait=True)`` ended in status ``failed``
    ├── WaitTimeout                  ``import_repo(wait=True)`` still not ready after ``wait_timeout``
    └── ConfigurationError           the client lacks a base URL, account id or API token

Messages never contain a repo token or an API token: ``redact`` runs over every message,
including the server's, before an exception is built.
"""

from __future__ import annotations

import re

from artifactd.errors import Code

# A 409 with one of these codes passes by itself, whether or not it says ``retriable``.
RETRIABLE_CODES = frozenset({int(Code.IMPORT_IN_PROGRESS), int(Code.FORK_IN_PROGRESS)})

_SECRET = re.compile(r"(art_v1_|artd_)[0-9a-fA-F]{8,}(\?expires=\d+)?")


def redact(text: str) -> str:
    """Replace anything shaped like a repo or API token with a placeholder."""
    return _SECRET.sub(lambda m: f"{m.group(1)}***", text)


class ArtifactsError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        self.message = redact(message)
        self.code = code
        self.status = status
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code}, status={self.status})"


class APIError(ArtifactsError):
    """The server refused the request with a v4 error envelope."""

    def __init__(
        self, message: str, *, code: int | None, status: int | None, pointer: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message, code=code, status=status)
        self.pointer = pointer
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} (code {self.code})" if self.code is not None else self.message


class ValidationError(APIError):
    pass


class AuthenticationError(APIError):
    pass


class PermissionDenied(APIError):
    pass


class NotFound(APIError):
    pass


class Conflict(APIError):
    def __init__(
        self, message: str, *, code: int | None, status: int | None = 409,
        pointer: str | None = None,
        retriable: bool = False, retry_after: int | None = None,
    ):
        super().__init__(message, code=code, status=status, pointer=pointer, retry_after=retry_after)
        self.retriable = retriable


class PayloadTooLarge(APIError):
    pass


class RateLimited(APIError):
    retry_after: int


class ServerError(APIError):
    pass


class UnexpectedResponse(ArtifactsError):
    """The answer is not an Artifacts API response: wrong URL, or a proxy in the way."""


class TransportError(ArtifactsError):
    pass


class ConnectError(TransportError):
    pass


class Timeout(TransportError):
    pass


class ImportFailed(ArtifactsError):
    def __init__(self, message: str, *, name: str, reason: str | None):
        super().__init__(message)
        self.name = name
        self.reason = reason


class WaitTimeout(ArtifactsError):
    """The repo is still not ready; the server goes on with the work."""


class ConfigurationError(ArtifactsError):
    pass
