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
