"""The git credential helper: ``git-credential-artifactd`` and ``artifactd credential-helper setup``.

Git runs ``git-credential-artifactd get`` with the URL it needs credentials for
(``protocol``, ``host``, ``path`` lines on stdin; ``path`` needs ``credential.useHttpPath``).
For a remote of this server the helper answers ``username``/``password`` (a repo token's
secret, the spec's Basic-auth form); for anything else it answers nothing, which leaves the
URL to the next helper. A token is only minted for a URL that the server itself reports as
the repo's ``remote``.

Scope: ``read`` when the git command that asked is a clone or fetch, ``write`` when it is a
push (``_git_operation`` says why the helper has to look at its parent processes for that).
Tokens are cached (``_token_cache``, mode 0600) and reused while they have life left, so a
clone, a fetch and a push in a row mint one read and one write token, not three; ``erase``
(git's word for "the server refused this one") drops the refused token from the cache.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click

from artifactd.cli import _config, _token_cache
from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.cli._git_operation import Operation, asking_operation
from artifactd.client import Artifacts, ArtifactsError, NotFound, PermissionDenied, token_expires_at
from artifactd.client._core import normalize_base_url

HELPER_TTL = 900  # seconds: cached, one token serves the git commands of these 15 minutes
SCRIPT = "git-credential-artifactd"
# ``<prefix>/git/<account>/<namespace>/<repo>.git``; ``<account>/`` is absent when the remote
# template puts the account in the host name (``https://<account>.git.example.com/git/ns/repo.git``).
_REMOTE_PATH = re.compile(
    r"^(?:.*/)?git/(?:(?P<account>[0-9a-f]{32})/)?(?P<namespace>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/?$"
)
# ``<namespace>/<repo>.git`` (the changelog's remote form): claimed only on the server's own host.
_BARE_REMOTE_PATH = re.compile(r"^(?P<namespace>[^/]+)/(?P<repo>[^/]+?)\.git/?$")


@dataclass(frozen=True)
class Wanted:
    protocol: str
    host: str
    path: str
    namespace: str
    repo: str

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.host}/{self.path}"


def parse_request(lines: Iterable[str]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for line in lines:
        line = line.rstrip("\r\n")
        if not line:
            break
        key, sep, value = line.partition("=")
        if sep:
            attrs[key] = value
    return attrs


def match(attrs: dict[str, str], account_id: str, server_host: str = "") -> Wanted | None:
    """The repo a credential request is for, if it looks like one of this account's remotes.

    ``account_id`` is empty with a ``/v1/api`` login (the API token's account, unknown
    here): any account is taken, and the remote check in ``answer`` decides.
    """
    protocol, host, path = attrs.get("protocol", ""), attrs.get("host", ""), attrs.get("path", "")
    if protocol not in ("http", "https") or not host or not path:
        return None
    found = _REMOTE_PATH.match(path)
    if not found:
        bare = _BARE_REMOTE_PATH.match(path)
        if bare is None or not server_host or host.lower() != server_host.lower():
            return None
        return Wanted(protocol, host, path.strip("/"), bare.group("namespace"), bare.group("repo"))
    if not account_id:
        pass
    elif found.group("account") is None:
        if host.split(".", 1)[0].lower() != account_id:
            return None
    elif found.group("account") != account_id:
        return None
    return Wanted(protocol, host, path.strip("/"), found.group("namespace"), found.group("repo"))


def _same_remote(remote: str, wanted: Wanted) -> bool:
    def canonical(url: str) -> str:
        parts = urlsplit(url)
        path = parts.path.strip("/").removesuffix(".git")
        return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}/{path}"

    return canonical(remote) == canonical(wanted.url)


def _reply(attrs: dict[str, str], secret: str, expires_at: float | None) -> str:
    lines = [f"username={attrs.get('username') or 'x'}", f"password={secret}"]
    if expires_at is not None:
        lines.append(f"password_expiry_utc={int(expires_at)}")
    return "\n".join(lines) + "\n"


def answer(
    settings: _config.ClientSettings, attrs: dict[str, str], scope: str, ttl: int, *,
    operation: Operation | None = None, cache: Path | None = None,
) -> str | None:
    """The helper's reply to ``get``: credential lines, or ``None`` when the URL is not ours.

    ``scope`` ``auto`` follows ``operation`` (what the asking git command does); when that is
    unknown, it is ``write`` where the API token may mint it (``read`` for read-only repos).
    """
    if settings.missing:
        return None
    wanted = match(attrs, settings.account_id, urlsplit(normalize_base_url(settings.url)).netloc)
    if wanted is None:
        return None
    desired: str | None = scope if scope in ("read", "write") else operation

    def key(for_scope: str) -> str:
        return _token_cache.cache_key(settings.url, settings.account_id, settings.api_token,
                                      wanted.url, for_scope)

    if cache is not None:
        for candidate in [desired] if desired else ["write", "read"]:
            cached = _token_cache.lookup(cache, key(candidate))
            if cached is not None:
                return _reply(attrs, cached.secret, cached.expires_at)
    with Artifacts(settings.url, settings.account_id, settings.api_token, wanted.namespace,
                   timeout=settings.timeout) as client:
        try:
            repo = client.get(wanted.repo)
        except NotFound:
            return None
        if not _same_remote(repo.remote, wanted):
            return None
        if desired is not None and scope != "auto":
            minted = repo.create_token(desired, ttl)
        elif desired == "read" or repo.read_only:
            minted = repo.create_token("read", ttl)  # a push to a read-only repo fails either way
        else:
            try:
                minted = repo.create_token("write", ttl)
            except PermissionDenied:
                minted = repo.create_token("read", ttl)
    expires = token_expires_at(minted.plaintext)
    expires_at = expires.timestamp() if expires is not None else None
    if cache is not None and expires_at is not None:
        _token_cache.remember(cache, key(minted.scope), _token_cache.CachedToken(minted.secret, expires_at))
    return _reply(attrs, minted.secret, expires_at)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scope", type=click.Choice(["auto", "read", "write"]), default="auto", show_default=True,
              help="auto: read for clone and fetch, write for push (when the git command cannot be "
                   "told: write where the API token may mint it, read for read-only repos).")
@click.option("--ttl", type=click.IntRange(60, 86_400), default=HELPER_TTL, show_default=True,
              metavar="SECONDS", help="Lifetime of each minted token.")
@click.option("--no-cache", is_flag=True, help="Mint a token for every git command instead of reusing one.")
@click.argument("action", type=click.Choice(["get", "store", "erase"]))
def git_credential(scope: str, ttl: int, no_cache: bool, action: str) -> None:
    """Git credential helper for artifactd remotes (git runs it; see `artifactd credential-helper setup`).

    \b
    Example (what git does):
      printf 'protocol=http\\nhost=127.0.0.1:8787\\npath=git/<account>/default/repo.git\\n\\n' \\
        | git-credential-artifactd get
    """
    attrs = parse_request(sys.stdin)
    cache = None if no_cache else _token_cache.cache_path()
    if action == "erase":
        if cache is not None and attrs.get("password"):
            _token_cache.forget_secret(cache, attrs["password"])
        return
    if action != "get":
        return  # tokens are cached when minted; git's own "store" has nothing to add
    try:
        settings = _config.load()
        reply = answer(settings, attrs, scope, ttl, operation=asking_operation(), cache=cache)
    except (_config.ConfigFileError, ArtifactsError) as exc:
        click.echo(f"git-credential-artifactd: {exc}", err=True)
        sys.exit(1)
    if reply:
        sys.stdout.write(reply)


def git_credential_main() -> None:
    """Entry point of the ``git-credential-artifactd`` console script."""
    git_credential.main(prog_name=SCRIPT)


@click.group("credential-helper")
def credential_helper() -> None:
    """Let plain git commands get artifactd tokens by themselves."""


def helper_command(scope: str, ttl: int) -> str:
    """What to put in ``credential.<url>.helper``: ``artifactd`` if git can find the script."""
    options = ([] if scope == "auto" else [f"--scope {scope}"]) + (
        [] if ttl == HELPER_TTL else [f"--ttl {ttl}"]
    )
    if shutil.which(SCRIPT):
        base = "artifactd"
    else:
        beside = Path(sys.executable).parent / SCRIPT
        if not beside.exists():
            raise click.ClickException(f"cannot find the {SCRIPT} script (is artifactd installed?)")
        base = shlex.quote(str(beside.resolve()))  # git runs absolute helper paths directly
    return " ".join([base, *options])


def git_origin(app: Application, git_url: str | None) -> str:
    """``scheme://host[:port]`` of this server's git remotes."""
    if git_url:
        parts = urlsplit(git_url)
    else:
        page = app.client.list(limit=1)
        parts = urlsplit(page.repos[0].remote if page.repos else app.settings.url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        app.abort(f"not an http(s) URL: {git_url!r}", ExitCode.USAGE)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


@credential_helper.command()
@click.option("--scope", type=click.Choice(["auto", "read", "write"]), default="auto", show_default=True,
              help="Scope of the tokens the helper mints.")
@click.option("--ttl", type=click.IntRange(60, 86_400), default=HELPER_TTL, show_default=True,
              metavar="SECONDS", help="Lifetime of each minted token.")
@click.option("--git-url", default=None,
              help="Origin of the git remotes (default: taken from a repo's remote, else the server URL).")
@click.option("--file", "config_file", type=click.Path(dir_okay=False), default=None,
              help="Write to this git config file instead of the global one (~/.gitconfig).")
@click.option("--print", "print_only", is_flag=True, help="Only print the git config commands.")
@click.option("--json", "as_json", is_flag=True,
              help='Print JSON: {"origin", "helper", "commands", "written"} (with --print: written false).')
@pass_app
def setup(
    app: Application, scope: str, ttl: int, git_url: str | None, config_file: str | None,
    print_only: bool, as_json: bool,
) -> None:
    """Configure git to ask git-credential-artifactd for this server's remotes.

    Writes, for the server's git origin URL:

    \b
      credential.<url>.helper = ""           (no other helper stores these short-lived tokens)
      credential.<url>.helper = artifactd
      credential.<url>.useHttpPath = true    (the helper needs the repo's path)

    \b
    Examples:
      artifactd credential-helper setup
      artifactd credential-helper setup --scope read --ttl 600
      artifactd credential-helper setup --print
    """
    origin = git_origin(app, git_url)
    helper = helper_command(scope, ttl)
    where = ["--file", config_file] if config_file else ["--global"]
    section = f"credential.{origin}"
    commands = [
        [*where, "--unset-all", f"{section}.helper"],
        [*where, "--add", f"{section}.helper", ""],
        [*where, "--add", f"{section}.helper", helper],
        [*where, f"{section}.useHttpPath", "true"],
    ]
    report = {"origin": origin, "helper": helper, "written": not print_only,
              "commands": [["git", "config", *args] for args in commands]}
    if print_only and as_json:
        app.display_json(report)
        return
    if print_only:
        for args in commands:
            click.echo(shlex.join(["git", "config", *args]))
        return
    git = shutil.which("git")
    if git is None:
        app.abort("git is not installed (or not on PATH)", ExitCode.ERROR)
    for args in commands:
        done = subprocess.run([git, "config", *args], capture_output=True, text=True, check=False)
        # `--unset-all` of a key that is not there exits 5: nothing to remove is fine.
        if done.returncode != 0 and not (args[len(where)] == "--unset-all" and done.returncode == 5):
            app.abort(f"git config failed: {done.stderr.strip()}", ExitCode.ERROR)
    if as_json:
        app.display_json(report)
        return
    app.display_success(
        f"git now asks artifactd for credentials for {origin} ({helper}); "
        "plain `git clone`, `fetch` and `push` of its remotes just work."
    )
