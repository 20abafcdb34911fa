"""Dashboard cookies: the session cookie (a random id of a session the server keeps,
``services/access/dashboard_sessions.py``), the login form's CSRF cookie, and CSRF comparisons.

The session cookie holds no token and no signed data: only a random 256-bit id, whose hash
names a server-side row with the expiry, the CSRF token and the API token's id. A tampered,
expired, signed-out or unknown id is no session at all. Revoking the API token ends every
session made with it at once.

Each session has a random CSRF token, sent in a hidden field of every form and compared in
constant time on every POST. Before sign-in, the login form uses a double-submit token (a
random cookie that the form must repeat). Cookies are ``HttpOnly``, ``SameSite=Strict``,
``Path=/dashboard`` and ``Secure`` when the request came over https or ``public_url`` is https.
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

from artifactd.services.access import dashboard_sessions
from artifactd.services.access.dashboard_sessions import SESSION_SECONDS, Session
from artifactd.services.backend import Backend

SESSION_COOKIE = "artifactd_session"
LOGIN_COOKIE = "artifactd_login"
LOGIN_SECONDS = 3600
COOKIE_PATH = "/dashboard"


def session_id(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


def read_session(backend: Backend, request: Request) -> Session | None:
    """The request's live session, or None (none, tampered, expired, signed out, revoked)."""
    return dashboard_sessions.find(backend, session_id(request))


def _secure(request: Request) -> bool:
    """https here, or behind a TLS proxy whose address is the configured ``public_url``."""
    backend: Backend = request.app.state.backend
    return request.url.scheme == "https" or backend.settings.effective_public_url.startswith("https://")


def set_session(request: Request, response: Response, session: Session) -> None:
    response.set_cookie(
        SESSION_COOKIE, session.id, max_age=SESSION_SECONDS, path=COOKIE_PATH, httponly=True,
        samesite="strict", secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def clear_session(request: Request, response: Response) -> None:
    """Drop the request's session cookie, if it sent one: a request without it (another
    site's link or form, whose requests carry no SameSite=Strict cookie) must not sign the
    browser out."""
    if not session_id(request):
        return
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
