"""The ``artifact-fs`` entry point: ``add-repo`` to a running daemon without click (``handoff``),
every other command through the click commands (``commands``), loaded only then."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["add-repo"]:
        from artifactd.fs import handoff

        code = handoff.run(sys.argv[2:])
        if code is not None:
            sys.stdout.flush()
            sys.exit(code)
    from artifactd.fs.commands import main as commands

    commands()
