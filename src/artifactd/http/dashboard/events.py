"""Event subscriptions of the account and each one's webhook delivery log: the services of
the REST ``.../artifacts/subscriptions`` routes, with their decisions (docs/events.md)."""

from __future__ import annotations

from pydantic import ValidationError as PydanticValidationError
from starlette.responses import Response

from artifactd.errors import ValidationError
from artifactd.http.dashboard.handling import Ctx, redirect
from artifactd.models import CreateSubscriptionRequest, SubscriptionDestination, SubscriptionSource
from artifactd.services.events import subscriptions
from artifactd.storage.eventstore import SubscriptionRow

DELIVERIES_PER_PAGE = 50
BASE = "/dashboard/subscriptions"


def sub_url(row: SubscriptionRow) -> str:
    return f"{BASE}/{row.id}"


def _id(ctx: Ctx) -> str:
    raw = ctx.param("subscription_id")
    if len(raw) > 64 or not raw.isalnum():
        raise ValidationError("A subscription id is letters and digits", pointer="/subscription_id")
    return raw


async def subscriptions_page(ctx: Ctx, created: subscriptions.Created | None = None,
                             status: int = 200) -> Response:
    rows = await ctx.db(subscriptions.list_all, ctx.backend, ctx.account_id)
    return ctx.render("subscriptions.html", status, subs=rows, created=created, sub_url=sub_url)


async def create_subscription(ctx: Ctx) -> Response:
    form = ctx.form
    source_type = "artifacts.repo" if form.get("repo_name") else "artifacts"
    types = [t.strip() for t in form.get("event_types", "").split(",") if t.strip()]
    try:
        body = CreateSubscriptionRequest(
            name=form.get("name", ""),
            source=SubscriptionSource(type=source_type, namespace=form.get("namespace") or None,
                                      repo_name=form.get("repo_name") or None),
            event_types=types or None,
            destination=SubscriptionDestination(type=form.get("destination", ""),
                                                url=form.get("url") or None),
        )
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = "/".join(str(p) for p in first["loc"])
        raise ValidationError(f"Invalid {field}: {first['msg']}", pointer=f"/{field}") from None
    created = await ctx.db(subscriptions.create, ctx.backend, ctx.account_id, body)
    # The webhook's signing secret is shown once, in this answer only.
    return await subscriptions_page(ctx, created, 201)


async def subscription_page(ctx: Ctx) -> Response:
    sub = await ctx.db(subscriptions.get, ctx.backend, ctx.account_id, _id(ctx))
    before_text = ctx.arg("before")
    if before_text and (not before_text.isdigit() or len(before_text) > 18):
        raise ValidationError("before must be a delivery id", pointer="/before")
    rows = await ctx.db(subscriptions.deliveries, ctx.backend, ctx.account_id, sub.id,
                        DELIVERIES_PER_PAGE, int(before_text) if before_text else None)
    older = str(rows[-1].id) if len(rows) == DELIVERIES_PER_PAGE else ""
    return ctx.render("subscription.html", sub=sub, deliveries=rows, older=older,
                      cursor=subscriptions.encode_cursor(sub.cursor_seq), url=sub_url(sub))


async def pause_subscription(ctx: Ctx) -> Response:
    sub = await ctx.db(subscriptions.set_state, ctx.backend, ctx.account_id, _id(ctx),
                       subscriptions.PAUSED)
    return redirect(sub_url(sub))


async def resume_subscription(ctx: Ctx) -> Response:
    sub = await ctx.db(subscriptions.set_state, ctx.backend, ctx.account_id, _id(ctx),
                       subscriptions.ACTIVE)
    return redirect(sub_url(sub))


async def redeliver_event(ctx: Ctx) -> Response:
    event_id = ctx.form.get("event_id", "")
    if not event_id or len(event_id) > 64:
        raise ValidationError("event_id names the event to send again", pointer="/event_id")
    await ctx.db(subscriptions.redeliver, ctx.backend, ctx.account_id, _id(ctx),
                 event_id=event_id, start=None, end=None)
    return redirect(f"{BASE}/{_id(ctx)}")


async def delete_subscription(ctx: Ctx) -> Response:
    sub = await ctx.db(subscriptions.get, ctx.backend, ctx.account_id, _id(ctx))
    if ctx.form.get("confirm") != sub.name:
        raise ValidationError("To delete the subscription, type its name exactly; nothing was "
                              "deleted", pointer="/confirm")
    await ctx.db(subscriptions.delete, ctx.backend, ctx.account_id, sub.id)
    return redirect(BASE)
