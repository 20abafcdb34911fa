"""Fault injection: ``kill -9`` of a real server in the middle of a push, a fork, an import
and a maintenance run, a restart, and the invariants a crash must never break.

Shared by ``tests/test_fault_injection.py`` (a few iterations of each, in CI) and
``bench/faults.py`` (the long form whose figures go to docs/benchmarks.md). Everything is
real: the server is ``python -m artifactd serve``, pushes are the git CLI, the import source
is ``git http-backend``; a kill is a SIGKILL of the server process, so no shutdown code runs.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.gitsource import GitSource
from tests.gitutil import Git, bearer
from tests.harness import Server, start_server
from tests.processes import git_processes, kill_all, wait_for, wait_gone

SCENARIOS = ("push", "fork", "import", "maintenance")
WORK_AREA_PREFIXES = ("fork-", "import-", "init-")


@dataclass
class Rig:
    """One server that is killed and restarted, with what it acknowledged before each kill."""

    base: Path
    server: Server
    source: GitSource
    git: Git
    repos: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> create result
    acked_push: str = ""  # the last commit whose push the server acknowledged
    acked_forks: list[str] = field(default_factory=list)
    imports: list[str] = field(default_factory=list)
    kills: int = 0
    landed: dict[str, int] = field(default_factory=dict)  # kills that hit the operation's git
    violations: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(18))

    @classmethod
    def create(cls, base: Path) -> Rig:
        source = GitSource(base / "upstream")
        git = Git(base / "home")
        up = base / "up-work"
        git.new_work(up, {"README.md": "# upstream\n"})
        git.run("clone", "-q", "--bare", str(up), str(source.root / "up.git"))
        source.start()
        server = start_server(base / "data", extra_env={
            "ARTIFACTD_IMPORT_ALLOW_HOSTS": "127.0.0.1",
            "ARTIFACTD_MAINTENANCE_AFTER_PUSHES": "1",
            "ARTIFACTD_MAINTENANCE_INTERVAL": "0.2",
        })
        rig = cls(base, server, source, git)
        for name in ("push", "forkparent", "maint"):
            rig.repos[name] = rig._create(name)
        rig._push_files("forkparent", {f"d{j}/f.txt": f"{j}\n" for j in range(20)})
        # Enough bytes that a full repack (with -f: fresh deltas) takes a visible moment.
        rig._push_files("maint", {f"blob{j}.bin": os.urandom(400_000) for j in range(8)})
        return rig

    def close(self) -> None:
        self.server.stop()
        self.source.stop()
        kill_all(git_processes(self.server.data_dir))

    # -- helpers ---------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return self.server.client()

    def _create(self, name: str) -> dict[str, str]:
        with self.client() as c:
            r = c.post("/repos", json={"name": name})
            assert r.status_code == 200, r.text
            return dict(r.json()["result"])

    def _work(self, name: str) -> Path:
        work = self.base / f"work-{name}"
        if not work.exists():
            self.git.new_work(work, {"seed.txt": name})
        return work

    def _push_files(self, name: str, files: dict[str, str | bytes], check: bool = True) -> str | None:
        work = self._work(name)
        sha = self.git.commit_files(work, files, f"commit {time.time_ns()}")
        repo = self.repos[name]
        pushed = self.git.run("-c", bearer(repo["token"]), "push", "-q", "-f", repo["remote"],
                              "HEAD:main", cwd=work, check=check, timeout=60)
        return sha if pushed.returncode == 0 else None

    def _kill(self) -> None:
        assert self.server.process is not None
        self.server.process.kill()
        self.server.process.wait()
        self.kills += 1

    def _kill_when(self, condition: Callable[[], bool], scenario: str, seconds: float = 10) -> None:
        if wait_for(condition, seconds, step=0.01):
            self.landed[scenario] = self.landed.get(scenario, 0) + 1
        self._kill()

    def _running(self, *needles: str) -> Callable[[], bool]:
        def check() -> bool:
            return any(all(n in cmd for n in needles) for cmd in git_processes(self.server.data_dir).values())
        return check

    # -- scenarios: each ends with the server killed ----------------------------------------

    def kill_mid_push(self, iteration: int, in_quarantine: bool = False) -> None:
        """``in_quarantine``: kill once receive-pack has written pack data into its quarantine
        directory (objects/incoming-*), i.e. always with a pack half received."""
        stop = threading.Event()

        def pusher() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                sha = self._push_files("push", {"big.bin": os.urandom(300_000), "n.txt": f"{iteration} {n}\n"},
                                       check=False)
                if sha is None:
                    return  # the server is gone
                self.acked_push = sha

        thread = threading.Thread(target=pusher)
        thread.start()
        repo_id = self.repos["push"]["id"]
        # Mid-push: while receive-pack for this repo runs (a later push than the first, at random).
        skip = self.rng.randint(0, 2)
        for _ in range(skip):
            wait_for(self._running("receive-pack", repo_id), 10, step=0.01)
            wait_for(lambda: not self._running("receive-pack", repo_id)(), 10, step=0.01)
        if in_quarantine:
            objects = self.git_dir("push") / "objects"
            self._kill_when(lambda: any(objects.glob("incoming-*/pack/*")), "push")
        else:
            self._kill_when(self._running("receive-pack", repo_id), "push")
        stop.set()
        thread.join()

    def kill_mid_fork(self, iteration: int) -> None:
        stop = threading.Event()

        def forker() -> None:
            n = 0
            with self.client() as c:
                while not stop.is_set():
                    n += 1
                    name = f"fork-{iteration}-{n}"
                    try:
                        r = c.post("/repos/forkparent/fork", json={"name": name})
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        self.acked_forks.append(name)
                    elif r.status_code >= 500:
                        self.violations.append(f"fork answered {r.status_code}: {r.text[:200]}")

        thread = threading.Thread(target=forker)
        thread.start()
        if wait_for(lambda: any(n.startswith(f"fork-{iteration}-") for n in self.acked_forks), 10, step=0.01):
            self.landed["fork"] = self.landed.get("fork", 0) + 1  # forks were running
        time.sleep(self.rng.uniform(0, 0.05))  # somewhere inside a later fork
        self._kill()
        stop.set()
        thread.join()

    def kill_mid_import(self, iteration: int) -> None:
        name = f"imp-{iteration}"
        self.source.hold("up")
        with self.client() as c:
            r = c.post(f"/repos/{name}/import", json={"url": f"{self.source.url}/up.git"})
            assert r.status_code == 200, r.text
        self.imports.append(name)
        self._kill_when(self._running("fetch", f"import-{r.json()['result']['id']}"), "import")

    def kill_mid_maintenance(self, iteration: int) -> None:
        repo_id = self.repos["maint"]["id"]
        self._push_files("maint", {"m.txt": f"{iteration}\n"})  # due after one push
        step = self.rng.choice(["repack", "pack-objects", "commit-graph"])
        if wait_for(self._running(step, repo_id), 10, step=0.005) or \
                wait_for(self._running(repo_id), 5, step=0.005):
            self.landed["maintenance"] = self.landed.get("maintenance", 0) + 1
        self._kill()

    def inject(self, scenario: str, iteration: int) -> None:
        getattr(self, f"kill_mid_{scenario}")(iteration)

    # -- restart and invariants -------------------------------------------------------------

    def restart_and_check(self, scenario: str) -> list[str]:
        """Restart the killed server and return the invariants broken (empty: all held)."""
        found = list(self.violations)
        self.violations.clear()
        left = wait_gone(self.server.data_dir, 15)
        if left:
            found.append(f"{scenario}: git processes outlived the server: {sorted(left.values())[:3]}")
        self.server.start()
        self.source.release("up")
        found += self.check(scenario)
        return found

    def _backend_rows(self) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """id -> (name, status) of every repo row, and the names still importing/forking."""
        rows: dict[str, tuple[str, str]] = {}
        with self.client() as c:
            cursor = None
            while True:
                params: dict[str, str | int] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                r = c.get("/repos", params=params)
                assert r.status_code == 200, r.text
                body = r.json()
                for repo in body["result"]:
                    rows[repo["id"]] = (repo["name"], repo["status"])
                cursor = (body.get("result_info") or {}).get("cursor")
                if not cursor:
                    break
        busy = [name for name, status in rows.values() if status in ("importing", "forking")]
        return rows, busy

    def check(self, scenario: str) -> list[str]:
        found: list[str] = []
        data = self.server.data_dir
        # No repo stuck importing or forking (the held import resumes once released).
        wait_for(lambda: not self._backend_rows()[1], 60, step=0.2)
        rows, busy = self._backend_rows()
        if busy:
            found.append(f"{scenario}: repos stuck importing/forking: {busy}")
        for name in self.imports:
            status = next((s for n, s in rows.values() if n == name), None)
            if status != "ready":
                found.append(f"{scenario}: import {name} ended {status}")
        # No orphan directories: every repo directory has a row, no work area is left.
        for git_dir in (data / "repos").glob("*/*/*.git"):
            if git_dir.name.removesuffix(".git") not in rows:
                found.append(f"{scenario}: repo directory without a row: {git_dir.name}")
        areas = [p.name for p in (data / "tmp").iterdir() if p.name.startswith(WORK_AREA_PREFIXES)]
        if areas:
            found.append(f"{scenario}: work areas left in tmp/: {areas}")
        # git fsck --strict is clean in every repository.
        for git_dir in sorted((data / "repos").glob("*/*/*.git")):
            fsck = subprocess.run(["git", f"--git-dir={git_dir}", "fsck", "--strict", "--no-dangling"],
                                  capture_output=True, text=True, timeout=120)
            if fsck.returncode != 0:
                found.append(f"{scenario}: fsck {git_dir.name}: {(fsck.stdout + fsck.stderr)[:300]}")
        # No acknowledged push lost: the branch is the acknowledged commit or a descendant.
        if self.acked_push:
            found += self._check_push(scenario)
        # Every acknowledged fork exists and is ready.
        names = {n: s for n, s in rows.values()}
        lost = [n for n in self.acked_forks if names.get(n) != "ready"]
        if lost:
            found.append(f"{scenario}: acknowledged forks lost: {lost[:5]}")
        return found

    def git_dir(self, name: str) -> Path:
        repo_id = self.repos[name]["id"]
        return self.server.data_dir / "repos" / repo_id[:2] / f"{repo_id}.git"

    def _check_push(self, scenario: str) -> list[str]:
        git_dir = self.git_dir("push")
        head = subprocess.run(["git", f"--git-dir={git_dir}", "rev-parse", "--verify", "-q", "refs/heads/main"],
                              capture_output=True, text=True).stdout.strip()
        if not head:
            return [f"{scenario}: the pushed branch is gone"]
        ok = subprocess.run(["git", f"--git-dir={git_dir}", "merge-base", "--is-ancestor", self.acked_push, head],
                            capture_output=True).returncode == 0
        return [] if ok else [f"{scenario}: acknowledged push {self.acked_push[:12]} lost (branch at {head[:12]})"]

    def quarantine_leftovers(self) -> list[str]:
        """Quarantine directories of pushes that a crash cut short (objects/incoming-*)."""
        return sorted(str(p.relative_to(self.server.data_dir))
                      for p in (self.server.data_dir / "repos").glob("*/*/*.git/objects/incoming-*"))

    def sizes_disagree(self) -> list[str]:
        """Repos whose recorded size is not what their objects use on disk (metadata drift)."""
        from artifactd.config import Settings
        from artifactd.services.backend import Backend
        from artifactd.services.repos.maintenance import repo_lock

        backend = Backend.open(Settings(data_dir=str(self.server.data_dir)), run_migrations=False)
        try:
            drift = []
            for name, created in self.repos.items():
                # Compared under the repo's maintenance lock: a repack in progress has
                # temporary packs on disk that are not drift.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with repo_lock(backend, created["id"]) as held:
                        if held:
                            row = backend.meta.get_repo_by_id(created["id"])
                            on_disk = backend.repos.size(created["id"])
                            if row is not None and row.size_bytes != on_disk:
                                drift.append(f"{name}: recorded {row.size_bytes}, on disk {on_disk}")
                            break
                    time.sleep(0.05)
            return drift
        finally:
            backend.close()


def run_faults(base: Path, iterations: int, scenarios: tuple[str, ...] = SCENARIOS) -> dict[str, object]:
    """Each scenario ``iterations`` times (interleaved); the kills survived and the violations."""
    rig = Rig.create(base)
    results: dict[str, dict[str, object]] = {s: {"kills": 0, "landed": 0, "violations": []} for s in scenarios}
    try:
        for iteration in range(iterations):
            for scenario in scenarios:
                rig.inject(scenario, iteration)
                broken = rig.restart_and_check(scenario)
                entry = results[scenario]
                entry["kills"] = int(str(entry["kills"])) + 1
                entry["landed"] = rig.landed.get(scenario, 0)
                violations = entry["violations"]
                assert isinstance(violations, list)
                violations.extend(broken)
    finally:
        rig.close()
    return {"kills": rig.kills, "scenarios": results}
