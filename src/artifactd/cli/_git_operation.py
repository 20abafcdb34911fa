"""Which git command asked the credential helper for a password: a fetch or a push.

Git does not say. A credential request carries ``protocol``, ``host`` and, with
``credential.useHttpPath``, the repo ``path``: the path of the remote, not of the
``info/refs?service=git-receive-pack`` request, so it is the same for a clone and a push
(git 2.41+ also passes the server's ``WWW-Authenticate`` as ``wwwauth[]``, which names no
service either). What does tell is the command line of the git process the helper runs
under: ``git push`` (or ``send-pack``) starts ``git-remote-http``, which starts the helper;
so do ``clone``, ``fetch``, ``pull`` (through ``fetch``), ``ls-remote`` and the lazy fetch of
a partial clone (a ``git fetch`` child). On Linux the helper reads its ancestors' command
lines from ``/proc``; where it cannot tell (another OS, another caller) the answer is
``None`` and the helper keeps its older rule (write where the API token may mint it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

Operation = Literal["read", "write"]

READ_COMMANDS = frozenset({"clone", "fetch", "pull", "ls-remote", "fetch-pack", "remote"})
WRITE_COMMANDS = frozenset({"push", "send-pack"})
# git's options that take the next argument as their value (``git -C dir push``).
_OPTIONS_WITH_VALUE = frozenset({"-c", "-C", "--git-dir", "--work-tree", "--namespace",
                                 "--exec-path", "--config-env", "--super-prefix", "--list-cmds"})
MAX_ANCESTORS = 8  # helper <- (git credential) <- git-remote-http <- git fetch <- git pull <- ...


def git_subcommand(argv: list[str]) -> str | None:
    """``push`` for ``git -C x push origin``; ``remote-http`` for ``git-remote-http``."""
    if not argv:
        return None
    program = os.path.basename(argv[0])
    if program.startswith("git-"):
        return program[len("git-"):]
    if program not in ("git", "git.exe"):
        return None
    args = iter(argv[1:])
    for arg in args:
        if arg in _OPTIONS_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _command_line(proc: Path) -> list[str]:
    raw = (proc / "cmdline").read_bytes()
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _parent(proc: Path) -> int:
    stat = (proc / "stat").read_text()
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
    return int(stat.rpartition(")")[2].split()[1])


def asking_operation(pid: int | None = None, proc_root: Path = Path("/proc")) -> Operation | None:
    """``read`` or ``write`` from the nearest git ancestor that says, else ``None``."""
    current = os.getppid() if pid is None else pid
    for _ in range(MAX_ANCESTORS):
        if current <= 1:
            return None
        proc = proc_root / str(current)
        try:
            command = git_subcommand(_command_line(proc))
            if command in WRITE_COMMANDS:
                return "write"
            if command in READ_COMMANDS:
                return "read"
            current = _parent(proc)
        except (OSError, ValueError, IndexError):
            return None
    return None
