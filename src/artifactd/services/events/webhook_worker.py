"""The delivery worker: webhook delivery in a process of its own, at a lower CPU priority.

Delivery in a thread of the server cost creates/s far more than its CPU time (issue 14:
41% fewer creates/s with one active subscription): it shares the GIL with the request path.
In a process of its own it shares nothing but the database, and at ``NICENESS`` the
scheduler gives requests the CPU first when the machine is busy, so that delivery gathers
larger batches instead of taking time from creates.

The server side (``DeliveryProcess``) starts ``python -m artifactd.services.events.webhook_worker``
with the server's settings in its environment and two pipes:

- its stdin, the server's only writer: one byte per outbox write wakes the loop (no
  polling while idle), another byte a subscription change; end of file means the server
  is gone (a clean stop, a crash or ``kill -9``), and the worker exits at once. It is
  also marked like the server's git children (``orphans``), so that the watchdog and
  start-up reclaim end it as well.
- its stdout: one JSON line per pass with what it counted (``PipeMeter``), applied to the
  server's metrics, where /metrics is served, and a line each time the worker starts or
  stops having a webhook subscription to serve. While it has none, the server writes no
  byte per outbox write (the loop would ignore it, and each is a system call on the
  request path and a wake-up of this process); it looks every ``POLL`` anyway.

A worker that dies is started again; what it had not recorded is delivered again
(at least once).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import IO

from artifactd.config import Settings
from artifactd.services.backend import Backend
from artifactd.services.events.webhooks import Meter, WebhookThread
from artifactd.storage.db import make_engine
from artifactd.storage.eventstore import EventStore

log = logging.getLogger("artifactd.events")

SETTINGS_VAR = "ARTIFACTD_WEBHOOK_WORKER_SETTINGS"
NICENESS = 10
RESTART_PAUSE = 1.0  # seconds before a worker that died is started again
EXIT_GRACE = 2.0  # seconds the loop gets to end after the server went away
LIFELINE_PAUSE = 0.005
# What the server sends down the pipe: an outbox write wakes a loop that has subscriptions
# to serve; a subscription change wakes it whatever it has.
OUTBOX_WRITTEN = b"\x01"
SUBSCRIPTION_CHANGED = b"\x02"


class PipeMeter(Meter):
    """Counts of one pass, sent to the server as one line."""

    def __init__(self, out: IO[str]):
        self.out = out
        self._serving: bool | None = None  # as last reported; None: not yet
        self._reset()

    def _reset(self) -> None:
        self.latencies: list[float] = []
        self.failures = 0
        self.retries = 0
        self.queue_depth: int | None = None

    def delivered(self, seconds: float) -> None:
        self.latencies.append(round(seconds, 6))

    def failed(self) -> None:
        self.failures += 1

    def retried(self) -> None:
        self.retries += 1

    def depth(self, events: int) -> None:
        self.queue_depth = events

    def serving(self, due: bool) -> None:
        if due != self._serving:
            self._serving = due
            self.out.write(json.dumps({"serving": due}) + "\n")
            self.out.flush()

    def flush(self) -> None:
        if self.latencies or self.failures or self.retries or self.queue_depth is not None:
            self.out.write(json.dumps({"delivered": self.latencies, "failed": self.failures,
                                       "retried": self.retries, "depth": self.queue_depth}) + "\n")
            self.out.flush()
            self._reset()


def apply_report(meter: Meter, line: str) -> bool | None:
    """One line of a worker's counts, onto the server's metrics (a bad line is ignored);
    returns the line's ``serving`` state, None when it has none."""
    try:
        report = json.loads(line)
        if "serving" in report:
            return bool(report["serving"])
        for seconds in report.get("delivered", ()):
            meter.delivered(float(seconds))
        for _ in range(int(report.get("failed", 0))):
            meter.failed()
        for _ in range(int(report.get("retried", 0))):
            meter.retried()
        if report.get("depth") is not None:
            meter.depth(int(report["depth"]))
    except (ValueError, TypeError, AttributeError):
        log.warning("ignored a malformed report of the webhook worker")
    return None


