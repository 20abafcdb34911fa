"""Deterministic synthetic git repositories for the benchmarks.

The same ``RepoSpec`` always gives byte-identical history (same commit ids): content comes
from ``random.Random(seed)`` and dates are fixed. History is written with one
``git fast-import`` stream and then repacked once, so the result looks like a served repo:

- text files (source-like lines from a fixed vocabulary) that change a few lines per commit,
  which gives git real deltas to find;
- optional large binary blobs (incompressible), added at evenly spaced commits, which is
  where most of the bytes of the big preset are;
- a ``base`` branch some commits behind ``main``, for incremental-fetch measurements.

    python -m bench.synth small /tmp/small.git      # ~10 MB, 1,000 commits
    python -m bench.synth large /tmp/large.git      # ~200 MB, 10,000 commits
"""

from __future__ import annotations

import argparse
import hashlib
import random
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

WORDS = [
    "def", "class", "return", "import", "from", "self", "value", "result", "error", "config",
    "request", "response", "stream", "token", "repo", "branch", "commit", "tree", "blob",
    "object", "pack", "index", "ref", "push", "fetch", "clone", "delta", "server", "client",
    "buffer", "chunk", "length", "header", "status", "async", "await", "yield", "none", "true",
    "false", "int", "str",
]


@dataclass(frozen=True)
class RepoSpec:
    commits: int
    files: int  # text files in the tree
    lines_per_file: int
    changes_per_commit: int  # lines rewritten per commit (spread over a few files)
    large_blobs: int  # binary blobs added over the history
    large_blob_bytes: int
    base_behind: int  # the `base` branch is this many commits behind `main`
    seed: int = 1


PRESETS = {
    "tiny": RepoSpec(commits=60, files=20, lines_per_file=40, changes_per_commit=4,
                     large_blobs=1, large_blob_bytes=256 << 10, base_behind=10),
    "small": RepoSpec(commits=1_000, files=300, lines_per_file=120, changes_per_commit=12,
                      large_blobs=2, large_blob_bytes=3 << 20, base_behind=100),
    "large": RepoSpec(commits=10_000, files=2_000, lines_per_file=150, changes_per_commit=20,
                      large_blobs=10, large_blob_bytes=10 << 20, base_behind=200),
}


def _line(rng: random.Random) -> str:
    indent = "    " * rng.randrange(3)
    return indent + " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 11))) + "\n"


def _stream(spec: RepoSpec, out: object) -> None:
    """Write the fast-import stream for ``spec`` to the binary file ``out``."""
    write = out.write  # type: ignore[attr-defined]
    rng = random.Random(spec.seed)
    files = {f"src/pkg{i % 20}/mod{i}.py": [_line(rng) for _ in range(spec.lines_per_file)]
             for i in range(spec.files)}
    names = sorted(files)
    blob_every = max(1, spec.commits // (spec.large_blobs + 1)) if spec.large_blobs else 0
    blobs_added = 0
    for n in range(spec.commits):
        when = 1_700_000_000 + n * 600
        if n == 0:
            touched = names
        else:
            touched = sorted({rng.choice(names) for _ in range(max(1, spec.changes_per_commit // 4))})
            for name in touched:
                lines = files[name]
                for _ in range(4):
                    lines[rng.randrange(len(lines))] = _line(rng)
        parts = [f"commit refs/heads/main\nmark :{n + 1}\n"
                 f"author Synth <synth@example.com> {when} +0000\n"
                 f"committer Synth <synth@example.com> {when} +0000\n".encode()]
        message = f"commit {n}: touch {len(touched)} files\n".encode()
        parts.append(b"data %d\n%s" % (len(message), message))
        if n > 0:
            parts.append(f"from :{n}\n".encode())
        for name in touched:
            data = "".join(files[name]).encode()
            parts.append(f"M 100644 inline {name}\n".encode() + b"data %d\n%s\n" % (len(data), data))
        if blob_every and n and n % blob_every == 0 and blobs_added < spec.large_blobs:
            blob = rng.randbytes(spec.large_blob_bytes)
            parts.append(f"M 100644 inline assets/blob{blobs_added}.bin\n".encode()
                         + b"data %d\n%s\n" % (len(blob), blob))
            blobs_added += 1
        write(b"".join(parts) + b"\n")
        if n == spec.commits - 1 - spec.base_behind:
            write(f"reset refs/heads/base\nfrom :{n + 1}\n\n".encode())


def generate(spec: RepoSpec, target: Path) -> Path:
    """Create the bare repository ``target`` (which must not exist) from ``spec``."""
    env = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "PATH": "/usr/bin:/bin",
           "HOME": str(target.parent)}
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(target)], check=True, env=env)
    importer = subprocess.Popen(["git", f"--git-dir={target}", "fast-import", "--quiet"],
                                stdin=subprocess.PIPE, env=env)
    assert importer.stdin is not None
    _stream(spec, importer.stdin)
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", f"--git-dir={target}", "repack", "-a", "-d", "-q", "--window=10"],
                   check=True, env=env)
    for key, value in (("uploadpack.allowFilter", "true"),
                       ("uploadpack.allowReachableSHA1InWant", "true"),
                       ("http.receivepack", "true"), ("gc.auto", "0")):
        subprocess.run(["git", f"--git-dir={target}", "config", key, value], check=True, env=env)
    return target


def size_bytes(git_dir: Path) -> int:
    return sum(p.stat().st_size for p in (git_dir / "objects").rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    generate(PRESETS[args.preset], args.target)
    print(f"{args.target}: {size_bytes(args.target) / 1e6:.1f} MB", file=sys.stderr)


def zero_blob_pack(pack: Path, size: int) -> str:
    """A pack of one blob of ``size`` zero bytes and its index (``pack`` ends in ``.pack``),
    written in one pass: deflate, SHA-1 and CRC streamed 1 MiB at a time, never the blob in
    memory, and no ``index-pack`` (which would inflate and hash it all again). Returns the
    blob's id."""
    chunk = bytes(1 << 20)
    header = bytearray([(3 << 4) | (size & 0x0F) | (0x80 if size >> 4 else 0)])
    rest = size >> 4
    while rest:
        header.append((rest & 0x7F) | (0x80 if rest >> 7 else 0))
        rest >>= 7
    oid = hashlib.sha1(b"blob %d\0" % size)
    trailer = hashlib.sha1()
    crc = 0
    deflate = zlib.compressobj(1)
    with open(pack, "wb") as out:
        def emit(data: bytes, entry: bool = True) -> None:
            nonlocal crc
            trailer.update(data)
            if entry:
                crc = zlib.crc32(data, crc)
            out.write(data)

        emit(b"PACK" + struct.pack(">II", 2, 1), entry=False)
        emit(bytes(header))
        left = size
        while left:
            piece = chunk[:min(left, len(chunk))]
            oid.update(piece)
            emit(deflate.compress(piece))
            left -= len(piece)
        emit(deflate.flush())
        out.write(trailer.digest())
    blob = oid.digest()
    index = bytearray(b"\377tOc" + struct.pack(">I", 2))
    index += b"".join(struct.pack(">I", 0 if i < blob[0] else 1) for i in range(256))  # the fan-out
    index += blob + struct.pack(">II", crc, 12) + trailer.digest()  # id, CRC, offset, pack's id
    index += hashlib.sha1(index).digest()
    pack.with_suffix(".idx").write_bytes(bytes(index))
    return oid.hexdigest()

if __name__ == "__main__":
    main()
