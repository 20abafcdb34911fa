"""Git process slots of one worker: a total cap, and a share no single repo may exceed.

Each git exchange holds a slot while its git process runs. Without a per-repo share, one
client with one repo token could hold every slot (slow requests, or just many of them) and
every other repo's clients would queue and then get 503. A request first takes one of its
repo's ``per_repo`` places, then one of the ``total`` slots; both waits together are bounded
by the queue timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class SlotsBusy(Exception):
    """No slot came free within the queue timeout."""


class _RepoShare:
    def __init__(self, places: int):
        self.places = asyncio.Semaphore(places)
        self.users = 0  # requests holding or waiting for a place


class SlotPool:
    def __init__(self, total: int, per_repo: int):
        self._total = asyncio.Semaphore(max(1, total))
        self._per_repo = max(1, min(per_repo, total))
        self._shares: dict[str, _RepoShare] = {}

    @contextlib.asynccontextmanager
    async def slot(self, repo_id: str | None, timeout: float) -> AsyncIterator[None]:
        """Hold a slot for the body of the ``with``; raises ``SlotsBusy`` after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        share = None
        if repo_id is not None:
            share = self._shares.get(repo_id)
            if share is None:
                share = self._shares[repo_id] = _RepoShare(self._per_repo)
            share.users += 1
        try:
            if share is not None:
                await self._acquire(share.places, deadline - loop.time())
            try:
                await self._acquire(self._total, deadline - loop.time())
                try:
                    yield
                finally:
                    self._total.release()
            finally:
                if share is not None:
                    share.places.release()
        finally:
            if share is not None:
                share.users -= 1
                if share.users == 0 and self._shares.get(repo_id or "") is share:
                    del self._shares[repo_id or ""]

    @staticmethod
    async def _acquire(semaphore: asyncio.Semaphore, timeout: float) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # (the client went away) that arrives as the semaphore is acquired.
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await semaphore.acquire()
        except TimeoutError:
            raise SlotsBusy() from None
