"""The git slot pool on its own: the total cap, the per-repo share, the queue timeout."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from artifactd.services.git.git_slots import SlotPool, SlotsBusy


async def hold(pool: SlotPool, repo: str | None, entered: asyncio.Event, release: asyncio.Event,
               timeout: float = 5.0) -> None:
    async with pool.slot(repo, timeout):
        entered.set()
        await release.wait()


def test_one_repo_cannot_take_every_slot() -> None:
    async def scenario() -> None:
        pool = SlotPool(total=3, per_repo=1)
        release = asyncio.Event()
        first = asyncio.Event()
        holder = asyncio.create_task(hold(pool, "a", first, release))
        await first.wait()
        # A second request for repo "a" waits for a's share and gives up...
        with pytest.raises(SlotsBusy):
            async with pool.slot("a", 0.05):
                pass
        # ...while other repos (and requests without a repo) still get slots.
        async with pool.slot("b", 0.05), pool.slot(None, 0.05):
            pass
        release.set()
        await holder
        async with pool.slot("a", 0.05):  # the share came back
            pass

    asyncio.run(scenario())


def test_total_cap_and_cleanup() -> None:
    async def scenario() -> None:
        pool = SlotPool(total=2, per_repo=2)
        release = asyncio.Event()
        entered = [asyncio.Event(), asyncio.Event()]
        holders = [asyncio.create_task(hold(pool, f"r{n}", entered[n], release)) for n in range(2)]
        for event in entered:
            await event.wait()
        with pytest.raises(SlotsBusy):
            async with pool.slot("r3", 0.05):
                pass
        # A waiter that is cancelled (its client went away) gives its place back.
        waiter = asyncio.create_task(hold(pool, "r0", asyncio.Event(), release))
        await asyncio.sleep(0)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        release.set()
        await asyncio.gather(*holders)
        assert pool._shares == {}  # no per-repo state left for repos nobody is using

    asyncio.run(scenario())
