"""Running the git CLI for the mount: no prompts, no inherited helpers, C locale."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from artifactd.fs.children import die_with_parent

GIT = shutil.which("git") or "git"


class GitFailed(RuntimeError):
    """git exited non-zero; the message is git's last line (never a credential: git strips them)."""


def git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_ASKPASS": "", "SSH_ASKPASS": ""})
    env.update(extra or {})
    return env


def config_env(settings: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``-c`` settings passed through the environment, so they never show in ``ps``."""
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for i, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def run_git(args: Sequence[str], *, cwd: Path | None = None, stdin: bytes | None = None,
            settings: Sequence[tuple[str, str]] = (), timeout: float = 600) -> bytes:
    result = subprocess.run([GIT, *args], cwd=cwd, input=stdin, capture_output=True, timeout=timeout,
                            env=git_env(config_env(settings)), check=False,
                            preexec_fn=die_with_parent())
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise GitFailed(lines[-1] if lines else f"git {args[0]} failed ({result.returncode})")
    return result.stdout
