"""Accounts and API tokens: the control-plane credential.

An API token belongs to one account and has permission ``read`` (Artifacts > Read) or
``edit`` (Artifacts > Edit). A token used on another account's path gets exactly the same
answer as an unknown account, so account ids cannot be probed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Literal

from artifactd.errors import AuthenticationError, Code, NotFound, PermissionDenied, ValidationError
from artifactd.services.access.tokens import (
    format_api_token,
    hash_secret,
    new_secret,
    new_token_id,
    parse_api_token,
)
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage.metadata import ApiTokenRow

Permission = Literal["read", "edit"]
_ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Principal:
    account_id: str
    permission: Permission
    token_id: str


def default_account_id(backend: Backend) -> str:
    if backend.settings.default_account:
        return check_account_id(backend.settings.default_account)
    return backend.meta.get_or_create_setting("default_account", secrets.token_hex(16))


def check_account_id(value: str) -> str:
    if not _ACCOUNT_ID.fullmatch(value):
        raise ValidationError("Account ids are 32 lowercase hex digits", pointer="/account")
    return value


def create_api_token(
    backend: Backend, account_id: str | None, permission: str, name: str | None = None
) -> tuple[ApiTokenRow, str]:
    if permission not in ("read", "edit"):
        raise ValidationError("permission must be 'read' or 'edit'", pointer="/permission")
    account = check_account_id(account_id) if account_id else default_account_id(backend)
    now = now_us()
    backend.meta.ensure_account(account, now)
    secret = new_secret()
    token_id = new_token_id()
    backend.meta.insert_api_token(
        token_id=token_id, account_id=account, secret_hash=hash_secret(secret),
        permission=permission, name=name, now_us=now,
    )
    row = ApiTokenRow(token_id, account, permission, name, now, None)
    return row, format_api_token(secret)


def revoke_api_token(backend: Backend, token_id: str) -> ApiTokenRow:
    row = backend.meta.revoke_api_token(token_id, now_us())
    if row is None:
        raise NotFound(f"No API token with id {token_id!r}", code=Code.TOKEN_NOT_FOUND)
    return row


def authenticate(backend: Backend, authorization: str | None, account_id: str | None) -> Principal:
    """Check an ``Authorization: Bearer <api token>`` header against the path's account.

    ``account_id`` is ``None`` on the ``/v1/api`` base path, whose routes name no account:
    the request acts on the token's own account.
    """
    principal = authenticate_any(backend, authorization)
    if account_id is not None and principal.account_id != account_id:
        raise PermissionDenied(
            "This API token is not authorized for this account",
            code=Code.ACCOUNT_NOT_AUTHORIZED,
        )
    return principal


def authenticate_any(backend: Backend, authorization: str | None) -> Principal:
    """Check an API token without a path account (GraphQL names its account in the query)."""
    if not authorization:
        raise AuthenticationError(
            "Authentication required: send 'Authorization: Bearer <API token>'",
            code=Code.AUTH_REQUIRED,
        )
    scheme, _, value = authorization.partition(" ")
    secret = parse_api_token(value.strip()) if scheme.lower() == "bearer" else None
    row = backend.meta.find_api_token(hash_secret(secret)) if secret else None
    if row is None or row.revoked_us is not None:
        raise AuthenticationError("Invalid API token", code=Code.INVALID_API_TOKEN)
    permission: Permission = "edit" if row.permission == "edit" else "read"
    return Principal(row.account_id, permission, row.id)


def require_edit(principal: Principal) -> None:
    if principal.permission != "edit":
        raise PermissionDenied(
            "This API token has read permission; this request needs Artifacts > Edit",
            code=Code.PERMISSION_DENIED,
        )
