"""Running the Alembic migrations from code, and telling whether a database is ready for cmvtrial.

The migrations ship inside the package (``store/migrations``); the Alembic configuration is built
here, so a deployed cmvtrial needs no alembic.ini and always migrates the engine it configured.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from cmvtrial.errors import DatabaseError, DatabaseNotInitialised
from cmvtrial.store.engine import database_errors, safe_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["configure_logger"] = False
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration this cmvtrial knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head"
    return head


def known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None when it has never been migrated."""
    with database_errors(engine.url), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate up (to the newest revision by default), in one transaction."""
    _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate down (to an empty database by default), in one transaction."""
    _run(engine, command.downgrade, revision)


def _run(engine: Engine, step: object, revision: str) -> None:
    config = _config(engine)
    with database_errors(engine.url), engine.connect() as connection:
        config.attributes["connection"] = connection
        step(config, revision)  # type: ignore[operator]
        connection.commit()


def require_current(engine: Engine) -> None:
    """Refuse to serve from a database that is not at this cmvtrial's migration head.

    A database that was never migrated (or has no trial tables) says "run `cmvtrial init`";
    one that is behind says how to bring it up to date; one that is ahead was written by a newer
    cmvtrial and must not be touched by this one.
    """
    revision = current_revision(engine)
    head = head_revision()
    where = safe_url(engine.url)
    if revision == head:
        return
    if revision is None:
        raise DatabaseNotInitialised(
            f"{where} is not a cmvtrial database yet; run `cmvtrial init --protocol ID --db {where}`",
            database=where,
        )
    if revision in known_revisions():
        raise DatabaseNotInitialised(
            f"{where} has an older schema ({revision}, this cmvtrial needs {head}); "
            f"run `cmvtrial init --if-missing --protocol ID --db {where}` to upgrade it",
            database=where,
            revision=revision,
        )
    raise DatabaseError(
        f"{where} was written by a newer cmvtrial (schema {revision} is unknown here); upgrade cmvtrial",
        database=where,
        revision=revision,
    )


def has_table(engine: Engine, name: str) -> bool:
    with database_errors(engine.url), engine.connect() as connection:
        return inspect(connection).has_table(name)
