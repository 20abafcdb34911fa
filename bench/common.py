"""Shared benchmark plumbing: servers, timing statistics, the machine, docs/benchmarks.md."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(ROOT))

from tests.harness import Server, free_port, start_server  # noqa: E402

# Benchmarks measure throughput, not the limiter: their servers get limits far above the load.
UNLIMITED = {"ARTIFACTD_RATE_LIMIT_CONTROL": "100000000/10s", "ARTIFACTD_RATE_LIMIT_GIT": "100000000/10s"}

__all__ = [
    "UNLIMITED",
    "Server",
    "Target",
    "bench_main",
    "free_port",
    "machine",
    "percentile",
    "start_server",
    "summary",
    "time_calls",
    "work_dir",
    "write_section",
]


@dataclass(frozen=True)
class Target:
    """One performance target of an issue and this run's verdict (None: reported, no bound)."""

    what: str
    goal: str
    measured: str
    met: bool | None


def work_dir(prefix: str) -> Path:
    base = ROOT / "bench" / ".work"
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds."""
    return {
        "p50_ms": round(percentile(samples_s, 0.50) * 1000, 3),
        "p99_ms": round(percentile(samples_s, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 3),
        "n": len(samples_s),
    }


def time_calls(call: Callable[[int], object], count: int, warmup: int = 5) -> list[float]:
    for i in range(warmup):
        call(-1 - i)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, AttributeError):
        match = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
        mem_kb = int(match.group(1)) if match else 0
    git = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip()
    return (f"{os.cpu_count()} cores ({cpu}), {mem_kb // (1024 * 1024)} GiB RAM, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, {git}")


def write_section(title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of docs/benchmarks.md."""
    BENCHMARKS_MD.parent.mkdir(parents=True, exist_ok=True)
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    heading = f"## {title}"
    section = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    BENCHMARKS_MD.write_text(text.rstrip() + "\n")


def bench_main(title: str, run: Callable[..., dict[str, Any]], render: Callable[[dict[str, Any]], str],
               doc: str | None = None,
               extra: Callable[[argparse.ArgumentParser], object] | None = None,
               run_kwargs: Callable[[argparse.Namespace], dict[str, Any]] | None = None) -> None:
    """``python -m bench.<module> [--quick] [--no-write]``, the same for every section: the
    results as JSON, and a full run rewrites the module's section of docs/benchmarks.md.
    ``extra`` adds a module's own options and ``run_kwargs`` passes them to ``run``."""
    parser = argparse.ArgumentParser(description=(doc or title).split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    results = run(quick=args.quick, **(run_kwargs(args) if run_kwargs else {}))
    print(json.dumps(results, indent=1, default=str))
    if not args.no_write and not args.quick:
        write_section(title, render(results))
