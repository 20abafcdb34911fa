"""The web dashboard at ``/dashboard``: server-rendered pages over the same services as the
REST routes (docs/dashboard.md). ``routes`` is mounted by the app; ``/`` redirects here."""

from __future__ import annotations

from artifactd.http.dashboard.routes import routes

__all__ = ["routes"]
