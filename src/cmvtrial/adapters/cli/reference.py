"""Generates docs/cli-reference.md from the commands' own --help, so the reference cannot drift.

Run `make docs` (or `python -m cmvtrial.adapters.cli.reference > docs/cli-reference.md`);
a test fails when the file is out of date.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer.main
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app

HEADER = (
    "# CLI reference\n\n"
    "Generated from each command's `--help` by `make docs`; do not edit by hand.\n"
)
HELP_ENVIRONMENT = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}


def _walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    children = getattr(command, "commands", {}) or {}
    for name in sorted(children):
        yield from _walk(children[name], [*path, name])


def commands() -> list[tuple[list[str], Any]]:
    """Every command and group, as (path after `cmvtrial`, command object)."""
    return [(path, command) for path, command in _walk(typer.main.get_command(app), [])]


def help_text(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=HELP_ENVIRONMENT, prog_name="cmvtrial")
    return result.output.rstrip()


def render() -> str:
    sections = [HEADER]
    for path, _ in commands():
        title = " ".join(["cmvtrial", *path])
        sections.append(f"\n## `{title}`\n\n```text\n{help_text(path)}\n```\n")
    return "".join(sections)


if __name__ == "__main__":
    print(render(), end="")
