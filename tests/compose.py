"""Docker Compose files read the way ``docker compose`` reads them, to run their services natively.

There is no Docker daemon on the machines the suite runs on, so ``tests/test_compose_cluster.py``
starts the artifactd services of ``deploy/compose.cluster.yaml`` as plain processes. This
module does the part of Compose that decides *what* a container would run: YAML anchors and
merge keys (PyYAML), ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?error}`` interpolation from
an environment, several ``-f`` files merged (maps merged, ``volumes`` by mount target,
``ports`` appended), and a service's effective environment and command on top of the image's
``ENV``, ``ENTRYPOINT`` and ``CMD`` (read from the Dockerfile it is built from). What it does
not do (networks, healthchecks, restarts) is Docker's, and is not exercised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
                       r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


class ComposeError(ValueError):
    """The files would not load in ``docker compose`` either (a missing required variable)."""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution, applied to every string of a loaded file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env
        empty = not env.get(name)
        if op in (":-", "-") and (empty if op == ":-" else not present):
            return str(interpolate(arg, env))
        if op in (":?", "?") and (empty if op == ":?" else not present):
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def _environment(value: Any) -> dict[str, str]:
    if isinstance(value, list):
        pairs = (item.split("=", 1) for item in value)
        return {key: rest[0] if rest else "" for key, *rest in pairs}
    return {key: "" if item is None else str(item) for key, item in (value or {}).items()}


def _volume_target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    parts = str(entry).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge_service(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if key == "environment":
            merged[key] = {**_environment(base.get(key)), **_environment(value)}
        elif key == "volumes":
            by_target = {_volume_target(v): v for v in base.get(key, [])}
            by_target.update({_volume_target(v): v for v in value})
            merged[key] = list(by_target.values())
        elif key == "ports":
            merged[key] = [*base.get(key, []), *(p for p in value if p not in base.get(key, []))]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def load(files: list[Path], env: Mapping[str, str]) -> dict[str, Any]:
    """The project of ``docker compose -f A -f B ...``: interpolated, merged in order."""
    project: dict[str, Any] = {"services": {}, "volumes": {}}
    for path in files:
        loaded = interpolate(yaml.safe_load(path.read_text()), env)
        for name, service in loaded.get("services", {}).items():
            project["services"][name] = _merge_service(project["services"].get(name, {}), service)
        project["volumes"].update(loaded.get("volumes") or {})
        for key, value in loaded.items():
            if key not in ("services", "volumes") and not key.startswith("x-"):
                project[key] = value
    for service in project["services"].values():
        service["environment"] = _environment(service.get("environment"))
    return project


@dataclass(frozen=True)
class Image:
    """What a Dockerfile's final stage gives every container: ``ENV``, ``ENTRYPOINT``, ``CMD``."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]


def read_dockerfile(path: Path) -> Image:
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    cmd: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("FROM "):  # a new stage: only the last one's instructions count
            env, entrypoint, cmd = {}, [], []
        elif line.startswith("ENV "):
            key, _, value = line[4:].strip().partition("=")
            env[key] = value
        elif line.startswith("ENTRYPOINT "):
            entrypoint = list(json.loads(line.split(" ", 1)[1]))
        elif line.startswith("CMD "):
            cmd = list(json.loads(line.split(" ", 1)[1]))
    return Image(env, entrypoint, cmd)


def service_command(service: Mapping[str, Any], image: Image) -> list[str]:
    """The argv a container of ``service`` starts (``entrypoint`` and ``command`` override the image's)."""
    def words(value: Any) -> list[str]:
        return value.split() if isinstance(value, str) else [str(v) for v in value]

    entrypoint = words(service["entrypoint"]) if "entrypoint" in service else image.entrypoint
    command = words(service["command"]) if "command" in service else image.cmd
    return [*entrypoint, *command]


def volume_source(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("source", ""))
    return str(entry).split(":")[0]


def published_ports(service: Mapping[str, Any]) -> dict[int, int]:
    """Container port -> published host port, of the short ``HOST:CONTAINER`` forms."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        *host, container = str(entry).split(":")
        ports[int(container.split("/")[0])] = int(host[-1]) if host else int(container.split("/")[0])
    return ports
