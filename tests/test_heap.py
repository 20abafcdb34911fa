"""A started server has frozen its start-up heap out of the garbage collector's reach, so
that full collections do not walk it in the middle of a request (issue 12, http/heap.py)."""

from __future__ import annotations

from tests.harness import Server


def test_startup_heap_is_frozen(sqlite_server: Server) -> None:
    # Every worker settles before it serves, so the first scrape already shows it.
    assert sqlite_server.metric("artifactd_gc_frozen_objects") > 10_000
