"""What every database command shares: the ``--as`` and ``--reason`` options, the settings, the open
database, the user the command acts as, and the subject the user named.

A command reads its options, opens the database once, acts as one user and calls one service; this
module is that sequence written once, so each command keeps only what is its own. The acting user is
looked up on first use, not on opening: a command that parses a file or asks for a password first
reports that problem before it touches the user table, as it always has. A unit of work is one
transaction, so ``uow()`` gives a fresh one per service call. Heavy modules (pydantic, SQLAlchemy)
are imported inside the functions so that `cmvtrial --help` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.config import Settings
    from cmvtrial.services.permissions import Actor
    from cmvtrial.services.unit_of_work import UnitOfWork
    from cmvtrial.store.database import Database

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this user (audited under their name); default: the administrator created by init.",
        show_default=False,
    ),
]
ReasonOption = Annotated[
    str | None,
    typer.Option("--reason", help="Why the change is made; kept in the audit trail.", show_default=False),
]
SubjectArgument = Annotated[
    str,
    typer.Argument(
        help="The subject: its id, SITE:SCREENING_NUMBER, its subject number, or a screening number unique "
        "among your sites.",
        show_default=False,
    ),
]


def read_settings(db: str | None) -> Settings:
    """The settings, with ``--db`` over CMVTRIAL_DATABASE_URL; a bad setting is bad input (exit 2)."""
    from pydantic import ValidationError

    from cmvtrial.config import load_settings
    from cmvtrial.errors import InvalidInput

    try:
        return load_settings(database_url=db)
    except ValidationError as error:
        problem = error.errors()[0]
        name = "CMVTRIAL_" + str(problem["loc"][0]).upper() if problem.get("loc") else "a setting"
        raise InvalidInput(f"{name}: {problem['msg']}", field=name) from None


@contextmanager
def open_database(db: str | None, **options: Any) -> Iterator[tuple[Settings, Database]]:
    """The settings and the open database, disposed of when the command ends (``options`` go to
    `store.database.open_database`: ``create``, ``require_current``)."""
    from cmvtrial.store.database import open_database as open_store

    settings = read_settings(db)
    database = open_store(settings.database_url, settings, **options)
    try:
        yield settings, database
    finally:
        database.dispose()


def unit_of_work(database: Database) -> UnitOfWork:
    from cmvtrial.services.unit_of_work import UnitOfWork

    return UnitOfWork(database.session_factory)


def acting_user(database: Database, as_user: str | None) -> Actor:
    """The user named by ``--as``, or the administrator `cmvtrial init` created."""
    from cmvtrial.services import accounts, trial_setup

    if as_user:
        return accounts.actor_for(unit_of_work(database), as_user)
    return trial_setup.default_actor(unit_of_work(database))


@dataclass
class CommandContext:
    """One command's settings, database and acting user (``--as``), looked up when first needed."""

    settings: Settings
    database: Database
    as_user: str | None = None
    _actor: Actor | None = field(default=None, init=False, repr=False)

    @property
    def actor(self) -> Actor:
        if self._actor is None:
            self._actor = acting_user(self.database, self.as_user)
        return self._actor

    def uow(self) -> UnitOfWork:
        """A fresh unit of work: each service call is its own transaction."""
        return unit_of_work(self.database)

    def subject_id(self, reference: str) -> int:
        """The subject named as everywhere in the CLI: id, SITE:SCREENING_NUMBER, subject number or a
        screening number unique among the acting user's sites."""
        from cmvtrial.services.subjects import resolve_subject

        return resolve_subject(self.uow(), self.actor, reference)


@contextmanager
def command_context(db: str | None, as_user: str | None = None, **options: Any) -> Iterator[CommandContext]:
    """Open the database for one command; ``options`` as for `open_database`."""
    with open_database(db, **options) as (settings, database):
        yield CommandContext(settings, database, as_user)


def read_text(file: str) -> str:
    """A UTF-8 file's text, or standard input for ``-``; an unreadable file is bad input."""
    from cmvtrial.errors import InvalidInput

    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file} is not UTF-8 text", field="file", value=file) from None
    except OSError as error:
        raise InvalidInput(f"cannot read {file}: {error.strerror}", field="file", value=file) from None


def command_group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """The command group ``name`` another module already registered, or a new one: groups such as
    ``dose`` and ``export`` take commands from several modules."""
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group
