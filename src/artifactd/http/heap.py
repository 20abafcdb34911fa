"""Keep Python's cyclic garbage collector out of the request tail (issue 12).

A started server holds some 160,000 objects that live as long as the process (modules,
routes, SQLAlchemy tables, pydantic models). The collector's oldest generation walks every
one of them each time it runs: 100-600 ms on a busy 2-core machine, one request in a few
thousand paying all of it. ``gc.freeze()`` once start-up is done moves them to a permanent
generation that no collection scans, so a full collection walks only what requests and
caches created since. Nothing is leaked: refcounting still frees frozen objects that die,
only cycles among them stay (start-up objects are not expected to die).

The youngest generation's threshold is raised from 700 allocations: a request allocates
a few thousand objects that refcounting frees, and each young collection (a fraction of
a millisecond) only finds them alive mid-request and promotes them, which makes the older
generations fill, and run, sooner.
"""

from __future__ import annotations

import gc

from artifactd.observability import GC_FROZEN_OBJECTS

# Allocations (net of frees) between young collections; the older two keep their defaults.
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Call once start-up is done, before the first request is served."""
    gc.collect()
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    GC_FROZEN_OBJECTS.set(gc.get_freeze_count())
