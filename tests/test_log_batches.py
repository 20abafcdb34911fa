"""The background log writer (artifactd.logs.BackgroundStderrHandler) writes queued lines in
batches without being woken for each INFO line: every line still comes out, in order, a
warning brings the queued ones out with it, and closing writes the rest."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable

import pytest

from artifactd.logs import BackgroundStderrHandler


def _record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("artifactd.test", level, __file__, 1, message, None, None)


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        time.sleep(0.01)


def test_lines_come_out_in_order_and_all_of_them_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    handler = BackgroundStderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    try:
        for n in range(3):
            handler.handle(_record(logging.INFO, f"info {n}"))
        handler.handle(_record(logging.WARNING, "a warning"))
        _wait_for(lambda: "a warning" in out.getvalue())
        assert out.getvalue().splitlines() == [
            "INFO info 0", "INFO info 1", "INFO info 2", "WARNING a warning"]
        for n in range(3, 6):
            handler.handle(_record(logging.INFO, f"info {n}"))
        _wait_for(lambda: "info 5" in out.getvalue())  # no warning: the next batch
    finally:
        handler.handle(_record(logging.INFO, "last before close"))
        handler.close()
    assert out.getvalue().splitlines()[-4:] == [
        "INFO info 3", "INFO info 4", "INFO info 5", "INFO last before close"]
    handler.handle(_record(logging.INFO, "after close"))  # written directly
    assert out.getvalue().splitlines()[-1] == "INFO after close"
