"""Migrations up and down, on SQLite and PostgreSQL, create exactly the models and the append-only guard."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from cmvtrial.errors import DatabaseNotInitialised
from cmvtrial.store import schema
from cmvtrial.store.database import Database, open_database
from cmvtrial.store.tables import Base

EXPECTED_TABLES = set(Base.metadata.tables)


def table_names(database: Database) -> set[str]:
    with database.engine.connect() as connection:
        return set(inspect(connection).get_table_names()) - {"alembic_version"}


def guard_objects(database: Database) -> set[str]:
    """The append-only triggers (and on PostgreSQL their function) present in the database."""
    with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            rows = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        else:
            rows = connection.execute(
                text(
                    "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgrelid = to_regclass('audit_events') "
                    "UNION SELECT proname FROM pg_proc WHERE proname = 'audit_events_append_only' "
                    "AND pronamespace = current_schema()::regnamespace"
                )
            )
        return {row[0] for row in rows}


def test_upgrade_creates_every_table_and_down_removes_them(database):
    assert schema.current_revision(database.engine) is None
    schema.upgrade(database.engine)
    assert schema.current_revision(database.engine) == schema.head_revision()
    assert table_names(database) == EXPECTED_TABLES
    assert guard_objects(database)

    schema.downgrade(database.engine)
    assert schema.current_revision(database.engine) is None
    assert table_names(database) == set()
    assert guard_objects(database) == set()

    schema.upgrade(database.engine)  # and up again on the same database
    assert table_names(database) == EXPECTED_TABLES


def test_the_migrated_schema_is_exactly_the_models(database):
    schema.upgrade(database.engine)
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_the_audit_chain_starts_at_the_genesis_hash(database):
    schema.upgrade(database.engine)
    with database.engine.connect() as connection:
        row = connection.execute(text("SELECT id, last_sequence, last_hash FROM audit_chain_head")).one()
    assert tuple(row) == (1, 0, "0" * 64)


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET reason = 'x'", "DELETE FROM audit_events"])
def test_the_database_refuses_to_rewrite_the_audit_trail(trial_database, statement):
    from sqlalchemy.exc import DBAPIError

    with trial_database.engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            connection.execute(text(statement))
        connection.rollback()
        assert connection.execute(text("SELECT COUNT(*) FROM audit_events")).scalar() == 3


def test_postgresql_also_refuses_truncate(trial_database):
    from sqlalchemy.exc import DBAPIError

    if trial_database.engine.dialect.name != "postgresql":
        assert guard_objects(trial_database) == {"audit_events_no_update", "audit_events_no_delete"}
        return
    with trial_database.engine.connect() as connection, pytest.raises(DBAPIError, match="append-only"):
        connection.execute(text("TRUNCATE audit_events"))


def test_an_unmigrated_database_is_not_served(database):
    with pytest.raises(DatabaseNotInitialised, match="cmvtrial init"):
        open_database(database.engine.url, require_current=True)


def test_a_database_from_a_newer_cmvtrial_is_refused(database):
    schema.upgrade(database.engine)
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'base_of_nothing'"))
    from cmvtrial.errors import DatabaseError

    with pytest.raises(DatabaseError, match="newer cmvtrial"):
        schema.require_current(database.engine)


def test_the_end_of_study_columns_go_down_and_up_with_subjects_in_the_table(trial_database):
    """0002 adds three columns to a table other tables point at: on a trial with subjects (and their
    visits) it migrates down to 0001 and up again, keeping every row (no table rebuild on SQLite)."""
    with trial_database.engine.begin() as connection:
        version = connection.execute(text("SELECT id FROM protocol_versions")).scalar_one()
        connection.execute(text("INSERT INTO sites (code, name, active, created_at) VALUES ('A', 'A', true, :t)"),
                           {"t": "2025-01-01 00:00:00+00:00"})
        connection.execute(text(
            "INSERT INTO subjects (site_id, screening_number, protocol_version_id, status, created_at, "
            "created_by_user_id, end_of_study_date, end_of_study_reason) VALUES "
            "(1, 'S-1', :v, 'withdrawn', :t, 1, '2025-03-12', 'withdrew_consent')"),
            {"v": version, "t": "2025-01-01 00:00:00+00:00"})
        connection.execute(text("INSERT INTO study_events (subject_id, visit_code, repeat_index, status, created_at) "
                                "VALUES (1, 'SCR', 0, 'done', :t)"), {"t": "2025-01-01 00:00:00+00:00"})
    schema.downgrade(trial_database.engine, "0001_initial")
    with trial_database.engine.connect() as connection:
        columns = {c["name"] for c in inspect(connection).get_columns("subjects")}
        assert "end_of_study_date" not in columns
        assert connection.execute(text("SELECT count(*) FROM subjects")).scalar_one() == 1
    schema.upgrade(trial_database.engine)
    with trial_database.engine.connect() as connection:
        row = connection.execute(text("SELECT screening_number, end_of_study_date FROM subjects")).one()
        assert (row[0], row[1]) == ("S-1", None)
        assert connection.execute(text("SELECT count(*) FROM study_events")).scalar_one() == 1