class DeliveryProcess:
    """The server side: start the worker, wake it, count its reports, restart it if it dies."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.meter = Meter()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        # Whether the worker has a webhook subscription to serve, as it last said; a new
        # worker is woken until it says otherwise.
        self._serving = True
        self._supervisor = threading.Thread(target=self._supervise, name="artifactd-webhook-worker",
                                            daemon=True)

    def start(self) -> None:
        self.backend.meta.outbox_listeners.append(self.wake)
        self.backend.extras["webhook_wake"] = self.wake_for_change
        self._spawn()
        self._supervisor.start()

    def _spawn(self) -> None:
        env = {**os.environ, **self.backend.git.marks,
               SETTINGS_VAR: json.dumps(dataclasses.asdict(self.backend.settings))}
        process = subprocess.Popen(
            [sys.executable, "-m", "artifactd.services.events.webhook_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert process.stdin is not None
        os.set_blocking(process.stdin.fileno(), False)
        with self._lock:
            self._serving = True
            self._process = process

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    @property
    def worker_serving(self) -> bool:
        """Whether outbox writes wake the worker (it last said it has a webhook to serve)."""
        return self._serving

    def wake(self, byte: bytes = OUTBOX_WRITTEN) -> None:
        """One byte down the pipe; a full pipe already holds wake-ups enough. An outbox
        write wakes only a worker that has a webhook subscription to serve."""
        if byte == OUTBOX_WRITTEN and not self._serving:
            return
        process = self._process
        if process is not None and process.stdin is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError, ValueError):
                os.write(process.stdin.fileno(), byte)

    def wake_for_change(self) -> None:
        """A subscription was made, resumed or changed, or a redelivery queued."""
        self.wake(SUBSCRIPTION_CHANGED)

    def _supervise(self) -> None:
        while True:
            process = self._process
            assert process is not None and process.stdout is not None
            for raw in process.stdout:
                serving = apply_report(self.meter, raw.decode(errors="replace"))
                if serving is not None:
                    self._serving = serving
            process.wait()
            if self._stopping.is_set():
                return
            log.warning("the webhook worker ended (exit status %s); starting it again",
                        process.returncode)
            if self._stopping.wait(RESTART_PAUSE):
                return
            try:
                self._spawn()
            except OSError:
                log.exception("could not start the webhook worker")
                return

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(ValueError):
            self.backend.meta.outbox_listeners.remove(self.wake)
        with self._lock:
            process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # end of file: the worker exits
        try:
            process.wait(EXIT_GRACE + 3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._supervisor.is_alive():
            self._supervisor.join(5)


def main() -> int:
    # Signals keep their default actions: start-up reclaim's SIGTERM ends a worker left by
    # a killed server at once (its own session keeps the terminal's signals away).
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    settings = Settings(**json.loads(os.environ[SETTINGS_VAR]))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The database only: the worker runs no git and owns no work area.
    engine = make_engine(settings.effective_database_url, background_checkpoints=True)
    loop = WebhookThread(settings, EventStore(engine), PipeMeter(sys.stdout))

    def lifeline() -> None:
        with contextlib.suppress(OSError):
            while data := os.read(0, 4096):
                loop.wake(changed=SUBSCRIPTION_CHANGED in data)
                # The loop gathers for COALESCE after a wake-up anyway: reading one byte a
                # create would only cost this process a thread switch each.
                time.sleep(LIFELINE_PAUSE)
        loop.stop_soon()
        time.sleep(EXIT_GRACE)  # an attempt in flight may take its time; the server is gone
        os._exit(0)

    threading.Thread(target=lifeline, name="lifeline", daemon=True).start()
    try:
        loop.run()
    finally:
        engine.dispose()
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
