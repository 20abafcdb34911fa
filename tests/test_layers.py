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
    "fs": ("artifactd.services", "artifactd.storage", "artifactd.http", "artifactd.cli"),
}


def imports_of(path: Path) -> set[str]:
    """Absolute module names imported by ``path``, relative imports resolved."""
    package = ".".join(("artifactd", *path.relative_to(PACKAGE).parent.parts))
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
    return names


def forbidden(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer: str) -> None:
    files = list((PACKAGE / layer).rglob("*.py"))
    if layer != "client":
        assert files, f"layer {layer} has no modules"
    for path in files:
        for name in imports_of(path):
            assert not forbidden(name, FORBIDDEN[layer]), f"{path.relative_to(PACKAGE)} imports {name}"


def test_relative_imports_are_resolved() -> None:
    names = imports_of(PACKAGE / "http" / "app.py")
    assert "artifactd.services.backend" in names
    client = PACKAGE / "client" / "_sync.py"
    if client.exists():
        assert any(n.startswith("artifactd.client") for n in imports_of(client))
