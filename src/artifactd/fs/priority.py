"""The order in which a mount hydrates its files in the background (issue 15's queue).

Package manifests and lock files first (they unblock tools), then source files, then the
rest, binaries last: by file name, and ``binary`` in the root ``.gitattributes`` when its
patterns are plain ``*.ext`` or names (the ones worth honouring without a full matcher).
"""

from __future__ import annotations

import fnmatch
import posixpath

MANIFESTS = frozenset({
    "package.json", "package-lock.json", "yarn.lock", "pnpm-lock.yaml", "pyproject.toml", "setup.py",
    "setup.cfg", "requirements.txt", "poetry.lock", "uv.lock", "Pipfile", "Pipfile.lock", "Cargo.toml",
    "Cargo.lock", "go.mod", "go.sum", "Gemfile", "Gemfile.lock", "pom.xml", "build.gradle",
    "composer.json", "composer.lock", "Makefile", "CMakeLists.txt", "tsconfig.json", "deno.json",
})
SOURCE = frozenset({
    ".py", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".java", ".kt", ".rb", ".php", ".cs", ".swift", ".scala", ".sh", ".md", ".toml",
    ".yaml", ".yml", ".json", ".txt", ".cfg", ".ini", ".html", ".css", ".sql", ".proto",
})
BINARY = frozenset({
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".pdf", ".zip", ".gz", ".tgz", ".xz", ".bz2",
    ".7z", ".jar", ".so", ".dylib", ".dll", ".exe", ".bin", ".wasm", ".mp3", ".mp4", ".mov",
    ".woff", ".woff2", ".ttf", ".otf", ".psd", ".iso", ".db", ".sqlite", ".onnx", ".pt", ".safetensors",
})


def binary_patterns(gitattributes: bytes) -> list[str]:
    patterns = []
    for line in gitattributes.decode(errors="replace").splitlines():
        parts = line.split()
        marks = parts[1:]
        if marks and not parts[0].startswith("#") and ("binary" in marks or "-text" in marks):
            patterns.append(parts[0])
    return patterns


def rank(path: bytes, binary: list[str]) -> int:
    """0 manifests, 1 source, 2 the rest, 3 binaries."""
    text = path.decode(errors="replace")
    name = posixpath.basename(text)
    if any(fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(text, pattern) for pattern in binary):
        return 3
    if name in MANIFESTS or name.startswith("requirements"):
        return 0
    extension = posixpath.splitext(name)[1].lower()
    if extension in BINARY:
        return 3
    return 1 if extension in SOURCE else 2
