"""``python -m artifactd.fs`` is ``artifact-fs``."""

from artifactd.fs.cli import main

main()
