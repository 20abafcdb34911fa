"""Time as integer microseconds, and its ISO-8601 rendering for the API."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_us() -> int:
    return time.time_ns() // 1000


def iso(us: int | None) -> str | None:
    """``2026-11-21T21:29:00.123456Z``, or ``None`` for a missing (or 0) time."""
    if not us:
        return None
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
