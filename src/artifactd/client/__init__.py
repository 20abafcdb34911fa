"""The Python SDK: ``Artifacts`` (blocking) and ``AsyncArtifacts`` over httpx.

Import from ``artifactd`` directly; the modules here are private.
"""

from __future__ import annotations

from ._async import AsyncArtifacts, AsyncRepo
from ._core import Retrying, RetryPolicy
from ._errors import (
    APIError,
    ArtifactsError,
    AuthenticationError,
    ConfigurationError,
    Conflict,
    ConnectError,
    ImportFailed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    ServerError,
    Timeout,
    TransportError,
    UnexpectedResponse,
    ValidationError,
    WaitTimeout,
)
from ._events import WebhookVerificationError, verify_webhook
from ._sync import Artifacts, Repo
from ._types import (
    Commit,
    CreateRepoResult,
    CreateTokenResult,
    LogPage,
    Person,
    RepoInfo,
    RepoPage,
    TokenInfo,
    TokenList,
    Tree,
    TreeEntry,
    authenticated_remote,
    token_expires_at,
    token_secret,
)

__all__ = [
    "APIError",
    "Artifacts",
    "ArtifactsError",
    "AsyncArtifacts",
    "AsyncRepo",
    "AuthenticationError",
    "Commit",
    "ConfigurationError",
    "Conflict",
    "ConnectError",
    "CreateRepoResult",
    "CreateTokenResult",
    "ImportFailed",
    "LogPage",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "Person",
    "RateLimited",
    "Repo",
    "RepoInfo",
    "RepoPage",
    "RetryPolicy",
    "Retrying",
    "ServerError",
    "Timeout",
    "TokenInfo",
    "TokenList",
    "TransportError",
    "Tree",
    "TreeEntry",
    "UnexpectedResponse",
    "ValidationError",
    "WaitTimeout",
    "WebhookVerificationError",
    "authenticated_remote",
    "token_expires_at",
    "token_secret",
    "verify_webhook",
]
