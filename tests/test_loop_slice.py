"""Each worker's event loop thread runs with a short CPU slice, and only that thread: the
thread pool and the processes it starts keep the kernel's default (issue 12,
``artifactd.http.loop_slice``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from artifactd.config import Settings, load_settings
from artifactd.errors import ConfigError
from artifactd.http import loop_slice
from tests.gitutil import create_repo
from tests.harness import start_server

DEFAULT_SLICE_US = Settings().loop_slice_us


def _kernel_takes_custom_slices() -> bool:
    """Whether this kernel honours a custom slice (Linux 6.12 and later), tried in a thread of
    the test process that ends right after."""
    answer: list[bool] = []

    def probe() -> None:
        answer.append(loop_slice.shorten(500) and loop_slice.slice_ns() == 500_000)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return answer[0]


needs_custom_slices = pytest.mark.skipif(
    not _kernel_takes_custom_slices(),
    reason="this kernel does not take a custom slice (Linux 6.12 and later do)")


def _slices(pid: int) -> dict[int, int]:
    """Every live thread of ``pid``: its slice in nanoseconds (a thread that ended between
    the listing and the read, as idle pool threads do, is left out)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        value = loop_slice.slice_ns(int(task.name))
        if value is not None:
            found[int(task.name)] = value
    return found


@needs_custom_slices
def test_loop_thread_alone_has_the_short_slice(tmp_path: Path, unique_name: str) -> None:
    server = start_server(tmp_path / "data")
    try:
        assert server.process is not None
        # A fork runs in the thread pool, so the pool has a thread started by the loop.
        parent = create_repo(server, f"{unique_name}-p")
        with server.client() as c:
            assert c.post(f"/repos/{parent.name}/fork",
                          json={"name": f"{unique_name}-f"}).status_code == 200
        slices = _slices(server.process.pid)
        assert slices.pop(server.process.pid) == DEFAULT_SLICE_US * 1000  # the loop thread
        assert slices, "the worker has no other thread"
        assert all(s != DEFAULT_SLICE_US * 1000 for s in slices.values()), slices
    finally:
        server.stop()


@needs_custom_slices
def test_zero_leaves_the_kernel_default(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", extra_env={"ARTIFACTD_LOOP_SLICE_US": "0"})
    try:
        assert server.process is not None
        assert loop_slice.slice_ns(server.process.pid) != DEFAULT_SLICE_US * 1000
    finally:
        server.stop()


@pytest.mark.parametrize("bad", ["-1", "99", "100001"])
def test_loop_slice_out_of_range_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="loop_slice_us"):
        load_settings(env={"ARTIFACTD_LOOP_SLICE_US": bad})
