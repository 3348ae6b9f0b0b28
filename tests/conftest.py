"""Shared fixtures: a fresh trial database per test on SQLite, and on PostgreSQL when its URL is set.

`database_url` is parametrized: `[sqlite]` always (a file in the test's tmp folder) and
`[postgresql]` when CMVTRIAL_TEST_PG_URL is set (each test gets its own schema `t_<uuid>`, chosen
through the connection's search_path and dropped afterwards, so tests can run side by side on one
server). PostgreSQL cases carry the `postgres` marker, so `-m postgres` selects them and `-v` shows
them by name. Real objects only; the clock is the one thing faked (`now`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, make_url

from cmvtrial.config import Settings
from cmvtrial.protocols import shipped_ids
from cmvtrial.services.accounts import actor_for
from cmvtrial.services.permissions import Actor
from cmvtrial.services.trial_setup import initialise_trial
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database, open_database

PG_URL_ENV = "CMVTRIAL_TEST_PG_URL"
PG_URL = os.environ.get(PG_URL_ENV)

#: The password the fixtures give the first administrator.
ADMIN_PASSWORD = "correct-horse-battery"
#: CMVTRIAL_SECRET_KEY of every test (PostgreSQL is not local use: it needs a key of its own).
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef-0123456789"


def pytest_report_header(config: pytest.Config) -> str:
    if PG_URL:
        return f"cmvtrial databases: SQLite and PostgreSQL ({make_url(PG_URL).render_as_string(hide_password=True)})"
    return f"cmvtrial databases: SQLite only (set {PG_URL_ENV} to also run on PostgreSQL)"


def _backends() -> list[object]:
    backends: list[object] = [pytest.param("sqlite", id="sqlite")]
    if PG_URL:
        backends.append(pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres))
    return backends


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an empty database (not migrated): an SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'trial.db'}"
        return
    assert PG_URL is not None
    schema = "t_" + uuid.uuid4().hex[:16]
    server = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        server.dispose()


@pytest.fixture(autouse=True, scope="session")
def subject_locks_are_taken() -> Iterator[None]:
    """Every test checks the rule data entry's planning relies on (services/data_entry.py): a
    transaction that changes a subject or its rows (visits, forms, values, doses, events, queries,
    proposals …) has locked the subject first (``SubjectRepository.locked``, which raises its
    ``row_version``). A subject created in the same transaction needs no lock: nobody else sees it."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from cmvtrial.store.tables import Subject

    def check(session: Session, _context: object, _instances: object) -> None:
        held = session.info.get("locked_subjects", set())
        created = session.info.get(_CREATED, set())
        changed = [*session.new, *(row for row in session.dirty if session.is_modified(row)), *session.deleted]
        for row in changed:
            subject_id = row.id if isinstance(row, Subject) else getattr(row, "subject_id", None)
            if isinstance(subject_id, int) and subject_id not in held and subject_id not in created:
                raise AssertionError(f"a {type(row).__name__} of subject {subject_id} changed in a transaction "
                                     "that did not lock the subject (uow.subjects.locked)")

    def remember_created(session: Session, _context: object) -> None:
        created = session.info.setdefault(_CREATED, set())
        created.update(row.id for row in session.new if isinstance(row, Subject))

    def forget(session: Session, *_: object) -> None:
        session.info.pop(_CREATED, None)

    listeners = [("before_flush", check), ("after_flush", remember_created), ("after_commit", forget),
                 ("after_rollback", forget)]
    for name, listener in listeners:
        event.listen(Session, name, listener)
    yield
    for name, listener in listeners:
        event.remove(Session, name, listener)


_CREATED = "test_subjects_created"


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its lowest cost: the production cost (~0.1 s a hash, on purpose) would dominate
    the suite. Same algorithm and code path; test_accounts checks the production parameters."""
    from argon2 import PasswordHasher

    from cmvtrial.services import accounts

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", lambda: cheap)


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key that seals the randomization seed, for the CLI and apps the tests start (issue 10)."""
    monkeypatch.setenv("CMVTRIAL_SECRET_KEY", TEST_SECRET_KEY)
    return TEST_SECRET_KEY


@pytest.fixture
def now() -> datetime:
    """A fixed moment for everything a test records."""
    return datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)


@pytest.fixture
def admin_password() -> str:
    return ADMIN_PASSWORD


@pytest.fixture
def protocol_id() -> str:
    ids = shipped_ids()
    assert ids, "no shipped protocol files"
    return "sle-cmv-il2" if "sle-cmv-il2" in ids else ids[0]


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """An opened (not yet migrated) database; disposed after the test."""
    opened = open_database(database_url, Settings(secret_key=TEST_SECRET_KEY), create=True, require_current=False)
    yield opened
    opened.dispose()


@pytest.fixture
def trial_database(database: Database, protocol_id: str, now: datetime) -> Database:
    """A database initialised by `initialise_trial` (admin user `admin`)."""
    initialise_trial(database, protocol_id, "admin", ADMIN_PASSWORD, now=now)
    return database


@pytest.fixture
def uow(trial_database: Database, now: datetime) -> UnitOfWork:
    """A unit of work on the initialised trial database, with the clock fixed at `now`."""
    return UnitOfWork(trial_database.session_factory, clock=lambda: now)


@pytest.fixture
def admin(uow: UnitOfWork) -> Actor:
    """The administrator created at initialisation, as an actor."""
    return actor_for(uow, "admin")
