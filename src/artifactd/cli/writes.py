"""``artifactd commit`` and ``artifactd merge``: write to a repo without git or a checkout."""

from __future__ import annotations

from pathlib import Path

import click

from artifactd.cli._app import Application, ExitCode, pass_app
from artifactd.cli.repo import JSON_HELP
from artifactd.client import Delete, Move, Put
from artifactd.client._writes import Change


def _pair(value: str, option: str) -> tuple[str, str]:
    left, sep, right = value.partition("=")
    if not sep or not left or not right:
        raise click.BadParameter(f"expected PATH=VALUE, got {value!r}", param_hint=option)
    return left, right


@click.command()
@click.argument("repo")
@click.option("-b", "--branch", required=True, help="Branch to commit on.")
@click.option("-m", "--message", required=True, help="Commit message.")
@click.option("--put", "puts", multiple=True, metavar="PATH=FILE",
              help="Write local FILE (bytes as they are; '-' for stdin) to PATH.")
@click.option("--put-text", "texts", multiple=True, metavar="PATH=TEXT", help="Write TEXT to PATH.")
@click.option("--executable", "executables", multiple=True, metavar="PATH",
              help="Give PATH (of a --put or --put-text) mode 100755.")
@click.option("--delete", "deletes", multiple=True, metavar="PATH", help="Delete PATH.")
@click.option("--move", "moves", multiple=True, metavar="FROM=TO", help="Move file FROM to TO.")
@click.option("--expected-head", default=None, help="Commit only if the branch is at this commit.")
@click.option("--base", default=None, help="Where a new branch starts (ref or commit).")
@click.option("--author", default=None, metavar="'NAME <EMAIL>'", help="Author of the commit.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP + ' ({"sha", "tree", "branch", "parents"})')
@pass_app
def commit(app: Application, repo: str, branch: str, message: str, puts: tuple[str, ...],
           texts: tuple[str, ...], executables: tuple[str, ...], deletes: tuple[str, ...],
           moves: tuple[str, ...], expected_head: str | None, base: str | None,
           author: str | None, as_json: bool) -> None:
    """Commit files to BRANCH of REPO in one atomic commit, without git.

    \b
    Examples:
      artifactd commit starter-repo -b main -m "Add report" --put report.md=./report.md
      artifactd commit starter-repo -b main -m "Tidy" --delete old.txt --move a.txt=b.txt
      echo hi | artifactd commit starter-repo -b dev --base main -m "hi" --put hi.txt=-
    """
    changes: list[Change] = []
    for value in puts:
        path, source = _pair(value, "--put")
        data = click.get_binary_stream("stdin").read() if source == "-" else Path(source).read_bytes()
        changes.append(Put(path, data, "100755" if path in executables else "100644"))
    for value in texts:
        path, text = _pair(value, "--put-text")
        changes.append(Put(path, text, "100755" if path in executables else "100644"))
    changes += [Delete(path) for path in deletes]
    changes += [Move(*_pair(value, "--move")) for value in moves]
    if not changes:
        app.abort("Nothing to commit: give --put, --put-text, --delete or --move", ExitCode.USAGE)
    person = None
    if author is not None:
        name, _, rest = author.partition("<")
        if not rest.endswith(">") or not name.strip():
            app.abort("--author must look like 'Name <email>'", ExitCode.USAGE)
        person = {"name": name.strip(), "email": rest[:-1].strip()}
    made = app.client.get(repo).commit_files(branch, message, changes, author=person,
                                             expected_head=expected_head, base=base)
    if as_json:
        app.display_json({"sha": made.sha, "tree": made.tree, "branch": made.branch,
                          "parents": made.parents})
        return
    click.echo(made.sha)


@click.command()
@click.argument("repo")
@click.argument("head")
@click.option("--into", "target", default=None, help="Target branch (default: the default branch).")
@click.option("--strategy", type=click.Choice(["merge", "squash", "fast-forward"]), default="merge",
              show_default=True)
@click.option("-m", "--message", default=None, help="Message of the merge commit.")
@click.option("--dry-run", is_flag=True, help="Only report whether it merges, and the conflicts.")
@click.option("--expected-head", default=None, help="Merge only if the target is at this commit.")
@click.option("--json", "as_json", is_flag=True,
              help=JSON_HELP + ' ({"mergeable", "sha", "conflicts", ...}: the API\'s result)')
@pass_app
def merge(app: Application, repo: str, head: str, target: str | None, strategy: str,
          message: str | None, dry_run: bool, expected_head: str | None, as_json: bool) -> None:
    """Merge HEAD (a branch of REPO, or FORK:BRANCH of a repo of the namespace) into REPO.

    A dry run that does not merge cleanly exits 5 (conflict) after listing the files.

    \b
    Examples:
      artifactd merge baseline agent-7:main --dry-run
      artifactd merge baseline agent-7:main -m "Take agent 7's fix"
    """
    result = app.client.get(repo).merge(head, target=target, strategy=strategy, message=message,
                                        dry_run=dry_run, expected_head=expected_head)
    if as_json:
        app.display_json({
            "mergeable": result.mergeable, "sha": result.sha, "tree": result.tree,
            "target": result.target, "head": result.head, "merge_base": result.merge_base,
            "fast_forward": result.fast_forward, "messages": result.messages,
            "conflicts": [{"path": c.path, "hunks": c.hunks} for c in result.conflicts],
        })
    elif result.mergeable:
        click.echo(result.sha or f"mergeable into {result.target}")
    else:
        for conflict in result.conflicts:
            click.echo(f"CONFLICT {conflict.path}")
    if not result.mergeable:
        raise SystemExit(int(ExitCode.CONFLICT))
