"""Where a mount root keeps its state: ``<root>/.artifact-fs/`` (mode 0700).

    repos/<name>.json   what ``add-repo`` recorded: remote (no credentials), branch, mount point
    git/<name>/.git     the blobless clone (commits and trees; blobs arrive in batches)
    (the blob cache is the host's, shared by every root: ``hostcache``)
    run/                the credential cache's socket, each mount's pid file, control socket, log, stats
                        and read trace (one JSON line per session)
    overlay/<name>/     a mount's changes until committed (write/overlay.py)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from artifactd.fs.hostcache import HostCache

STATE_DIR = ".artifact-fs"


@dataclass(frozen=True)
class RepoConfig:
    name: str
    remote: str  # without credentials
    branch: str
    mount_point: str


class RootState:
    def __init__(self, root: Path, host: HostCache | None = None) -> None:
        self.root = root
        self.dir = root / STATE_DIR
        self._host = host

    @property
    def host(self) -> HostCache:
        """The host's blob cache (found when first needed: most commands never touch it)."""
        if self._host is None:
            self._host = HostCache()
        return self._host

    def ensure(self) -> None:
        for sub in ("", "repos", "git", "run"):
            path = self.dir / sub
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)  # git's credential cache refuses a socket dir others can read
        self.host.ensure()
        self.host.register(self.root)

    @property
    def credential_socket(self) -> Path:
        return self.dir / "run" / "credential-socket"

    @property
    def blobs(self) -> Path:
        return self.host.blobs

    def git_dir(self, name: str) -> Path:
        return self.dir / "git" / name / ".git"

    def work_dir(self, name: str) -> Path:
        return self.dir / "git" / name

    def pid_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.pid"

    def overlay_dir(self, name: str) -> Path:
        return self.dir / "overlay" / name

    def control_socket(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.ctl"  # bound through /proc/self/fd (control.py)

    def stats_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.stats"

    def trace_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.trace"

    def log_file(self, name: str) -> Path:
        return self.dir / "run" / f"{name}.log"

    def _config_path(self, name: str) -> Path:
        return self.dir / "repos" / f"{name}.json"

    def save(self, config: RepoConfig) -> None:
        path = self._config_path(config.name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
        tmp.replace(path)

    def load(self, name: str) -> RepoConfig | None:
        path = self._config_path(name)
        if not path.exists():
            return None
        return RepoConfig(**json.loads(path.read_text()))

    def remove(self, name: str) -> None:
        self._config_path(name).unlink(missing_ok=True)

    def repos(self) -> list[RepoConfig]:
        folder = self.dir / "repos"
        if not folder.is_dir():
            return []
        return [RepoConfig(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
