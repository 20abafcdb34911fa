"""kill -9 of the server mid-push, mid-fork, mid-import and mid-maintenance, a few times
each, with the invariants checked after every restart (see ``tests/faults.py``; the long
form is ``python -m bench --only faults``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import SCENARIOS, Rig

ITERATIONS = 2  # per scenario; the bench runs many more


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig.create(tmp_path_factory.mktemp("faults"))
    yield rig
    rig.close()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_kill_9_mid_operation_breaks_no_invariant(rig: Rig, scenario: str) -> None:
    for iteration in range(ITERATIONS):
        rig.inject(scenario, iteration)
        broken = rig.restart_and_check(scenario)
        assert not broken, broken


@pytest.mark.xfail(strict=True, reason="push lane: a push killed after its ref update but "
                   "before its size is recorded (or leaving its quarantine) drifts the repo's "
                   "recorded size from its objects on disk; remove once their reconcile merges")
def test_kill_9_mid_push_keeps_recorded_size_in_step(rig: Rig) -> None:
    for iteration in range(ITERATIONS):
        rig.inject("push", 100 + iteration)
        assert not rig.restart_and_check("push")
    assert not rig.sizes_disagree()
