"""How the CLI reports results and refusals: one line on stderr, exit 2 for bad input, 1 otherwise."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from cmvtrial.errors import CmvtrialError

F = TypeVar("F", bound=Callable[..., Any])

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL; default from CMVTRIAL_DATABASE_URL, else sqlite:///cmvtrial.db.",
        show_default=False,
    ),
]


def print_error(error: CmvtrialError) -> None:
    """One line for the error, then one indented line per listed problem (if any)."""
    typer.echo(f"error [{error.code}]: {error.message}", err=True)
    for problem in error.details.get("problems", []) or []:
        where = problem.get("location") or problem.get("loc") or ""
        typer.echo(f"  {where}: {problem.get('message', problem)}", err=True)


def handles_errors(command: F) -> F:
    """Turn domain errors raised by a command into a one-line message and the family's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CmvtrialError as error:
            print_error(error)
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def make_console() -> Any:
    """The console commands print tables to (highlighting off: trial data are not code)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def make_table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def echo_json(data: object) -> None:
    """``--json`` output: dates as ISO text, times in UTC, decimals as text (the audit trail's JSON form)."""
    from cmvtrial.core.audit_chain import to_jsonable

    typer.echo(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False))
