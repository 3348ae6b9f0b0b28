"""What the CLI tests that use a trial database share: a clean environment, the command run through
Typer's CliRunner, the one-line refusal check, and a database initialised by `cmvtrial init`.

Test modules import what they use: ``from cli_support import CliTrial, cli, init_trial, one_line_error``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli.main import app
from cmvtrial.config import Settings
from cmvtrial.services import accounts
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database, open_database

#: The password `init_trial` gives the first administrator.
ADMIN_PASSWORD = "cli-admin-passphrase"
#: Nothing from the caller's environment (`make test` exports CMVTRIAL_ADMIN_PASSWORD) leaks in; wide
#: enough that Rich does not wrap table cells the tests look for.
CLEAN = {
    "CMVTRIAL_ADMIN_PASSWORD": None,
    "CMVTRIAL_ADMIN_USERNAME": None,
    "CMVTRIAL_DATABASE_URL": None,
    "CMVTRIAL_USER_PASSWORD": None,
    "CMVTRIAL_SIGN_PASSWORD": None,
    "CMVTRIAL_SQLITE_BUSY_TIMEOUT_MS": None,
    "COLUMNS": "250",
}

T = TypeVar("T")


def cli(*args: str, input: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), input=input, env={**CLEAN, **env}, catch_exceptions=False)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def one_line_error(result: Result, code: str, exit_code: int = 1) -> str:
    """The refusal's line (``error [code]: …``), after checking the exit code and that nothing else
    was printed but the indented problems it lists."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith(f"error [{code}]: "), result.stderr
    assert all(line.startswith("  ") for line in lines[1:]), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def init_trial(database_url: str, protocol_id: str) -> str:
    """`cmvtrial init` on an empty database, administrator ``admin`` with ADMIN_PASSWORD."""
    ok(cli("init", "--protocol", protocol_id, "--db", database_url, CMVTRIAL_ADMIN_PASSWORD=ADMIN_PASSWORD))
    return database_url


@contextmanager
def as_admin(url: str, settings: Settings | None = None) -> Iterator[tuple[Database, UnitOfWork, Actor]]:
    """The initialised database, a unit of work on it and its administrator, for building a trial
    through the services; disposed of afterwards."""
    database = open_database(url, settings)
    try:
        uow = UnitOfWork(database.session_factory)
        yield database, uow, accounts.actor_for(uow, "admin")
    finally:
        database.dispose()


@dataclass
class CliTrial:
    """A trial database the tests drive through the CLI, acting as ``user`` unless told otherwise."""

    url: str
    tmp: Path
    user: str | None = None

    def run(self, *args: str, user: str | None | Any = ..., db: bool = True, env: dict[str, str] | None = None,
            input: str | None = None) -> Result:
        acting = self.user if user is ... else user
        extra = [*(("--db", self.url) if db else ()), *(("--as", acting) if acting else ())]
        return cli(*args, *extra, input=input, **(env or {}))

    def file(self, name: str, data: object) -> str:
        """``data`` written to a file in the test's folder (JSON unless it is text already)."""
        path = self.tmp / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return str(path)

    def read(self, query: Callable[[UnitOfWork], T]) -> T:
        """What ``query`` finds in the database now (to check a refusal changed nothing)."""
        database = open_database(self.url)
        try:
            return query(UnitOfWork(database.session_factory))
        finally:
            database.dispose()
