"""kill -9 of the server mid-push, mid-fork, mid-import and mid-maintenance, a few times
each, with the invariants checked after every restart (see ``tests/faults.py``; the long
form is ``python -m bench --only faults``)."""

from __future__ import annotations

from collections.abc import Iterator

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


# Not strict: whether a kill lands in the window (git moved the ref, the server has not
# recorded the push yet) is up to timing, so this fails in most runs, not all (seen:
# "push: recorded 0, on disk 780980"). A push killed mid-pack can also leave its quarantine.
def test_kill_9_mid_push_keeps_recorded_size_in_step(rig: Rig) -> None:
    """After the kills above (or one mid-push kill when run alone), the recorded size of
    every repo is what its objects use on disk and no push left its quarantine behind."""
    if rig.kills == 0:
        rig.kill_mid_push(100, in_quarantine=True)
        assert not rig.restart_and_check("push")
    assert not rig.quarantine_leftovers()
    assert not rig.sizes_disagree()
