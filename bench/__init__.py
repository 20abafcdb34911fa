"""Benchmarks for artifactd. Run them all with ``python -m bench`` (``--quick`` for tiny inputs)."""
