"""Engines and database errors: SQLite pragmas and write locking, and one-line errors a user can act on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from cmvtrial.config import load_settings
from cmvtrial.errors import DatabaseLocked, DatabaseNotInitialised, DatabaseUnavailable, DatabaseUrlInvalid
from cmvtrial.services import trial_setup
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store import schema
from cmvtrial.store.database import open_database
from cmvtrial.store.engine import make_engine, safe_url


def sqlite_path(database) -> str:
    return str(database.engine.url.database)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'trial.db'}"


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_the_configured_busy_timeout(sqlite_url):
    engine = make_engine(sqlite_url, load_settings(sqlite_busy_timeout_ms=1234))
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 1234
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL: commits reach the disk
    engine.dispose()


def test_a_write_transaction_takes_the_sqlite_write_lock_at_its_start(sqlite_url):
    database = open_database(sqlite_url, create=True, require_current=False)
    schema.upgrade(database.engine)
    uow = UnitOfWork(database.session_factory)
    other = sqlite3.connect(sqlite_path(database), timeout=0)
    try:
        with uow:
            uow.sites.list()  # a read only, yet BEGIN IMMEDIATE already holds the write lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        with uow.reading():
            uow.sites.list()
            other.execute("BEGIN IMMEDIATE")  # a reader does not block writers
            other.rollback()
    finally:
        other.close()
        database.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "nonsense",
        "",
        "mysql://user@localhost/trial",
        "sqlite+nodriver:///trial.db",
        "postgresql+psycopg2://user@localhost/trial",
    ],
)
def test_a_wrong_url_is_refused_in_one_line(url):
    with pytest.raises(DatabaseUrlInvalid) as refusal:
        open_database(url)
    assert "\n" not in refusal.value.message and "sqlite:///" in refusal.value.message


def test_passwords_never_appear_in_messages():
    assert "s3cret" not in safe_url("postgresql+psycopg://user:s3cret@db.example/trial")


def test_a_server_that_does_not_answer_is_unavailable():
    with pytest.raises(DatabaseUnavailable, match="cannot connect") as refusal:
        open_database("postgresql+psycopg://nobody@127.0.0.1:1/trial?connect_timeout=2")
    assert "\n" not in refusal.value.message


def test_a_missing_sqlite_file_is_not_created_and_not_initialised(sqlite_url):
    with pytest.raises(DatabaseNotInitialised, match="cmvtrial init"):
        open_database(sqlite_url)
    assert not Path(str(make_url(sqlite_url).database)).exists()


def test_an_unmigrated_database_is_not_initialised(database):
    with database.engine.connect():  # creates the empty SQLite file / uses the empty schema
        pass
    with pytest.raises(DatabaseNotInitialised, match="not a cmvtrial database"):
        open_database(database.engine.url)
    with pytest.raises(DatabaseNotInitialised, match="no trial tables"), UnitOfWork(database.session_factory) as uow:
        uow.sites.list()


def test_a_locked_database_is_reported_and_nothing_changes(trial_database, admin, database_url):
    """SQLite: another process holds the write lock; PostgreSQL: another session holds the chain head."""
    if trial_database.engine.dialect.name == "sqlite":
        url = database_url
        blocker = sqlite3.connect(sqlite_path(trial_database))
        blocker.execute("BEGIN EXCLUSIVE")
        release = blocker.close
    else:
        parsed = make_url(database_url)
        options = parsed.query["options"] + " -clock_timeout=200"
        url = parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
        blocker = trial_database.engine.connect()
        blocker.execute(text("LOCK TABLE audit_chain_head IN ACCESS EXCLUSIVE MODE"))
        release = blocker.close
    impatient = open_database(url, load_settings(sqlite_busy_timeout_ms=100), require_current=False)
    try:
        with pytest.raises(DatabaseLocked, match="locked") as refusal:
            trial_setup.add_site(UnitOfWork(impatient.session_factory), admin, "LK", "Locked out")
        assert "\n" not in refusal.value.message
    finally:
        release()
        impatient.dispose()
    assert [site.code for site in trial_setup.list_sites(UnitOfWork(trial_database.session_factory), admin)] == []
