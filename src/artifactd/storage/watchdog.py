"""A small supervisor process that ends a server process's git children when it dies.

git runs in sessions of its own (so that a client's hang-up can kill its whole group), so
nothing of the kernel's ties it to the server: after a ``kill -9`` of the server an
import's fetch would go on unsupervised, past its time limit and size cap, into a staging
directory nobody watches. ``PR_SET_PDEATHSIG`` set in each child was the other way, but it
needs ``preexec_fn`` (which turns ``subprocess``'s vfork into a full fork of the server and
is unsafe with threads), it fires when the *thread* that forked dies (a pooled thread
ending would kill a healthy git), and it does not reach the helpers git starts itself.

So each server process starts one watchdog: ``python -m artifactd.storage.watchdog
<data_dir> <owner token>``, with a pipe on its stdin whose only writer is the server. The
watchdog blocks reading it; end of file means the server is gone (crash, ``kill -9`` or a
clean exit, which closes the pipe last), and the watchdog then SIGKILLs every process
marked with that owner (see ``orphans``), git's own helpers included, and exits. It runs in
a session of its own and ignores SIGINT, SIGTERM and SIGHUP so that a signal sent to the
server's group cannot take it away before the server's children. What it cannot survive
(a SIGKILL of everything at once) start-up reclaims: ``orphans.end_processes`` for owners
whose lock is free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from artifactd.storage.orphans import end_processes


class Watchdog:
    """The server side: start the watchdog, and let it go at shutdown."""

    def __init__(self, data_dir: Path, owner: str):
        read_end, self._write_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "artifactd.storage.watchdog", str(data_dir), owner],
                stdin=read_end, stdout=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        finally:
            os.close(read_end)
        os.set_inheritable(self._write_end, False)

    def stop(self, timeout: float = 10.0) -> None:
        """Close the pipe: the watchdog ends what is left of our git processes and exits."""
        if self._write_end >= 0:
            os.close(self._write_end)
            self._write_end = -1
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main(argv: list[str]) -> int:
    data_dir, owner = Path(argv[0]), argv[1]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass  # the server never writes; anything read is ignored
    end_processes(data_dir, lambda token: token == owner)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
