"""The server wakes its webhook delivery worker on outbox writes only while the worker has a
webhook subscription to serve (issue 12: a byte per create, push and delete was a system call
on the request path and a wake-up of the worker, which ignored it)."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from artifactd.config import Settings
from artifactd.models import CreateSubscriptionRequest
from artifactd.services.backend import Backend
from artifactd.services.events import subscriptions
from artifactd.services.events.webhook_worker import DeliveryProcess
from tests.test_event_stream import wait_for


def _unread(process: DeliveryProcess) -> int:
    """Bytes written down the worker's stdin that it has not read (FIONREAD on the pipe)."""
    assert process._process is not None and process._process.stdin is not None
    count = array.array("i", [0])
    fcntl.ioctl(process._process.stdin.fileno(), termios.FIONREAD, count)
    return count[0]


def _state(task: Path) -> str:
    """A thread's state letter from /proc/<pid>/task/<tid>/stat (``T``: stopped)."""
    return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]


@contextmanager
def _stopped(process: DeliveryProcess) -> Iterator[int]:
    """The worker stopped (SIGSTOP) once it has read everything: what is written meanwhile
    stays in the pipe. Yields the unread bytes at the start (0)."""
    wait_for(lambda: _unread(process) == 0)
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        # kill() returns before every thread has stopped: a thread still running could read
        # what is written next.
        wait_for(lambda: all(_state(task) == "T" for task in Path(f"/proc/{pid}/task").iterdir()))
        yield _unread(process)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_outbox_writes_wake_the_worker_only_while_it_serves_a_webhook(tmp_path: Path) -> None:
    backend = Backend.open(Settings(data_dir=str(tmp_path / "data"),
                                    webhook_allow_hosts="127.0.0.1"))
    delivery = DeliveryProcess(backend)
    delivery.start()
    try:
        assert delivery.worker_serving  # a new worker is woken until it says otherwise
        wait_for(lambda: not delivery.worker_serving)  # no subscription at all
        with _stopped(delivery) as start:
            for _ in range(5):
                delivery.wake()  # what every outbox write calls
            assert _unread(delivery) == start
            delivery.wake_for_change()  # a subscription change always wakes it
            assert _unread(delivery) == start + 1
        subscriptions.create(backend, "a" * 32, CreateSubscriptionRequest.model_validate({
            "name": "hook", "source": {"type": "artifacts"},
            "destination": {"type": "webhook", "url": "http://127.0.0.1:9/hook"}}))
        wait_for(lambda: delivery.worker_serving)
        with _stopped(delivery) as start:
            for _ in range(3):
                delivery.wake()
            assert _unread(delivery) == start + 3
    finally:
        delivery.stop()
        backend.close()
