"""Hardening, long form: storage limits under racing pushes, and the JSON fuzz at scale.

- **Pushes raced**: rounds of 8 concurrent pushes of incompressible blobs into one repo (and
  into repos of one account) whose limit admits only some of them; after each round the
  limit held, the recorded size equals the disk, no quarantine is left and every refused
  push moved no ref. The scenario is ``tests/test_push_integrity.py``'s, repeated.
- **Cases fuzzed**: ``tests/test_fuzz_json.py`` (hypothesis JSON bodies against every JSON
  route, REST and GraphQL, SQLite and PostgreSQL) with ``FUZZ_EXAMPLES`` examples per route
  instead of the suite's 50; a 5xx or a malformed envelope fails a case.

    python -m bench --only hardening [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.gitutil import Git, create_repo
from tests.harness import start_server
from tests.test_push_integrity import (
    BLOB,
    LIMITED_ENV,
    MAX_REPO_BYTES,
    WRITERS,
    disk_bytes,
    prepared_pushes,
    push_all,
    quarantines,
)

from bench.common import Target, machine, work_dir

ROOT = Path(__file__).resolve().parent.parent


def race_pushes(rounds: int) -> dict[str, Any]:
    base = work_dir("hardening-")
    server = start_server(base / "data", extra_env={
        **LIMITED_ENV, "ARTIFACTD_RATE_LIMIT_GIT": "100000/10s",
        "ARTIFACTD_RATE_LIMIT_CONTROL": "100000/10s",
        # Each round's repo limit is the one raced; the account must not fill up across rounds.
        "ARTIFACTD_MAX_ACCOUNT_BYTES": str(1 << 40),
    })
    raced = accepted = 0
    violations: list[str] = []
    started = time.monotonic()
    try:
        for round_ in range(rounds):
            repo = create_repo(server, f"race-{round_}")
            git = Git(base / f"home-{round_}")
            results = push_all(git, prepared_pushes(base / f"round-{round_}", git, [repo] * WRITERS))
            raced += len(results)
            won = sum(r.returncode == 0 for r in results)
            accepted += won
            info = repo.info()
            on_disk = disk_bytes(repo)
            if int(info["size"]) > MAX_REPO_BYTES:
                violations.append(f"round {round_}: size {info['size']} over {MAX_REPO_BYTES}")
            if int(info["size"]) != on_disk:
                violations.append(f"round {round_}: recorded {info['size']}, on disk {on_disk}")
            if quarantines(repo):
                violations.append(f"round {round_}: quarantine left")
            if won != MAX_REPO_BYTES // (BLOB + BLOB // 50):  # as many as fit, pack and index
                violations.append(f"round {round_}: {won} pushes accepted where "
                                  f"{MAX_REPO_BYTES // (BLOB + BLOB // 50)} fit")
            if len(repo.refs()) != won:
                violations.append(f"round {round_}: {len(repo.refs())} refs for {won} accepted pushes")
            shutil.rmtree(base / f"round-{round_}", ignore_errors=True)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {"rounds": rounds, "pushes_raced": raced, "accepted": accepted, "violations": violations,
            "seconds": round(time.monotonic() - started, 1), "limit_bytes": MAX_REPO_BYTES,
            "blob_bytes": BLOB}


def fuzz(examples: int) -> dict[str, Any]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_fuzz_json.py"],
        cwd=ROOT, env={**os.environ, "FUZZ_EXAMPLES": str(examples)}, capture_output=True, text=True,
        timeout=3600,
    )
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    passed = int(m.group(1)) if (m := re.search(r"(\d+) passed", tail)) else 0
    failed = int(m.group(1)) if (m := re.search(r"(\d+) failed", tail)) else 0
    return {"examples_per_route": examples, "tests_passed": passed, "tests_failed": failed,
            "summary": tail, "seconds": round(time.monotonic() - started, 1)}


def run(quick: bool = False) -> dict[str, Any]:
    return {"machine": machine(), "race": race_pushes(2 if quick else 25),
            "fuzz": fuzz(10 if quick else 500)}


def targets(results: dict[str, Any]) -> list[Target]:
    race, fuzzed = results["race"], results["fuzz"]
    return [
        Target(f"limit violations in {race['pushes_raced']} racing pushes", "0",
               str(len(race["violations"])), not race["violations"]),
        Target(f"fuzz cases with a 5xx or a bad envelope ({fuzzed['examples_per_route']} per route)",
               "0", f"{fuzzed['tests_failed']} failing tests", fuzzed["tests_failed"] == 0
               and fuzzed["tests_passed"] > 0),
    ]


def render(results: dict[str, Any]) -> str:
    race, fuzzed = results["race"], results["fuzz"]
    listed = "\n".join(f"- `{v}`" for v in race["violations"][:10]) or "None."
    return f"""**Pushes raced.** {race['rounds']} rounds of {WRITERS} concurrent pushes of
{race['blob_bytes']:,} incompressible bytes each into a fresh repo limited to
{race['limit_bytes']:,} bytes (`tests/test_push_integrity.py`'s scenario, repeated), on a
one-worker SQLite server: {race['pushes_raced']} pushes raced, {race['accepted']} accepted,
{race['pushes_raced'] - race['accepted']} refused by the limit, in {race['seconds']} s. After each
round: the recorded size within the limit and equal to the disk, no quarantine left, one ref
per accepted push. Violations: {len(race['violations'])}.

{listed}

**Cases fuzzed.** `tests/test_fuzz_json.py` with `FUZZ_EXAMPLES={fuzzed['examples_per_route']}`
(hypothesis JSON bodies, deep nesting, surrogates, huge numbers, wrong types and unknown
fields against every JSON route and GraphQL, on SQLite and PostgreSQL; each case fails on a
5xx or an answer that is not an envelope): `{fuzzed['summary']}` in {fuzzed['seconds']} s.

Machine: {results['machine']}.
"""
