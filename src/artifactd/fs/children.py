"""Every child a mount starts dies with it: ``PR_SET_PDEATHSIG`` set between fork and exec.

Without it a SIGKILLed mount (or daemon) leaves its ``git clone`` running, an orphan
writing into a work directory nobody reads. The signal is SIGTERM, so git still removes
what it half wrote. The kernel sends it when the *thread* that started the child exits:
every caller here waits for its child on that thread (``subprocess.run``), or starts it
from a thread that lives as long as the child."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

# Resolved once here, not in the child: between fork and exec of a threaded process
# nothing may take the dynamic loader's lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def set_pdeathsig(signum: int = signal.SIGTERM) -> None:
    """This process gets ``signum`` when its parent (thread) dies."""
    _prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess``: the child dies with the process calling this."""
    parent = os.getpid()

    def preexec() -> None:
        set_pdeathsig()
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
