"""Dashboard sessions kept by the server (docs/dashboard.md "Sessions").

Sign-in checks the API token once and stores a row: the SHA-256 of a random session id, the
API token's id (never the token), a CSRF token and an expiry. The browser's cookie holds only
the random id. Each request looks the row up with its API token's row in one read: a missing,
expired or unknown id, or a revoked API token, is no session. Sign-out deletes the row, so a
copied cookie is dead too; expired rows are purged at each sign-in.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from artifactd.services.access import accounts
from artifactd.services.access.accounts import Principal
from artifactd.services.backend import Backend
from artifactd.services.clock import now_us
from artifactd.storage.dashsessions import DashboardSessions

SESSION_SECONDS = 8 * 3600
ID_BYTES = 32
_STORE_KEY = "dashboard.sessions"


@dataclass(frozen=True)
class Session:
    id: str  # the cookie's value
    csrf: str
    principal: Principal


def _store(backend: Backend) -> DashboardSessions:
    found = backend.extras.get(_STORE_KEY)
    if not isinstance(found, DashboardSessions):
        found = DashboardSessions(backend.meta.engine)
        backend.extras[_STORE_KEY] = found
    return found


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()


def sign_in(backend: Backend, api_token: str) -> Session:
    """A new session for a valid API token (AuthenticationError otherwise)."""
    principal = accounts.authenticate_any(backend, "Bearer " + api_token)
    store = _store(backend)
    now = now_us()
    store.purge_expired(now)
    session_id, csrf = secrets.token_urlsafe(ID_BYTES), secrets.token_urlsafe(24)
    store.insert(_hash(session_id), principal.token_id, csrf, now, now + SESSION_SECONDS * 1_000_000)
    return Session(session_id, csrf, principal)


def find(backend: Backend, session_id: str) -> Session | None:
    if not session_id or len(session_id) > 128:
        return None
    row = _store(backend).find(_hash(session_id), now_us())
    if row is None or row.revoked_us is not None:
        return None
    permission: accounts.Permission = "edit" if row.permission == "edit" else "read"
    return Session(session_id, row.csrf, Principal(row.account_id, permission, row.token_id))


def sign_out(backend: Backend, session_id: str) -> None:
    if session_id and len(session_id) <= 128:
        _store(backend).delete(_hash(session_id))
