"""How every dashboard request is handled: session, API token, CSRF, permission, errors.

A view is ``async (Ctx) -> Response``. ``view`` wraps it: a request without a valid session
is sent to the sign-in page (a GET) or refused (a POST); the session row is read with its
API token's row, so a revoked token is no session (``services/access/dashboard_sessions.py``);
every POST must carry the session's CSRF token in its ``csrf`` field and, when ``write``, a
token with edit permission. Domain
errors become an error page with the REST route's status and message.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from artifactd.errors import (
    ArtifactdError,
    Code,
    PayloadTooLarge,
    PermissionDenied,
    ValidationError,
)
from artifactd.http.dashboard import session as sessions
from artifactd.http.dashboard.render import HEADERS, page
from artifactd.http.errors import status_for
from artifactd.services.access import accounts
from artifactd.services.access.accounts import Principal
from artifactd.services.access.dashboard_sessions import Session
from artifactd.services.backend import Backend

log = logging.getLogger("artifactd.dashboard")
MAX_FORM_BYTES = 64 << 10  # every dashboard form is a few short fields
MAX_FORM_FIELDS = 20
T = TypeVar("T")


@dataclass
class Ctx:
    request: Request
    backend: Backend
    principal: Principal
    session: Session
    form: dict[str, str]

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    @property
    def can_edit(self) -> bool:
        return self.principal.permission == "edit"

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    def arg(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking service call: inline on SQLite (as the REST routes do), else in a thread."""
        if self.backend.meta.inline_ok:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    def render(self, template: str, status: int = 200, **context: Any) -> Response:
        return page(template, status, principal=self.principal, csrf=self.session.csrf,
                    can_edit=self.can_edit, **context)


View = Callable[[Ctx], Awaitable[Response]]


def error_page(status: int, title: str, message: str, principal: Principal | None = None,
               csrf: str = "") -> Response:
    return page("error.html", status, title=title, message=message, principal=principal,
                csrf=csrf, can_edit=False)


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303, headers=HEADERS)


async def read_form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise ValidationError("Forms must be sent as application/x-www-form-urlencoded",
                              code=Code.UNSUPPORTED_MEDIA_TYPE)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"A dashboard form is at most {MAX_FORM_BYTES} bytes")
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True,
                      max_num_fields=MAX_FORM_FIELDS)
    return dict(pairs)


def signed_out(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    after = "?next=" + quote(target, safe="") if target != "/dashboard" else ""
    response = redirect("/dashboard/login" + after)
    sessions.clear_session(request, response)
    return response


def view(handler: View, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        backend: Backend = request.app.state.backend
        if backend.meta.inline_ok:
            session = sessions.read_session(backend, request)
        else:
            session = await run_in_threadpool(sessions.read_session, backend, request)
        if session is None:
            if request.method == "GET":
                return signed_out(request)
            refused = error_page(403, "Not signed in", "Your session is missing, expired or "
                                 "invalid: sign in again. Nothing was changed.")
            sessions.clear_session(request, refused)
            return refused
        form: dict[str, str] = {}
        if request.method == "POST":
            try:
                form = await read_form(request)
            except ValueError:
                return error_page(400, "Bad form", "The form has too many fields.")
            except ArtifactdError as exc:
                return error_page(status_for(exc), "Request refused", exc.message)
        principal = session.principal
        ctx = Ctx(request, backend, principal, session, form)
        try:
            if request.method == "POST":
                if not sessions.same_token(session.csrf, form.get("csrf")):
                    return error_page(403, "Form refused",
                                      "This form did not carry this session's CSRF token; "
                                      "nothing was changed. Reload the page and try again.",
                                      principal, session.csrf)
                if write:
                    accounts.require_edit(principal)
            return await handler(ctx)
        except PermissionDenied as exc:
            return error_page(403, "Not allowed", exc.message, principal, session.csrf)
        except ArtifactdError as exc:
            status = status_for(exc)
            title = "Not found" if status == 404 else "Request refused"
            return error_page(status, title, exc.message, principal, session.csrf)

    run.__name__ = handler.__name__
    return run


__all__ = ["Ctx", "error_page", "redirect", "view"]
