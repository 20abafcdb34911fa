"""``POST /client/v4/graphql``: the spec's ``artifactsEventsAdaptiveGroups`` analytics dataset.

Built on graphql-core (the reference implementation). Cost is bounded before execution:
the query text is capped at ``MAX_QUERY_CHARS``, its nesting at ``MAX_DEPTH``, and
``limit`` at 1..10,000 groups. ``accountTag`` must be the account of the caller's API token.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLResolveInfo,
    InlineFragmentNode,
    SelectionSetNode,
    build_schema,
    execute,
    parse,
    validate,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from artifactd.errors import ArtifactdError, AuthenticationError, PermissionDenied
from artifactd.http.api import read_body
from artifactd.http.apidoc import Operation, describe
from artifactd.http.jsonbody import load_json
from artifactd.http.results import GraphQLRequest, GraphQLResponse
from artifactd.redact import redact
from artifactd.services.access import accounts
from artifactd.services.backend import Backend
from artifactd.services.events import analytics
from artifactd.storage.events import DIMENSIONS, TIME_DIMENSIONS

Info = GraphQLResolveInfo[dict[str, Any]]  # resolvers' info; the context is a dict

MAX_QUERY_CHARS = 32 * 1024
MAX_DEPTH = 12  # the deepest spec query nests 6 levels


def _sdl() -> str:
    def time_type(d: str) -> str:
        return "Date" if d == "date" else ("Time" if d in TIME_DIMENSIONS else "String")

    filter_fields = []
    for d in DIMENSIONS:
        filter_fields.append(f"  {d}: {time_type(d)}")
        if d in TIME_DIMENSIONS:
            filter_fields += [f"  {d}{suffix}: {time_type(d)}" for suffix in ("_geq", "_gt", "_leq", "_lt")]
    order_values = [f"{k}_{o}" for k in ("count", "sum_durationMs", "avg_durationMs", *DIMENSIONS)
                    for o in ("ASC", "DESC")]
    quantiles = "\n".join(f"  durationMs{k}: Float!" for k in analytics.QUANTILES)
    dimensions = "\n".join(f"  {d}: {time_type(d)}!" for d in DIMENSIONS)
    return f"""
