"""``add-repo``'s check of the remote without cloning it: one protocol-v2 ``ls-refs``.

With no daemon running, ``add-repo`` records the repo and leaves the blobless clone to the
mount, which mounts the root first and clones behind it (``rootview.py``): the guide's
``ls`` after ``daemon &`` then waits for no clone. What the clone would have found wrong
(no repository there, a refused token, no such branch) must still be ``add-repo``'s
one-line error, so the remote is asked for the branch, with the given credentials, over
the git protocol the clone would use. A remote that does not answer ``ls-refs`` that way
(``None``) gets the clone at once, as before.
"""

from __future__ import annotations

from artifactd.fs import fetchpack
from artifactd.fs.inputs import InputError, Remote
from artifactd.fs.wire import Remote as Connection
from artifactd.fs.wire import WireError

TIMEOUT = 30.0


def missing_branch(url: str, branch: str) -> InputError:
    return InputError(f"branch {branch!r} does not exist on {url}: check --branch")


def refused(url: str) -> InputError:
    return InputError(f"the remote refused the credentials for {url}: pass a valid "
                      "token in --remote (https://x:TOKEN@host/...)")


def no_repository(url: str) -> InputError:
    return InputError(f"no git repository at {url}: check --remote")


def branch_exists(remote: Remote, branch: str) -> bool:
    """``True`` when the remote has ``branch`` (its ``ls-refs`` says so); ``False`` when it
    cannot be asked this way (the caller clones to find out); ``InputError`` when the
    answer is that the repo, the token or the branch is wrong."""
    ref = f"refs/heads/{branch}"
    connection = Connection(remote.url, remote.auth, TIMEOUT)
    try:
        status, answer = connection.request("POST", "/git-upload-pack", fetchpack.ls_refs_body(ref),
                                            fetchpack.POST_HEADERS)
    except WireError:  # unreachable: the clone says why, in git's words
        return False
    finally:
        connection.close()
    if status in (401, 403):
        raise refused(remote.url)
    if status == 404:
        raise no_repository(remote.url)
    refs = fetchpack.parse_ls_refs(answer) if status == 200 else None
    if refs is None:  # not a v2 answer (an older server, a proxy's page): the clone finds out
        return False
    if ref not in refs:
        raise missing_branch(remote.url, branch)
    return True

