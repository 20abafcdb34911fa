"""artifactd: self-hosted, Git-compatible versioned storage.

The package's public names are the Python SDK (``Artifacts``, ``AsyncArtifacts``, their
results and exceptions); the server lives in the subpackages.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The SDK's names load on first use (PEP 562): importing a subpackage (the ``artifact-fs``
# mount process, the server) must not pay for the SDK and httpx it does not use, nor for
# ``typing`` (2 ms of the lean ``artifact-fs add-repo`` client's start): type checkers take
# any ``TYPE_CHECKING`` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from artifactd.client import (
        APIError,
        Artifacts,
        ArtifactsError,
        AsyncArtifacts,
        AsyncRepo,
        AuthenticationError,
        Commit,
        ConfigurationError,
        Conflict,
        ConnectError,
        CreateRepoResult,
        CreateTokenResult,
        ImportFailed,
        LogPage,
        NotFound,
        PayloadTooLarge,
        PermissionDenied,
        Person,
        RateLimited,
        Repo,
        RepoInfo,
        RepoPage,
        Retrying,
        RetryPolicy,
        ServerError,
        Timeout,
        TokenInfo,
        TokenList,
        TransportError,
        Tree,
        TreeEntry,
        UnexpectedResponse,
        ValidationError,
        WaitTimeout,
        WebhookVerificationError,
        authenticated_remote,
        token_expires_at,
        token_secret,
        verify_webhook,
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
    "__version__",
    "authenticated_remote",
    "token_expires_at",
    "token_secret",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from artifactd import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'artifactd' has no attribute {name!r}")
