"""The client configuration the CLI and the git credential helper share.

Values come from, in order: command-line options, the ``ARTIFACTD_*`` environment, the
file ``artifactd login`` writes (``$ARTIFACTD_CLIENT_CONFIG``, else
``$XDG_CONFIG_HOME/artifactd/client.toml``, else ``~/.config/artifactd/client.toml``), and last
the names Cloudflare's docs export (``ARTIFACTS_BASE_URL``, ``CLOUDFLARE_ACCOUNT_ID``,
``CLOUDFLARE_API_TOKEN``): last, so that a Cloudflare token set for other tools never
replaces the artifactd login::

    url = "http://127.0.0.1:8787"
    account_id = "0123456789abcdef0123456789abcdef"
    api_token = "artd_..."
    namespace = "default"   # optional

The file holds an API token, so like ssh we refuse to read it when other users may
(any group or other permission bit), rather than use a leaked credential silently.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from artifactd.client._core import (
    ENV_ACCOUNT,
    ENV_CF_ACCOUNT,
    ENV_CF_TOKEN,
    ENV_CF_URL,
    ENV_NAMESPACE,
    ENV_TOKEN,
    ENV_URL,
    base_parts,
)

ENV_CONFIG = "ARTIFACTD_CLIENT_CONFIG"
ENV_TIMEOUT = "ARTIFACTD_TIMEOUT"
KEYS = ("url", "account_id", "api_token", "namespace", "timeout")
PRIVATE_MODE = 0o600


class ConfigFileError(Exception):
    """The config file cannot be used; the message says how to fix it."""


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "artifactd" / "client.toml"


@dataclass(frozen=True)
class ClientSettings:
    url: str = ""
    account_id: str = ""
    api_token: str = field(default="", repr=False)
    namespace: str = ""
    timeout: float | None = None
    path: Path | None = None  # the file the values were (partly) read from

    @property
    def missing(self) -> list[str]:
        # A /v1/api base URL names no account: the server takes the API token's.
        needed = ("url", "api_token") if base_parts(self.url).v1 else ("url", "account_id", "api_token")
        return [name for name in needed if not getattr(self, name)]


def read_file(path: Path) -> dict[str, str | float]:
    """The file's settings, or ``{}`` when it does not exist."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from exc
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigFileError(
            f"config file {path} is readable by other users (mode {stat.S_IMODE(info.st_mode):04o}) "
            f"and holds an API token; run: chmod 600 {path}"
        )
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from exc
    values: dict[str, str | float] = {}
    for key, value in document.items():
        if key not in KEYS:
            raise ConfigFileError(
                f"config file {path}: unknown key {key!r} (known: {', '.join(KEYS)})"
            )
        if key == "timeout":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigFileError(f"config file {path}: timeout must be a positive number")
            values[key] = float(value)
        elif not isinstance(value, str):
            raise ConfigFileError(f"config file {path}: {key} must be a string")
        else:
            values[key] = value
    return values


def load(
    *, url: str | None = None, account_id: str | None = None, api_token: str | None = None,
    namespace: str | None = None, env: Mapping[str, str] | None = None, use_file: bool = True,
) -> ClientSettings:
    """Options over environment over file. The file is read only if it exists."""
    env = os.environ if env is None else env
    path = config_path(env)
    from_file = read_file(path) if use_file else {}

    def pick(option: str | None, variable: str, key: str, fallback: str | None = None) -> str:
        last = env.get(fallback) if fallback else None
        return option or env.get(variable) or str(from_file.get(key) or "") or last or ""

    timeout: float | None = None
    raw_timeout = env.get(ENV_TIMEOUT)
    if raw_timeout:
        try:
            timeout = float(raw_timeout)
        except ValueError:
            raise ConfigFileError(f"{ENV_TIMEOUT} must be a number of seconds, got {raw_timeout!r}") from None
        if timeout <= 0:
            raise ConfigFileError(f"{ENV_TIMEOUT} must be positive")
    elif "timeout" in from_file:
        timeout = float(from_file["timeout"])
    picked_url = pick(url, ENV_URL, "url", ENV_CF_URL)
    parts = base_parts(picked_url)  # ARTIFACTS_BASE_URL may carry the account and namespace
    return ClientSettings(
        url=picked_url,
        account_id=pick(account_id, ENV_ACCOUNT, "account_id", ENV_CF_ACCOUNT) or parts.account_id or "",
        api_token=pick(api_token, ENV_TOKEN, "api_token", ENV_CF_TOKEN),
        namespace=pick(namespace, ENV_NAMESPACE, "namespace") or parts.namespace or "",
        timeout=timeout,
        path=path if from_file else None,
    )


def _toml_string(value: str) -> str:
    # JSON's string escapes are a subset of TOML's basic-string escapes.
    return json.dumps(value)


def write_file(path: Path, values: Mapping[str, str]) -> None:
    """Write the file atomically with mode 0600 (the directory 0700); never world-readable."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = ["# Written by `artifactd login`. It holds an API token: keep it private (mode 0600)."]
    lines += [f"{key} = {_toml_string(value)}" for key, value in values.items() if value]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(temporary, PRIVATE_MODE)  # in case a umask or ACL widened it
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
