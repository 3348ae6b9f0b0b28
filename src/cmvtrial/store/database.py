"""Opening a trial database: the engine, its session factory, and the checks that it can serve.

Adapters call ``open_database`` once (CLI command, app factory) and hand the result to services;
nothing in cmvtrial creates an engine at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from cmvtrial.config import Settings
from cmvtrial.errors import DatabaseNotInitialised
from cmvtrial.store import schema
from cmvtrial.store.engine import database_errors, is_sqlite_file, make_engine, parse_url, safe_url


@dataclass
class Database:
    """An engine with the session factory the unit of work uses."""

    engine: Engine
    session_factory: sessionmaker[Session] = field(repr=False)

    @property
    def url(self) -> str:
        """The URL with any password hidden."""
        return safe_url(self.engine.url)

    def is_missing_file(self) -> bool:
        """An SQLite database whose file does not exist yet (it appears on first write)."""
        url = self.engine.url
        return is_sqlite_file(url) and not Path(str(url.database)).exists()

    def dispose(self) -> None:
        self.engine.dispose()


#: Key of ``Session.info`` holding CMVTRIAL_SECRET_KEY (or None): services/sealing.py reads it there,
#: so the key travels with the database it protects and never through a global.
SECRET_KEY_INFO = "cmvtrial.secret_key"


def make_session_factory(engine: Engine, *, secret_key: str | None = None) -> sessionmaker[Session]:
    # Objects stay readable after commit: services build their answers after committing.
    return sessionmaker(engine, expire_on_commit=False, info={SECRET_KEY_INFO: secret_key})


def open_database(
    url: str | URL,
    settings: Settings | None = None,
    *,
    create: bool = False,
    require_current: bool = True,
) -> Database:
    """Connect to the trial database at ``url`` and check it can serve.

    ``create`` allows a new SQLite file (``cmvtrial init``); otherwise a missing file is reported
    as "not initialised" instead of silently creating an empty one. ``require_current`` refuses a
    database that is not at the migration head (see ``schema.require_current``).
    """
    parsed = parse_url(url)
    if is_sqlite_file(parsed) and not create and not Path(str(parsed.database)).exists():
        raise DatabaseNotInitialised(
            f"there is no trial database at {parsed.database}; "
            f"run `cmvtrial init --protocol ID --db {safe_url(parsed)}` first",
            database=safe_url(parsed),
        )
    engine = make_engine(parsed, settings)
    secret_key = settings.secret_key.get_secret_value() if settings is not None and settings.secret_key else None
    database = Database(engine=engine, session_factory=make_session_factory(engine, secret_key=secret_key))
    if database.is_missing_file():
        return database  # create=True: connecting now would leave an empty file behind on a refusal
    try:
        with database_errors(engine.url), engine.connect():
            pass
        if require_current:
            schema.require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return database
