"""The ``/v1/api`` base path of Cloudflare's newer REST reference, beside ``/client/v4``.

``/v1/api/namespaces/{namespace}/...`` names no account: the API token says which one. The
routes are derived from the ``/client/v4/accounts/{account_id}/artifacts`` table, so both
base paths run the very same endpoint functions (``api.endpoint`` and ``content.routed``
authenticate against the path's account when there is one, and take the token's otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Route

from artifactd.http.control import PREFIX

V1_PREFIX = "/v1/api"


def derive(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """The ``/v1/api`` twin of every route under the v4 account prefix, same endpoint."""
    derived: list[BaseRoute] = []
    for route in routes:
        if isinstance(route, Route) and route.path.startswith(PREFIX + "/"):
            derived.append(Route(
                V1_PREFIX + route.path[len(PREFIX):], route.endpoint,
                methods=sorted(route.methods or ()), name=route.name,
            ))
    return derived
