"""``add-repo`` handed to a running daemon, with the fewest imports: the client's side.

With a daemon running for the mount root, ``add-repo`` is one request on its control
socket; the daemon, FUSE side imported already, mounts the repo and answers. The command's
own start-up is then a large share of the time to a usable mount (docs/benchmarks.md), and
click and the rest of the commands (``commands.py``) are most of its imports. So the
guide's plain form (``--name``, ``--remote``, ``--branch``, ``--mount-root``,
``--credential-ttl``, each once, as ``--opt value`` or ``--opt=value``) is parsed here;
anything else (``--help``, an unknown or repeated option, a value that looks like an option,
a bad input, no daemon listening) returns ``None`` and the click command takes it from the
start, with its own messages.
"""

from __future__ import annotations

import sys

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
    from artifactd.fs.inputs import (
        DEFAULT_CREDENTIAL_TTL,
        InputError,
        check_branch,
        check_mount_root,
        check_name,
        parse_remote,
    )

    branch = values.get("branch", "main")
    try:
        check_name(values["name"])
        check_branch(branch)
        url = parse_remote(values["remote"]).url
        root = check_mount_root(values["mount_root"])
    except InputError:
        return None
    from artifactd.fs import daemonctl
    from artifactd.fs.write.control import ControlError

    ttl = int(values.get("credential_ttl", DEFAULT_CREDENTIAL_TTL))
    request = {"op": "add-repo", "name": values["name"], "remote": values["remote"], "branch": branch,
               "credential_ttl": ttl}
    try:
        answer = daemonctl.ask_at(daemonctl.socket_at(root), request)
    except (ControlError, OSError) as exc:
        print(f"artifact-fs: {exc}", file=sys.stderr)
        return 1
    if answer is None:  # no daemon: the clone here, by the click command
        return None
    if not answer.get("ok"):
        print(f"artifact-fs: {answer.get('error')}", file=sys.stderr)
        return 1
    print(f"added {values['name']}: {url} {branch} -> {answer['mount_point']} "
          "(mounted by the running daemon)")
    return 0
