"""`artifactd mount` and `unmount` start without the SDK, httpx, pydantic or rich.

Those cost ~0.2 s of a one-shot mount's start-up (docs/mount.md, "Starting a mount"); the
other client commands import them when they first use them, and still do (test_cli*.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("httpx", "pydantic", "rich", "artifactd.client")

PROBE = """
import sys
from artifactd.cli import main
try:
    main([{command!r}, "--help"])
except SystemExit:
    pass
from artifactd.fs import oneshot  # what the command imports to run
heavy = {heavy!r}
print("loaded:", " ".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(heavy))))
"""


@pytest.mark.parametrize("command", ["mount", "unmount"])
def test_mount_commands_import_no_sdk_nor_rich(command: str) -> None:
    probe = PROBE.format(command=command, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=os.environ, check=True, timeout=60)
    assert "Mount" in done.stdout or "Unmount" in done.stdout  # the help was printed
    loaded = done.stdout.strip().splitlines()[-1]
    assert loaded.startswith("loaded:"), done.stdout
    assert loaded.split()[1:] == [], loaded
