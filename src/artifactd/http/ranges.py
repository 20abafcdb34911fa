"""HTTP conditional and range requests for byte responses (RFC 9110 sections 13 and 14).

Only a single ``bytes`` range is served. Anything else a client may send in ``Range`` (several
ranges, another unit, bad syntax) is ignored and the whole representation is sent with 200,
which RFC 9110 allows. A range that starts past the end is "not satisfiable" (416).
"""

from __future__ import annotations

import re
from typing import Literal

_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")

Unsatisfiable = Literal["unsatisfiable"]
UNSATISFIABLE: Unsatisfiable = "unsatisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int] | Unsatisfiable | None:
    """``(start, end)`` inclusive for one satisfiable range, ``UNSATISFIABLE``, or ``None`` (send all)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignore the header
    if start >= size:
        return UNSATISFIABLE
    return start, min(end, size - 1)


def etag_matches(header: str | None, etag: str, *, weak: bool = True) -> bool:
    """Does an ``If-None-Match`` (weak comparison) or ``If-Range`` (strong) header match?"""
    if not header:
        return False
    if header.strip() == "*":
        return weak
    for raw in header.split(","):
        tag = raw.strip()
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == etag:
            return True
    return False
