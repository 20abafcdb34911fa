"""Layers import downward only: http -> services -> storage; the SDK talks HTTP only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "artifactd"

FORBIDDEN = {
    "storage": ("artifactd.services", "artifactd.http", "artifactd.cli", "artifactd.client"),
    "services": ("artifactd.http", "artifactd.cli", "artifactd.client"),
    "http": ("artifactd.cli", "artifactd.client"),
    "client": ("artifactd.services", "artifactd.storage", "artifactd.http", "artifactd.cli"),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer: str) -> None:
    files = list((PACKAGE / layer).rglob("*.py"))
    if layer != "client":
        assert files, f"layer {layer} has no modules"
    for path in files:
        for name in imports_of(path):
            assert not name.startswith(FORBIDDEN[layer]), f"{path.relative_to(PACKAGE)} imports {name}"
