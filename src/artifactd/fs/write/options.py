"""How a mount writes and follows its branch: the ``daemon`` options passed to each mount."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_POLL_INTERVAL = 30.0
PENDING = "pending.json"  # in the overlay folder: a commit being pushed, {"commit", "base"}


@dataclass(frozen=True)
class MountOptions:
    poll_interval: float = DEFAULT_POLL_INTERVAL  # seconds between checks of the remote; 0: never
    autocommit_interval: float = 0.0  # seconds between automatic commits of the overlay; 0: never
    autocommit_on_unmount: bool = False
