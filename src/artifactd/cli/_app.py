"""The client commands' shared object: console output, the SDK client, and ``abort``.

Every client command receives one ``Application`` (``@pass_app``). User errors leave through
``abort(message, code)``; SDK errors are translated to a message and an exit code once, in
``exit_code_for`` (called by the root group), so no command prints a traceback for them.

rich, the SDK (httpx, pydantic) and the client settings are imported when first used, not
here: ``artifactd mount``/``unmount`` and the credential helper never need them, and they
cost ~0.2 s of start-up. An SDK error can only be raised once the SDK is imported, so
``run_guarded`` looks for one only then.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from rich.console import Console

    from artifactd.cli import _config
    from artifactd.client import Artifacts, Retrying, RetryPolicy
    from artifactd.client import _errors as sdk

SDK_ERRORS_MODULE = "artifactd.client._errors"

F = TypeVar("F", bound=Callable[..., Any])

ENV_RETRIES = "ARTIFACTD_RETRIES"  # retries after the first attempt (docs/cli.md); 0 turns them off
DEFAULT_RETRIES = 3
MAX_RETRIES = 10  # the SDK's 30 s total budget ends the retries before more could be used


class ExitCode(IntEnum):
    """Exit statuses of the client commands (docs/cli.md lists them)."""

    OK = 0
    ERROR = 1  # anything else: a git failure, an unexpected server error
    USAGE = 2  # bad arguments or input (click's own code), refused by the CLI or the server (400, 413)
    CONFIG = 3  # not logged in, unusable config file
    NOT_FOUND = 4  # repo, token, ref or file does not exist
    CONFLICT = 5  # name taken, repo not ready, token already revoked, target directory not empty
    AUTH = 6  # API token missing, invalid, revoked, or without the needed permission
    UNAVAILABLE = 7  # server unreachable, timed out, rate limited, 5xx, or not an artifactd answer
    IMPORT_FAILED = 8  # an import ended in status failed, or did not finish in time


def exit_code_for(exc: sdk.ArtifactsError) -> ExitCode:
    from artifactd.client import _errors as sdk

    if isinstance(exc, sdk.ValidationError | sdk.PayloadTooLarge):
        return ExitCode.USAGE
    if isinstance(exc, sdk.ConfigurationError):
        return ExitCode.CONFIG
    if isinstance(exc, sdk.NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(exc, sdk.Conflict):
        return ExitCode.CONFLICT
    if isinstance(exc, sdk.AuthenticationError | sdk.PermissionDenied):
        return ExitCode.AUTH
    if isinstance(
        exc, sdk.TransportError | sdk.UnexpectedResponse | sdk.ServerError | sdk.RateLimited
    ):
        return ExitCode.UNAVAILABLE
    if isinstance(exc, sdk.ImportFailed | sdk.WaitTimeout):
        return ExitCode.IMPORT_FAILED
    return ExitCode.ERROR


class Application:
    """Console, settings and SDK client of one CLI invocation. Nothing is read until used."""

    def __init__(self, namespace: str | None = None):
        self.namespace_option = namespace

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @cached_property
    def error_console(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    # Configuration and client

    @cached_property
    def settings(self) -> _config.ClientSettings:
        from artifactd.cli import _config

        try:
            return _config.load(namespace=self.namespace_option)
        except _config.ConfigFileError as exc:
            self.abort(str(exc), ExitCode.CONFIG)

    @property
    def namespace(self) -> str:
        return self.settings.namespace or "default"

    @cached_property
    def client(self) -> Artifacts:
        from artifactd.client import Artifacts

        settings = self.settings
        if settings.missing:
            self.abort(
                "not logged in: run `artifactd login`, or set ARTIFACTD_URL, ARTIFACTD_ACCOUNT_ID "
                f"and ARTIFACTD_API_TOKEN (missing: {', '.join(settings.missing)})",
                ExitCode.CONFIG,
            )
        return Artifacts(
            settings.url, settings.account_id, settings.api_token, self.namespace,
            timeout=settings.timeout, retries=self.retry_policy(),
        )

    def retry_policy(self) -> RetryPolicy:
        """The SDK's retry policy, told to say on stderr why the command is waiting."""
        from artifactd.client import RetryPolicy

        raw = os.environ.get(ENV_RETRIES, "").strip()
        retries = DEFAULT_RETRIES
        if raw:
            if not raw.isdigit() or int(raw) > MAX_RETRIES:
                self.abort(f"{ENV_RETRIES} must be a whole number from 0 to {MAX_RETRIES}, got {raw!r}",
                           ExitCode.CONFIG)
            retries = int(raw)

        def tell(retrying: Retrying) -> None:
            self.display_info(
                f"{retrying.method} {retrying.path}: {retrying.reason}; retrying in "
                f"{retrying.delay:.1f} s (attempt {retrying.attempt + 1} of {retries + 1})"
            )

        return RetryPolicy(attempts=retries + 1, on_retry=tell)

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()

    # Output

    def display(self, text: str = "", *, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False)

    def display_info(self, text: str) -> None:
        """Progress and hints: on stderr, so stdout stays the command's result."""
        self.error_console.print(text, markup=False, style="dim")

    def display_success(self, text: str) -> None:
        self.error_console.print(text, markup=False, style="green")

    def display_warning(self, text: str) -> None:
        self.error_console.print(text, markup=False, style="yellow")

    def display_error(self, text: str) -> None:
        self.error_console.print(f"Error: {text}", markup=False, style="red")

    def display_json(self, value: Any) -> None:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))

    def display_pairs(self, pairs: Sequence[tuple[str, object]]) -> None:
        width = max((len(key) for key, _ in pairs), default=0)
        for key, value in pairs:
            self.display(f"{key + ':':<{width + 1}} {'' if value is None else value}")

    def display_table(self, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table for people; tab-separated rows without a header when stdout is not a terminal."""
        print_table(self.console, columns, rows)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner on a terminal, one line of text otherwise; yields ``update(text)``, which
        changes the spinner's text (or prints one more line)."""
        if self.error_console.is_terminal:
            with self.error_console.status(text) as spinner:
                yield lambda new: spinner.update(new)
        else:
            self.display_info(text)
            yield self.display_info

    def abort(self, message: str, code: int = ExitCode.ERROR) -> NoReturn:
        self.display_error(message)
        raise click.exceptions.Exit(int(code))


def print_table(console: Console, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows as a table on a terminal, tab-separated without a header otherwise; never a value cut.

    rich fits a table to the terminal by ellipsising cells, which would cut ids, names and
    remotes; instead the table is laid out as wide as its widest cells need, and a narrow
    terminal wraps the long lines whole.
    """
    from rich.console import Console
    from rich.table import Table

    cells = [["" if value is None else str(value) for value in row] for row in rows]
    if not console.is_terminal:
        for row in cells:
            click.echo("\t".join(row))
        return
    widths = [max([len(title), *(len(row[index]) for row in cells)]) for index, title in enumerate(columns)]
    needed = sum(widths) + 2 * (len(widths) - 1)  # rich's default padding: one space each side
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in cells:
        table.add_row(*row)
    wide = Console(file=console.file, width=max(needed, console.width), highlight=False,
                   force_terminal=True, color_system="auto" if console.color_system else None, soft_wrap=True)
    wide.print(table)


def pass_app(func: F) -> F:
    """Give a command the ``Application`` the root group made."""

    @click.pass_context
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        app = ctx.find_object(Application)
        if app is None:  # a group invoked on its own, as in tests
            app = ctx.ensure_object(Application)
        return ctx.invoke(func, app, *args, **kwargs)

    return functools.update_wrapper(wrapper, func)  # type: ignore[return-value]


def run_guarded(ctx: click.Context, invoke: Callable[[], Any]) -> Any:
    """Run a command; an SDK error becomes a one-line message and its exit code."""
    try:
        return invoke()
    except Exception as exc:
        sdk = sys.modules.get(SDK_ERRORS_MODULE)  # not imported: the command raised no SDK error
        if sdk is None or not isinstance(exc, sdk.ArtifactsError):
            raise
        app = ctx.find_object(Application) or Application()
        app.display_error(str(exc))
        raise click.exceptions.Exit(int(exit_code_for(exc))) from None
    finally:
        opened = ctx.find_object(Application)
        if opened is not None:
            opened.close()


def stdout_binary() -> Any:
    return sys.stdout.buffer
