"""Fault injection, long form: ``kill -9`` of the server mid-push, mid-fork, mid-import and
mid-maintenance, many times each, with every invariant checked after each restart.

The scenarios and invariants are those of ``tests/test_fault_injection.py`` (shared in
``tests/faults.py``): ``git fsck --strict`` clean, no repo stuck importing or forking, no
repo directory without a row and no work area left in ``tmp/``, no git process of the
data dir outliving the server, no acknowledged push or fork lost. Reported: kills survived
and invariant violations (the target is zero).

    python -m bench.faults [--quick] [--no-write]
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from tests.faults import SCENARIOS, run_faults

from bench.common import Target, bench_main, machine, work_dir


def run(quick: bool = False) -> dict[str, Any]:
    base = work_dir("faults-")
    iterations = 1 if quick else 25
    started = time.monotonic()
    try:
        outcome = run_faults(base, iterations)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"machine": machine(), "iterations": iterations, "seconds": round(time.monotonic() - started, 1),
            **outcome}


def _violations(results: dict[str, Any]) -> int:
    return sum(len(s["violations"]) for s in results["scenarios"].values())


def targets(results: dict[str, Any]) -> list[Target]:
    broken = _violations(results)
    return [Target(f"invariant violations after {results['kills']} kill -9 restarts", "0", str(broken),
                   broken == 0)]


def render(results: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {name} | {s['kills']} | {s['landed']} | {len(s['violations'])} |"
        for name, s in results["scenarios"].items()
    )
    examples = [v for s in results["scenarios"].values() for v in s["violations"]][:10]
    listed = "\n".join(f"- `{v[:300]}`" for v in examples) or "None."
    return f"""`kill -9` of a one-worker SQLite server in the middle of each operation, {results['iterations']}
times per scenario ({', '.join(SCENARIOS)}, interleaved), a restart after each kill and every
invariant checked: `git fsck --strict` clean in every repo, no repo stuck importing or forking
(the interrupted import resumes), no repo directory without a row, no work area left in `tmp/`,
no git process of the data dir alive once the server is gone, no acknowledged push or fork
lost. A kill "landed mid-operation" when the operation's git process (receive-pack, the
import's fetch, a maintenance step) or a fork request was seen running just before it.
`python -m bench.faults` ({results['seconds']:g} s).

| scenario | kills survived | kills that landed mid-operation | invariant violations |
|---|---|---|---|
{rows}

Violations seen:

{listed}
"""


if __name__ == "__main__":
    bench_main("Fault injection", run, render, __doc__)
