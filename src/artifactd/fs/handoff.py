"""``add-repo`` handed to a running daemon, with the fewest imports: the client's side.

With a daemon running for the mount root, ``add-repo`` is one request on its control
socket; the daemon, FUSE side imported already, mounts the repo and answers. The command's
own start-up is then a large share of the time to a usable mount (docs/benchmarks.md), and
click and the rest of the commands (``commands.py``) are most of its imports. So the
guide's plain form (``--name``, ``--remote``, ``--branch``, ``--mount-root``,
``--credential-ttl``, each once, as ``--opt value`` or ``--opt=value``) is parsed here;
anything else (``--help``, an unknown or repeated option, a value that looks like an option,
a mount root that is not a directory) returns ``None`` and the click command takes it
from the start, with its own messages. The name, branch and remote are checked by the
daemon (``inputs``, as the click command checks them), whose one-line error is printed as
the click command prints its own; only ``os``, ``socket`` and ``json`` are imported for
that. With no daemon listening, the repo is recorded here (``repos.register``: the
guide's flow, ``add-repo`` before ``daemon``), still without click.
"""

from __future__ import annotations

import os
import socket
import sys

# Not imported from ``inputs``, ``daemonctl`` and ``state`` (dataclasses, pathlib, re,
# typing: most of this command's imports); test_mount_handoff checks they agree.
DEFAULT_CREDENTIAL_TTL = 86400
SOCKET = ".artifact-fs/run/daemon.ctl"
ANSWER_TIMEOUT = 900.0  # a clone of a large repo first, then its mount
MAX_ANSWER = 1 << 16

OPTIONS = {"--name": "name", "--remote": "remote", "--branch": "branch", "--mount-root": "mount_root",
           "--credential-ttl": "credential_ttl"}
REQUIRED = ("name", "remote", "mount_root")


def parse(argv: list[str]) -> dict[str, str] | None:
    """The options of ``add-repo ARGV``, or ``None`` when they are not the plain form."""
    values: dict[str, str] = {}
    at = 0
    while at < len(argv):
        key, equals, value = argv[at].partition("=")
        if key not in OPTIONS or OPTIONS[key] in values:
            return None
        if not equals:
            if at + 1 >= len(argv):
                return None
            value = argv[at + 1]
            at += 1
        if value.startswith("-"):  # click's reading of such a value is click's to give
            return None
        values[OPTIONS[key]] = value
        at += 1
    ttl = values.get("credential_ttl")
    bad_ttl = ttl is not None and not (ttl.isdigit() and int(ttl) >= 1)
    if bad_ttl or any(key not in values for key in REQUIRED):
        return None
    return values


def run(argv: list[str]) -> int | None:
    """The exit code of ``add-repo ARGV`` handed to the root's running daemon; ``None`` when
    the click command must run instead (see the module)."""
    values = parse(argv)
    if values is None:
        return None
    root = os.path.abspath(values["mount_root"])
    if not os.path.isdir(root):  # the click command says what is wrong with it
        return None
    request = {"op": "add-repo", "name": values["name"], "remote": values["remote"],
               "branch": values.get("branch", "main"),
               "credential_ttl": int(values.get("credential_ttl", DEFAULT_CREDENTIAL_TTL))}
    try:
        answer = ask(os.path.join(root, SOCKET), request)
    except OSError as exc:
        print(f"artifact-fs: {exc}", file=sys.stderr)
        return 1
    if answer is None:  # no daemon: the repo recorded here, for `daemon` to mount (still no click)
        return record_here(values, root, request)
    if not answer.get("ok"):  # the daemon checked the name, branch and remote: its words
        print(f"artifact-fs: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"added {values['name']}: {answer['remote']} {answer['branch']} -> {answer['mount_point']} "
          "(mounted by the running daemon)")
    return 0


def record_here(values: dict[str, str], root: str, request: dict[str, object]) -> int:
    """``add-repo`` with no daemon running (``repos.register``), without click: a bad name,
    branch, remote or token gets the click command's one-line error."""
    from artifactd.fs.inputs import InputError
    from artifactd.fs.repos import register

    try:
        config, _ = register(values["name"], values["remote"], str(request["branch"]), root,
                             int(str(request["credential_ttl"])))
    except InputError as exc:
        print(f"artifact-fs: {exc}", file=sys.stderr)
        return 1
    print(f"added {config.name}: {config.remote} {config.branch} -> {config.mount_point}")
    return 0


def ask(path: str, request: dict[str, object]) -> dict[str, object] | None:
    """The daemon's answer to ``request`` on its socket at ``path``; ``None`` when no daemon
    listens there (no socket, or one a daemon that is gone left)."""
    import json

    try:  # a socket path is limited to 107 bytes: reach it through its open directory
        folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            try:
                client.connect(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
            except OSError:
                return None
            client.settimeout(ANSWER_TIMEOUT)
            client.sendall(json.dumps(request).encode() + b"\n")
            data = read_line(client, MAX_ANSWER)
    finally:
        os.close(folder)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise OSError("the daemon closed the connection without an answer: see its output")
    return answer


def read_line(connection: socket.socket, limit: int) -> bytes:
    """One newline-ended message of the control socket (both sides), at most ``limit``
    bytes and the chunk that passed it; less if the peer closed first."""
    data = b""
    while not data.endswith(b"\n") and len(data) <= limit:
        chunk = connection.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data
