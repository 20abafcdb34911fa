"""The docs are tested: every setting and every error code is documented."""

from __future__ import annotations

import re
from pathlib import Path

from artifactd.config import SETTINGS
from artifactd.errors import Code

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_in_the_configuration_table() -> None:
    text = (DOCS / "configuration.md").read_text()
    for setting in SETTINGS:
        assert f"| `{setting.name}` | `{setting.env}` |" in text, setting.name


def test_every_error_code_is_in_the_table() -> None:
    text = (DOCS / "errors.md").read_text()
    documented = {int(code) for code in re.findall(r"^\| (\d{5}) \|", text, re.M)}
    assert {int(c) for c in Code} <= documented
    assert documented <= {int(c) for c in Code}, "docs list a code the server does not have"


ROOT = DOCS.parent
# [text](target) outside code; images and reference-style links are not used in these docs.
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_readme_and_docs_links_resolve_inside_the_repository() -> None:
    """Every relative link of README.md and docs/*.md names a file of the repository (and an
    existing heading when it has a #fragment); everything else is a public https:// page."""
    broken = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for target in _LINK.findall(_FENCE.sub("", text)):
            if target.startswith("https://"):
                continue
            if re.match(r"^[a-z]+:", target):
                broken.append(f"{page.name}: {target} (not https)")
                continue
            path_part, _, fragment = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file in the repository)")
            elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_license_file_is_the_license_pyproject_names() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
