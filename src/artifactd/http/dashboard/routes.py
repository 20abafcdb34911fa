"""The dashboard's route table: sign-in and static assets here, pages in ``views``."""

from __future__ import annotations

from importlib import resources

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from artifactd.errors import ArtifactdError
from artifactd.http.dashboard import events, merging, views
from artifactd.http.dashboard import session as sessions
from artifactd.http.dashboard.handling import error_page, read_form, redirect, view
from artifactd.http.dashboard.render import HEADERS, page, pygments_css
from artifactd.services.access import dashboard_sessions
from artifactd.services.backend import Backend

STATIC_TYPES = {"css": "text/css; charset=utf-8", "js": "text/javascript; charset=utf-8"}
_static: dict[str, bytes] = {}


def _safe_next(value: str | None) -> str:
    """Only a dashboard path is a place to go after sign-in (no open redirect)."""
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return "/dashboard"


async def login_form(request: Request) -> Response:
    csrf = sessions.login_csrf(request)
    response = page("login.html", principal=None, csrf=csrf, can_edit=False,
                    next=_safe_next(request.query_params.get("next")), message="")
    sessions.set_login_cookie(request, response, csrf)
    return response


async def login(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        form = await read_form(request)
    except (ArtifactdError, ValueError):
        return error_page(400, "Bad form", "The sign-in form could not be read.")
    expected = request.cookies.get(sessions.LOGIN_COOKIE, "")
    if not sessions.same_token(expected, form.get("csrf")):
        return error_page(403, "Form refused", "The sign-in form did not come from this page; "
                          "reload it and sign in again.")
    token = form.get("token", "").strip()
    try:
        if backend.meta.inline_ok:
            session = dashboard_sessions.sign_in(backend, token)
        else:
            session = await run_in_threadpool(dashboard_sessions.sign_in, backend, token)
    except ArtifactdError:
        return page("login.html", 401, principal=None, csrf=expected, can_edit=False,
                    next=_safe_next(form.get("next")),
                    message="That API token is not valid (unknown, revoked or mistyped).")
    response = redirect(_safe_next(form.get("next")))
    sessions.set_session(request, response, session)
    return response


async def logout(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    session = await run_in_threadpool(sessions.read_session, backend, request)
    if session is not None:
        try:
            form = await read_form(request)
        except (ArtifactdError, ValueError):
            form = {}
        if not sessions.same_token(session.csrf, form.get("csrf")):
            return error_page(403, "Form refused", "Sign-out needs this session's CSRF token.")
        # The row goes: the cookie, wherever a copy of it is, is no session any more.
        await run_in_threadpool(dashboard_sessions.sign_out, backend, session.id)
    signed_out = redirect("/dashboard/login")
    sessions.clear_session(request, signed_out)
    return signed_out


async def static(request: Request) -> Response:
    name = request.path_params["file"]
    if name == "pygments.css":
        body = _static.setdefault(name, pygments_css().encode())
    else:
        if name not in ("dashboard.css", "dashboard.js"):
            return error_page(404, "Not found", "No such asset.")
        if name not in _static:
            _static[name] = resources.files("artifactd.http.dashboard").joinpath("static", name).read_bytes()
        body = _static[name]
    kind = STATIC_TYPES[name.rsplit(".", 1)[1]]
    return Response(body, media_type=kind, headers={
        **HEADERS, "Cache-Control": "public, max-age=3600",
    })


async def root(_request: Request) -> Response:
    return redirect("/dashboard")


NS = "/dashboard/ns/{namespace}"
REPO = NS + "/r/{name}"
SUBS = "/dashboard/subscriptions"
SUB = SUBS + "/{subscription_id}"
routes: list[BaseRoute] = [
    Route("/", root, methods=["GET"]),
    Route("/dashboard/login", login_form, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard/static/{file}", static, methods=["GET"]),
    Route("/dashboard", view(views.namespaces), methods=["GET"]),
    Route("/dashboard/repos", view(views.create_in_new_namespace, write=True), methods=["POST"]),
    Route(NS, view(views.repo_list), methods=["GET"]),
    Route(NS + "/analytics", view(views.analytics_page), methods=["GET"]),
    Route(NS + "/repos", view(views.create_repo, write=True), methods=["POST"]),
    Route(NS + "/import", view(views.import_repo, write=True), methods=["POST"]),
    Route(REPO, view(views.repo_page), methods=["GET"]),
    Route(REPO + "/tree", view(views.tree_page), methods=["GET"]),
    Route(REPO + "/file", view(views.file_page), methods=["GET"]),
    Route(REPO + "/raw", view(views.raw_file), methods=["GET"]),
    Route(REPO + "/log", view(views.log_page), methods=["GET"]),
    Route(REPO + "/commit/{sha}", view(views.commit_page), methods=["GET"]),
    Route(REPO + "/refs", view(views.refs_page), methods=["GET"]),
    Route(REPO + "/analytics", view(views.analytics_page), methods=["GET"]),
    Route(REPO + "/tokens", view(views.tokens_page), methods=["GET"]),
    Route(REPO + "/tokens", view(views.mint_token, write=True), methods=["POST"]),
    Route(REPO + "/tokens/{token_id}/revoke", view(views.revoke_token, write=True), methods=["POST"]),
    Route(REPO + "/fork", view(views.fork_repo, write=True), methods=["POST"]),
    Route(REPO + "/delete", view(views.delete_repo, write=True), methods=["POST"]),
    Route(REPO + "/compare", view(merging.compare_page), methods=["GET"]),
    Route(REPO + "/merge", view(merging.merge_repo, write=True), methods=["POST"]),
    Route(SUBS, view(events.subscriptions_page), methods=["GET"]),
    Route(SUBS, view(events.create_subscription, write=True), methods=["POST"]),
    Route(SUB, view(events.subscription_page), methods=["GET"]),
    Route(SUB + "/pause", view(events.pause_subscription, write=True), methods=["POST"]),
    Route(SUB + "/resume", view(events.resume_subscription, write=True), methods=["POST"]),
    Route(SUB + "/redeliver", view(events.redeliver_event, write=True), methods=["POST"]),
    Route(SUB + "/delete", view(events.delete_subscription, write=True), methods=["POST"]),
]
