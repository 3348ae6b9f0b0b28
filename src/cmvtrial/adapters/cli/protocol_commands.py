"""`cmvtrial protocol …`: list, show, validate and print the schema of protocol files."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    protocol_app = typer.Typer(help="Protocol files: list, show, validate, schema.", no_args_is_help=True)
    app.add_typer(protocol_app, name="protocol")
