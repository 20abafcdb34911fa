"""``artifactd subscription`` and ``artifactd events``: event subscriptions (docs/events.md)."""

from __future__ import annotations

import json
from typing import Any

import click

from artifactd.cli._app import Application, pass_app
from artifactd.cli.repo import JSON_HELP


@click.group()
def subscription() -> None:
    """Create, list and delete event subscriptions (webhooks and pull queues)."""


@subscription.command()
@click.argument("name")
@click.option("--repo", default=None, help="Only this repo's events (pushed, cloned, fetched, "
              "token.*); without it, the account's (created, deleted, forked, imported).")
@click.option("--all-namespaces", is_flag=True,
              help="Account events of every namespace, not only the configured one.")
@click.option("--webhook", "url", default=None, metavar="URL",
              help="Deliver by signed POSTs to URL; without it, a pull queue.")
@click.option("--type", "types", multiple=True, metavar="TYPE",
              help="An event type (repeatable), e.g. cf.artifacts.repo.pushed; default all.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def create(app: Application, name: str, repo: str | None, all_namespaces: bool, url: str | None,
           types: tuple[str, ...], as_json: bool) -> None:
    """Create a subscription; a webhook's signing secret is printed this once.

    \b
    Examples:
      artifactd subscription create pushes --repo starter-repo --webhook https://hooks.example.com/a
      artifactd subscription create feed
    """
    source: dict[str, Any] = {"type": "artifacts.repo" if repo else "artifacts"}
    if repo or not all_namespaces:
        source["namespace"] = app.namespace
    if repo:
        source["repo_name"] = repo
    destination: dict[str, Any] = {"type": "webhook", "url": url} if url else {"type": "queue"}
    created = app.client.create_subscription(name, source=source, destination=destination,
                                             event_types=list(types) or None)
    if as_json:
        app.display_json(created)
        return
    click.echo(created["id"])
    if created.get("secret"):
        app.display_info(f"signing secret (shown once): {created['secret']}")


@subscription.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + " (a list of subscriptions)")
@pass_app
def list_(app: Application, as_json: bool) -> None:
    """List the account's subscriptions."""
    rows = app.client.list_subscriptions()
    if as_json:
        app.display_json(rows)
        return
    app.display_table(["id", "name", "source", "destination", "state"], [
        [r["id"], r["name"],
         "/".join(x for x in (r["source"]["namespace"], r["source"]["repo_name"]) if x) or "*",
         r["destination"]["url"] or "queue", r["state"]] for r in rows])


@subscription.command()
@click.argument("subscription_id")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@pass_app
def delete(app: Application, subscription_id: str, as_json: bool) -> None:
    """Delete a subscription and its delivery log."""
    deleted = app.client.delete_subscription(subscription_id)
    if as_json:
        app.display_json(deleted)
        return
    app.display_info(f"deleted subscription {deleted['id']}")


@click.group()
def events() -> None:
    """Read a queue subscription's events."""


@events.command()
@click.argument("subscription_id")
@click.option("--cursor", default=None, help="Start after this cursor (default: the last "
              "acknowledged).")
@click.option("--ack", is_flag=True, help="Acknowledge the events as they are printed.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep waiting for new events.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each event as one JSON line (the published event shape).")
@pass_app
def tail(app: Application, subscription_id: str, cursor: str | None, ack: bool, follow: bool,
         as_json: bool) -> None:
    """Print a queue's events as they arrive (long polls).

    \b
    Examples:
      artifactd events tail 0f4c... --json | jq .type
      artifactd events tail 0f4c... --no-follow --ack
    """
    client = app.client
    while True:
        page = client.events(subscription_id, cursor=cursor, limit=100,
                             wait=20 if follow else 0)
        for event in page["events"]:
            if as_json:
                click.echo(json.dumps(event, separators=(",", ":")))
            else:
                source = event["source"]
                click.echo(f"{event['metadata']['eventTimestamp']}  {event['type']}  "
                           f"{source['namespace']}/{source['repoName']}  {event['id']}")
        cursor = page["cursor"] or cursor
        if ack and page["events"] and cursor:
            client.ack_events(subscription_id, cursor)
        if not follow and not page["events"]:
            return
