"""A worker's open-file budget: the descriptors its connections, its git processes and its
content reader's open repositories need (``http.protocol.ensure_descriptor_budget`` raises
the limit to it at start-up; ``reader_repo_budget`` fits the reader to what was granted)."""

from __future__ import annotations

import resource

from artifactd.config import Settings
from artifactd.storage import objectreader

# Descriptors per git process serving a client (stdin, stdout, stderr pipes, and some slack
# for the database).
DESCRIPTORS_PER_GIT = 4
DESCRIPTORS_BASE = 64


def fixed_descriptors(settings: Settings) -> int:
    """Descriptors a worker needs besides its content reader's open repositories."""
    return (settings.http_max_connections + settings.http_connection_reserve
            + DESCRIPTORS_PER_GIT * settings.git_max_processes + DESCRIPTORS_BASE)


def reader_repo_budget(settings: Settings) -> int:
    """How many repositories the content reader may keep open: ``content_reader_max_repos``,
    or fewer when the open-file limit leaves less room (the rest of a worker's descriptors
    come first); never below ``objectreader.MIN_HANDLES``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.content_reader_max_repos
    room = (soft - fixed_descriptors(settings)) // objectreader.DESCRIPTORS_PER_HANDLE
    return max(objectreader.MIN_HANDLES, min(settings.content_reader_max_repos, room))
