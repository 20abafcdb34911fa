"""Liveness and readiness: what a load balancer asks before it sends traffic.

Readiness runs four cheap checks (one short SQL query, one file created and removed, a
``PATH`` lookup) and reports each by name, so an operator sees which one failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from artifactd.services.backend import Backend
from artifactd.storage import probes

CHECKS = ("database", "migrations", "data_dir", "git")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str | None = None


def readiness(backend: Backend) -> list[Check]:
    checks: list[Check] = []
    try:
        current = probes.schema_revision(backend.meta.engine)
    except Exception as exc:  # any driver error means "not reachable"; the type is the detail
        checks.append(Check("database", False, f"unreachable ({type(exc).__name__})"))
        checks.append(Check("migrations", False, "unknown: the database is unreachable"))
    else:
        checks.append(Check("database", True))
        head = probes.head_revision()
        if current == head:
            checks.append(Check("migrations", True))
        else:
            # Behind: a restart migrates it. Ahead: a newer server migrated the shared database.
            checks.append(Check("migrations", False,
                                f"database schema at {current}, this server expects {head}"))
    if probes.writable(backend.repos.tmp_root):
        checks.append(Check("data_dir", True))
    else:
        checks.append(Check("data_dir", False, "the data directory is not writable"))
    if probes.git_binary() is not None:
        checks.append(Check("git", True))
    else:
        checks.append(Check("git", False, "no git executable on PATH"))
    return checks
