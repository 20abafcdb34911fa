"""Dashboard sessions: a signed cookie that carries the API token, and CSRF tokens.

The cookie is ``itsdangerous``-signed with a server secret kept in the metadata store (one
per data dir, shared by every worker) and stamped with its creation time, which the server
checks against ``SESSION_SECONDS`` whatever the browser keeps: a cookie that fails the
signature or is older is no session at all. The API token inside is checked again on every
request (``accounts.authenticate_any``), so revoking it ends the session at once.

Each session has a random CSRF token, sent in a hidden field of every form and compared in
constant time on every POST. Before sign-in, the login form uses a double-submit token (a
random cookie that the form must repeat). Cookies are ``HttpOnly``, ``SameSite=Strict``,
``Path=/dashboard`` and ``Secure`` when the request came over https or ``public_url`` is https.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from artifactd.services.backend import Backend

SESSION_COOKIE = "artifactd_session"
LOGIN_COOKIE = "artifactd_login"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
COOKIE_PATH = "/dashboard"
_SECRET_SETTING = "dashboard_session_secret"  # noqa: S105  # a settings key, not a secret
_SERIALIZER_KEY = "dashboard.serializer"


@dataclass(frozen=True)
class Session:
    api_token: str
    csrf: str


def _serializer(backend: Backend) -> URLSafeTimedSerializer:
    existing = backend.extras.get(_SERIALIZER_KEY)
    if isinstance(existing, URLSafeTimedSerializer):
        return existing
    secret = backend.meta.get_or_create_setting(_SECRET_SETTING, secrets.token_hex(32))
    made = URLSafeTimedSerializer(secret, salt="artifactd.dashboard.session")
    backend.extras[_SERIALIZER_KEY] = made
    return made


def new_session(api_token: str) -> Session:
    return Session(api_token, secrets.token_urlsafe(24))


def read_session(backend: Backend, request: Request) -> Session | None:
    """The request's session, or None when it has none, or a tampered or expired one."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 4096:
        return None
    try:
        data = _serializer(backend).loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:  # also SignatureExpired
        return None
    if not isinstance(data, dict):
        return None
    token, csrf = data.get("t"), data.get("c")
    if not isinstance(token, str) or not isinstance(csrf, str):
        return None
    return Session(token, csrf)


def _secure(request: Request) -> bool:
    """https here, or behind a TLS proxy whose address is the configured ``public_url``."""
    backend: Backend = request.app.state.backend
    return request.url.scheme == "https" or backend.settings.effective_public_url.startswith("https://")


def set_session(backend: Backend, request: Request, response: Response, session: Session) -> None:
    value = _serializer(backend).dumps({"t": session.api_token, "c": session.csrf})
    response.set_cookie(
        SESSION_COOKIE, str(value), max_age=SESSION_SECONDS, path=COOKIE_PATH, httponly=True,
        samesite="strict", secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=_secure(request))


def login_csrf(request: Request) -> str:
    """The login form's double-submit token: the cookie's value if it has a sane one."""
    existing = request.cookies.get(LOGIN_COOKIE, "")
    if 20 <= len(existing) <= 64 and existing.replace("-", "").replace("_", "").isalnum():
        return existing
    return secrets.token_urlsafe(24)


def set_login_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE, value, max_age=LOGIN_SECONDS, path=COOKIE_PATH, httponly=True,
        samesite="strict", secure=_secure(request),
    )


def same_token(expected: str, given: object) -> bool:
    return isinstance(given, str) and bool(expected) and hmac.compare_digest(
        expected.encode(), given.encode()
    )