scalar Time
scalar Date
type Query {{ viewer: Viewer! }}
type Viewer {{ accounts(filter: AccountFilter!): [Account!]! }}
input AccountFilter {{ accountTag: String! }}
type Account {{
  artifactsEventsAdaptiveGroups(
    limit: Int!, filter: ArtifactsEventsFilter, orderBy: [ArtifactsEventsOrderBy!]
  ): [ArtifactsEventsGroup!]!
}}
input ArtifactsEventsFilter {{
  AND: [ArtifactsEventsFilter!]
{chr(10).join(filter_fields)}
}}
enum ArtifactsEventsOrderBy {{ {" ".join(order_values)} }}
type ArtifactsEventsGroup {{
  count: Int!
  sum: DurationSum!
  avg: DurationAvg!
  quantiles: DurationQuantiles!
  dimensions: ArtifactsEventsDimensions!
}}
type DurationSum {{ durationMs: Float! }}
type DurationAvg {{ durationMs: Float! }}
type DurationQuantiles {{
{quantiles}
}}
type ArtifactsEventsDimensions {{
{dimensions}
}}
"""


SCHEMA = build_schema(_sdl())


def _depth(selection_set: SelectionSetNode | None, document: DocumentNode, seen: frozenset[str]) -> int:
    if selection_set is None:
        return 0
    deepest = 0
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            deepest = max(deepest, 1 + _depth(selection.selection_set, document, seen))
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, document, seen))
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in seen:
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                deepest = max(deepest, _depth(
                    fragment.selection_set, document, seen | {selection.name.value}))
    return deepest


def _subfields(info: Info, path: tuple[str, ...]) -> set[str]:
    """Names selected under ``path`` (e.g. ("dimensions",)) of the current field."""
    def walk(selection_set: SelectionSetNode | None, remaining: tuple[str, ...]) -> set[str]:
        names: set[str] = set()
        if selection_set is None:
            return names
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not remaining:
                    names.add(selection.name.value)
                elif selection.name.value == remaining[0]:
                    names |= walk(selection.selection_set, remaining[1:])
            elif isinstance(selection, InlineFragmentNode):
                names |= walk(selection.selection_set, remaining)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = info.fragments.get(selection.name.value)
                if fragment is not None:
                    names |= walk(fragment.selection_set, remaining)
        return names

    result: set[str] = set()
    for node in info.field_nodes:
        result |= walk(node.selection_set, path)
    return result


def _filter_pairs(raw: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """Every (field, value) of a filter, with nested ``AND`` lists flattened (all AND-ed)."""
    pairs: list[tuple[str, Any]] = []
    pending = [raw or {}]
    while pending:
        current = pending.pop()
        for key, value in current.items():
            if key == "AND":
                pending.extend(value or [])
            else:
                pairs.append((key, value))
    return pairs


def resolve_accounts(_root: Any, info: Info, filter: dict[str, str]) -> list[dict[str, str]]:
    principal: accounts.Principal = info.context["principal"]
    if filter["accountTag"] != principal.account_id:
        raise GraphQLError("Not authorized for this account: accountTag must be your API token's account")
    return [{"accountTag": principal.account_id}]


def resolve_groups(
    account: dict[str, str], info: Info, limit: int,
    filter: dict[str, Any] | None = None, orderBy: list[str] | None = None,
) -> list[dict[str, Any]]:
    backend: Backend = info.context["backend"]
    try:
        conditions = [c for key, value in _filter_pairs(filter)
                      for c in analytics.parse_filter({key: value})]
    except ArtifactdError as exc:
        raise GraphQLError(exc.message) from None
    query = analytics.GroupsQuery(
        account_id=account["accountTag"],
        conditions=conditions,
        dimensions=[d for d in DIMENSIONS if d in _subfields(info, ("dimensions",))],
        order=analytics.parse_order(orderBy or []),  # enum values: validated by the schema
        limit=limit,
        want_quantiles=bool(_subfields(info, ("quantiles",))),
    )
    try:
        rows = analytics.query_groups(backend, query)
    except ArtifactdError as exc:
        raise GraphQLError(exc.message) from None
    return [{
        "count": row["count"],
        "sum": {"durationMs": row["sum"]},
        "avg": {"durationMs": row["avg"]},
        "quantiles": row.get("quantiles", {}),
        "dimensions": row["dimensions"],
    } for row in rows]


SCHEMA.query_type.fields["viewer"].resolve = lambda *_: {}  # type: ignore[union-attr]
SCHEMA.get_type("Viewer").fields["accounts"].resolve = resolve_accounts  # type: ignore[union-attr]
SCHEMA.get_type("Account").fields["artifactsEventsAdaptiveGroups"].resolve = resolve_groups  # type: ignore[union-attr]


def _errors(status: int, *messages: str) -> JSONResponse:
    return JSONResponse({"data": None, "errors": [{"message": redact(m)} for m in messages]},
                        status_code=status)


def run_query(backend: Backend, principal: accounts.Principal, body: dict[str, Any]) -> JSONResponse:
    source = body.get("query")
    if not isinstance(source, str) or not source.strip():
        return _errors(400, "The request must have a 'query' string")
    if len(source) > MAX_QUERY_CHARS:
        return _errors(400, f"Query is longer than {MAX_QUERY_CHARS} characters")
    variables = body.get("variables") or {}
    if not isinstance(variables, dict):
        return _errors(400, "'variables' must be an object")
    try:
        document = parse(source, max_tokens=5000)
    except GraphQLError as exc:
        return _errors(400, exc.message)
    for definition in document.definitions:
        if _depth(getattr(definition, "selection_set", None), document, frozenset()) > MAX_DEPTH:
            return _errors(400, f"Query is nested deeper than {MAX_DEPTH} levels")
    problems = validate(SCHEMA, document)
    if problems:
        return _errors(400, *[p.message for p in problems[:20]])
    result = execute(
        SCHEMA, document, variable_values=variables,
        operation_name=body.get("operationName") if isinstance(body.get("operationName"), str) else None,
        context_value={"backend": backend, "principal": principal},
    )
    payload: dict[str, Any] = {"data": result.data}  # type: ignore[union-attr]
    if result.errors:  # type: ignore[union-attr]
        payload["errors"] = [  # graphql-core messages quote the query: redact what they echo
            {**e.formatted, "message": redact(e.message)} for e in result.errors  # type: ignore[union-attr]
        ]
    return JSONResponse(payload)


async def graphql_endpoint(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        raw = await read_body(request, backend.settings.max_body_bytes)
    except ArtifactdError as exc:
        return _errors(413, exc.message)
    authorization = request.headers.get("authorization")

    def work() -> Response:
        try:
            principal = accounts.authenticate_any(backend, authorization)
        except (AuthenticationError, PermissionDenied) as exc:
            return _errors(401, exc.message)
        try:
            body = load_json(raw)
        except ArtifactdError as exc:
            return _errors(400, exc.message)
        if not isinstance(body, dict):
            return _errors(400, "Request body must be a JSON object")
        return run_query(backend, principal, body)

    return await run_in_threadpool(work)


routes = [Route("/client/v4/graphql", describe(graphql_endpoint, Operation(
    "Query the analytics dataset (GraphQL)", "Analytics", request=GraphQLRequest,
    response=GraphQLResponse, enveloped=False,
    description="The spec's `artifactsEventsAdaptiveGroups` dataset; `accountTag` must be the "
                "API token's account. Errors are GraphQL `errors`, not the v4 envelope.",
)), methods=["POST"])]
