"""`cmvtrial init | status | site | user | audit`: setting up a trial database and checking its audit trail."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
