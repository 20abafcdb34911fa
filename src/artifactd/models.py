"""Request bodies of the REST API, shared by the server (validation) and the SDK (building).

Bodies are validated strictly: a wrong JSON type is an error (``"ttl": "60"`` is refused,
not coerced). Unknown fields are ignored, as Cloudflare's v4 API ignores them, so a client
written for a newer API version (or sending extra keys) keeps working (docs/api.md).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class CreateRepoRequest(_Body):
    name: str
    description: str | None = None
    default_branch: str | None = None
    read_only: bool = False


class ForkRepoRequest(_Body):
    name: str
    description: str | None = None
    read_only: bool = False
    default_branch_only: bool = False


class ImportRepoRequest(_Body):
    url: str
    branch: str | None = None
    depth: int | None = None
    read_only: bool = False
    description: str | None = None


class CreateTokenRequest(_Body):
    repo: str
    scope: str = "write"
    ttl: int = 86_400


class RevokeRepoTokenRequest(_Body):
    """``POST .../repos/:name/tokens/revoke`` (beyond the spec): the binding's ``revokeToken``.

    ``token`` is the plaintext token or its id; it travels in the body so it never lands in a
    URL or an access log.
    """

    token: str
