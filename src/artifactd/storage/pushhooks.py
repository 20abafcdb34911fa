"""The server-owned receive-pack hook, and the pipes over which it talks to the server.

receive-pack runs ``pre-receive`` once the pushed objects are in its quarantine directory and
before any ref moves. It is a small POSIX shell script in the server's ``core.hooksPath`` (a
repo's own config can never name another). The script forwards its name, the quarantine
path and git's ``<old> <new> <ref>`` lines to the server over a pipe inherited from it, then
waits for one answer line on a second pipe (both opened as ``/dev/fd/N``: dash, a common
``/bin/sh``, only redirects descriptors 0-9): ``ok``, or ``refuse <message>``, which it
prints (git relays it to the client as ``remote: ...``) before refusing the push.

So the server learns what a push is about to change from git itself, whatever capabilities
the client asked for; what it changed is then read from the refs on disk (see
services/git/push_guard.py). There is no ``post-receive``: each hook is a process git starts
for every push, and the refs say the same. A receive-pack not started by the server has no
pipes, and its pushes are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

ENV_TO_SERVER = "ARTIFACTD_PUSH_TO_SERVER"
ENV_FROM_SERVER = "ARTIFACTD_PUSH_FROM_SERVER"
HOOKS = ("pre-receive",)
# git's ref lines are 2 x 40 hex + a ref name (at most a few hundred bytes); a push with
# this many bytes of them is refused rather than buffered.
MAX_MESSAGE = 16 << 20
_END = b"\n.\n"
_UPDATE = re.compile(rb"([0-9a-f]{40}|[0-9a-f]{64}) ([0-9a-f]{40}|[0-9a-f]{64}) (refs/\S+)")

HOOK_SCRIPT = f"""#!/bin/sh
# Written by artifactd; do not edit. Tells the server what this push changes, obeys its answer.
to=${{{ENV_TO_SERVER}:-}}
from=${{{ENV_FROM_SERVER}:-}}
if [ -z "$to" ] || [ -z "$from" ]; then
    echo "artifactd: pushes are only accepted through the server" >&2
    exit 1
fi
# Builtins only (no cat): a hook costs git one process.
{{
    printf '%s %s\\n' "${{0##*/}}" "${{GIT_QUARANTINE_PATH:--}}"
    while IFS= read -r line; do printf '%s\\n' "$line"; done
    printf '.\\n'
}} >"/dev/fd/$to" || exit 1
IFS= read -r answer <"/dev/fd/$from" || answer="refuse the server did not answer"
[ "$answer" = ok ] && exit 0
printf '%s\\n' "${{answer#refuse }}" >&2
exit 1
"""


def install_hooks(hooks_dir: Path) -> None:
    """Write the hook scripts (atomically, so a concurrent push never runs half of one)."""
    for name in HOOKS:
        target = hooks_dir / name
        with contextlib.suppress(FileNotFoundError):
            if target.read_text() == HOOK_SCRIPT and os.access(target, os.X_OK):
                continue
        staging = hooks_dir / f".{name}.{secrets.token_hex(4)}"
        staging.write_text(HOOK_SCRIPT)
        staging.chmod(0o755)
        os.replace(staging, target)


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str


@dataclass(frozen=True)
class HookMessage:
    hook: str  # "pre-receive"
    quarantine: str | None  # GIT_QUARANTINE_PATH as git set it; None without one
    updates: tuple[RefUpdate, ...]


def parse_message(raw: bytes) -> HookMessage | None:
    """One hook's message; None when it is not what the script writes."""
    head, _, rest = raw.partition(b"\n")
    hook, _, quarantine = head.decode("utf-8", "replace").partition(" ")
    if hook not in HOOKS:
        return None
    updates = []
    for line in rest.splitlines():
        match = _UPDATE.fullmatch(line)
        if match is None:
            return None
        old, new, ref = (part.decode("utf-8", "replace") for part in match.groups())
        updates.append(RefUpdate(old, new, ref))
    return HookMessage(hook, None if quarantine in ("", "-") else quarantine, tuple(updates))


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PushChannel:
    """The two pipes between one receive-pack's hooks and the server."""

    def __init__(self) -> None:
        self._from_hooks, self._hooks_write = os.pipe()
        self._hooks_read, self._to_hooks = os.pipe()
        os.set_blocking(self._from_hooks, False)
        self._child_open = True

    @property
    def child_fds(self) -> tuple[int, int]:
        """The ends receive-pack (and so its hooks) must inherit."""
        return (self._hooks_write, self._hooks_read)

    def env(self) -> dict[str, str]:
        return {ENV_TO_SERVER: str(self._hooks_write), ENV_FROM_SERVER: str(self._hooks_read)}

    def spawned(self) -> None:
        """Close our copies of the child's ends, so that its exit reads as end-of-file."""
        if self._child_open:
            self._child_open = False
            os.close(self._hooks_write)
            os.close(self._hooks_read)

    async def messages(self) -> AsyncIterator[HookMessage | None]:
        """Each hook's message as it arrives (None for a malformed one), until EOF."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while True:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._from_hooks, _set_done, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self._from_hooks)
            try:
                chunk = os.read(self._from_hooks, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(_END)) >= 0:
                raw = bytes(buffer[:end])
                del buffer[:end + len(_END)]
                yield parse_message(raw)
            if len(buffer) > MAX_MESSAGE:
                yield None
                return

    def answer(self, line: str) -> None:
        """Send the waiting hook its answer; a hook already gone is not an error."""
        text = " ".join(line.split())  # one line, whatever the message held
        with contextlib.suppress(BrokenPipeError, OSError):
            os.write(self._to_hooks, f"{text}\n".encode())

    def close(self) -> None:
        self.spawned()
        for fd in (self._from_hooks, self._to_hooks):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._from_hooks = self._to_hooks = -1
