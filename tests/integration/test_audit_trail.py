"""The audit trail in the database: written with every change, verified, and tampering by direct SQL caught.

Tampering is done as an attacker with DBA rights would: the append-only guard is switched off
(SQLite: the triggers dropped; PostgreSQL: ALTER TABLE … DISABLE TRIGGER USER) and rows are
changed, deleted, inserted or renumbered with plain SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert, select, text, update
from sqlalchemy.orm import Session

from cmvtrial.core.audit_chain import event_hash
from cmvtrial.errors import Forbidden
from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.audit_verification import recent_events, verify_audit
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AuditChainHead, AuditEvent, Site

EVENTS = AuditEvent.__table__
HEAD = AuditChainHead.__table__
SITES = 4  # sites added on top of the 3 events of initialisation
TOTAL = 3 + SITES


@pytest.fixture
def audited(uow, admin):
    """A trial database with TOTAL audit events."""
    for number in range(1, SITES + 1):
        trial_setup.add_site(uow, admin, f"S{number}", f"Site {number}")
    return uow


@contextmanager
def guard_off(connection: Connection) -> Iterator[Connection]:
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("DROP TRIGGER audit_events_no_update")
        connection.exec_driver_sql("DROP TRIGGER audit_events_no_delete")
    else:
        connection.exec_driver_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
    yield connection


def verify_on(connection: Connection):
    """Run the verification service inside the tampering transaction."""
    return verify_audit(UnitOfWork(lambda: Session(bind=connection, join_transaction_mode="create_savepoint")))


def row(connection: Connection, sequence: int) -> dict:
    return dict(connection.execute(select(EVENTS).where(EVENTS.c.sequence == sequence)).mappings().one())


def renumber(connection: Connection, old: int, new: int) -> None:
    connection.execute(update(EVENTS).where(EVENTS.c.sequence == old).values(sequence=new))


def test_every_change_writes_a_chained_event(audited, admin):
    result = verify_audit(audited, admin)
    assert (result.ok, result.count) == (True, TOTAL)
    newest = recent_events(audited, admin, limit=2)
    assert [(e.sequence, e.action, e.entity_type) for e in newest] == [(7, "site.create", "site"), (6, "site.create", "site")]
    assert newest[0].username == "admin" and '"code":"S4"' in newest[0].after


def test_verification_reads_the_trail_in_one_pass_and_needs_the_right_role(audited):
    investigator = accounts.Actor(user_id=99, username="someone", role="investigator", site_id=1)
    with pytest.raises(Forbidden):
        verify_audit(audited, investigator)


# --- the four tampering cases of issue 2, each on SQLite and PostgreSQL ------------------------


def tamper_changed_value(connection: Connection) -> None:
    connection.execute(update(EVENTS).where(EVENTS.c.sequence == 5).values(after='{"code":"S9"}'))


def tamper_deleted_row(connection: Connection) -> None:
    connection.execute(delete(EVENTS).where(EVENTS.c.sequence == 4))


def tamper_inserted_row(connection: Connection) -> None:
    # A forged event in the middle: later events are renumbered to make room.
    for sequence in range(TOTAL, 3, -1):
        renumber(connection, sequence, sequence + 1)
    forged = {**row(connection, 3), "sequence": 4, "reason": "forged"}
    forged["hash"] = "f" * 64
    connection.execute(insert(EVENTS).values(forged))


def tamper_reordered_rows(connection: Connection) -> None:
    renumber(connection, 3, -1)
    renumber(connection, 6, 3)
    renumber(connection, -1, 6)


@pytest.mark.parametrize(
    ("tamper", "first_broken", "words"),
    [
        (tamper_changed_value, 5, "altered"),
        (tamper_deleted_row, 4, "missing"),
        (tamper_inserted_row, 4, "altered"),
        (tamper_reordered_rows, 3, "altered"),
    ],
    ids=["changed-value", "deleted-row", "inserted-row", "reordered-rows"],
)
def test_tampering_by_direct_sql_is_caught(audited, trial_database, tamper, first_broken, words):
    with trial_database.engine.connect() as connection, guard_off(connection):
        tamper(connection)
        connection.commit()
    result = verify_audit(audited)
    assert not result.ok
    assert result.first_broken_sequence == first_broken
    assert words in result.reason


def test_an_event_appended_with_a_correct_hash_is_caught_by_the_chain_head(audited, trial_database):
    with trial_database.engine.connect() as connection:
        last = row(connection, TOTAL)
        fields = {**{k: last[k] for k in last if k not in ("previous_hash", "hash")}, "sequence": TOTAL + 1}
        forged = {**fields, "previous_hash": last["hash"], "hash": event_hash(last["hash"], fields)}
        connection.execute(insert(EVENTS).values(forged))
        connection.commit()
    result = verify_audit(audited)
    assert (result.ok, result.first_broken_sequence) == (False, TOTAL + 1)


def test_the_newest_event_removed_is_caught(audited, trial_database):
    with trial_database.engine.connect() as connection, guard_off(connection):
        connection.execute(delete(EVENTS).where(EVENTS.c.sequence == TOTAL))
        connection.commit()
    result = verify_audit(audited)
    assert (result.ok, result.first_broken_sequence) == (False, TOTAL)


def test_a_removed_chain_head_is_caught(audited, trial_database):
    with trial_database.engine.connect() as connection:
        connection.execute(delete(HEAD))
        connection.commit()
    assert not verify_audit(audited).ok


# --- any single edit is detected (hypothesis, each edit rolled back) ---------------------------

hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
plain_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
short_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=64)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
NEW_VALUES = {
    "sequence": st.integers(min_value=-10, max_value=10**9).filter(lambda n: not 1 <= n <= TOTAL),
    "occurred_at": st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    "user_id": st.none() | int32,
    "username": short_text,
    "site_id": st.none() | int32,
    "action": short_text,
    "entity_type": short_text,
    "entity_id": short_text,
    "before": st.none() | plain_text,
    "after": st.none() | plain_text,
    "reason": st.none() | plain_text,
    "previous_hash": hex64,
    "hash": hex64,
}


@st.composite
def edits(draw: st.DrawFn):
    kind = draw(st.sampled_from(["update", "delete", "insert", "swap", "head"]))
    sequence = draw(st.integers(1, TOTAL))
    if kind == "update":
        column = draw(st.sampled_from(sorted(NEW_VALUES)))
        return kind, sequence, column, draw(NEW_VALUES[column])
    if kind == "swap":
        other = draw(st.integers(1, TOTAL - 1))
        return kind, sequence, other if other < sequence else other + 1, None
    if kind == "insert":
        return kind, sequence, draw(st.integers(TOTAL + 1, TOTAL + 3)), draw(hex64)
    if kind == "head":
        column = draw(st.sampled_from(["last_sequence", "last_hash"]))
        return kind, None, column, draw(hex64 if column == "last_hash" else st.integers(-3, 100))
    return kind, sequence, None, None


def apply(connection: Connection, edit) -> bool:
    """Apply one edit; False when it would change nothing (an identical value)."""
    kind, sequence, target, value = edit
    if kind == "update":
        if row(connection, sequence)[target] == value:
            return False
        connection.execute(update(EVENTS).where(EVENTS.c.sequence == sequence).values({target: value}))
    elif kind == "delete":
        connection.execute(delete(EVENTS).where(EVENTS.c.sequence == sequence))
    elif kind == "insert":  # a copy of an event under a new number, with a fresh-looking hash
        connection.execute(insert(EVENTS).values({**row(connection, sequence), "sequence": target, "hash": value}))
    elif kind == "swap":
        renumber(connection, sequence, -1)
        renumber(connection, target, sequence)
        renumber(connection, -1, target)
    else:
        current = connection.execute(select(HEAD.c[target])).scalar()
        if current == value:
            return False
        connection.execute(update(HEAD).values({target: value}))
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=edits())
def test_any_single_edit_to_the_audit_tables_is_detected(audited, trial_database, edit):
    with trial_database.engine.connect() as connection:
        with guard_off(connection):
            changed = apply(connection, edit)
            result = verify_on(connection)
        connection.rollback()
    assert result.ok is not changed, (edit, result)


# --- one transaction: data and audit commit or roll back together -----------------------------


def counts(uow: UnitOfWork) -> tuple[int, int, int]:
    with uow.reading():
        head = uow.audit_events.head()
        return len(uow.sites.list()), uow.audit_events.count(), head.last_sequence


def test_an_error_rolls_back_the_change_and_its_audit_event_together(uow, admin, now):
    before = counts(uow)
    with pytest.raises(RuntimeError, match="boom"):
        with uow:
            site = uow.sites.add(Site(code="ZZ", name="Doomed", active=True, created_at=now))
            uow.audit.record(admin, "site.create", site, after=site)
            raise RuntimeError("boom")
    assert counts(uow) == before
    assert verify_audit(uow).ok


def test_leaving_without_commit_rolls_back(uow, admin, now):
    before = counts(uow)
    with uow:
        site = uow.sites.add(Site(code="ZZ", name="Uncommitted", active=True, created_at=now))
        uow.audit.record(admin, "site.create", site, after=site)
    assert counts(uow) == before


def test_a_duplicate_that_slips_past_the_checks_is_refused_and_rolled_back(uow, admin, now):
    from cmvtrial.errors import AlreadyExists

    trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    before = counts(uow)
    with pytest.raises(AlreadyExists, match="already exists"), uow:
        uow.audit.record(admin, "site.create", ("site", "?"))
        uow.sites.add(Site(code="PKUPH", name="Twin", active=True, created_at=now))
    assert counts(uow) == before


def test_a_read_only_unit_of_work_cannot_write_audit_events(uow, admin):
    with pytest.raises(RuntimeError, match="read-only"), uow.reading():
        uow.audit.record(admin, "site.create", ("site", "1"))


def test_a_refused_action_changes_nothing(uow, admin):
    accounts.add_user(uow, admin, "ivy", "ivy-long-password", "investigator")
    investigator = accounts.actor_for(uow, "ivy")
    before = counts(uow)
    with pytest.raises(Forbidden, match="may not site.add"):
        trial_setup.add_site(uow, investigator, "XX", "Not allowed")
    assert counts(uow) == before


# --- concurrent writers do not fork the chain ----------------------------------------------------


def test_concurrent_writers_keep_one_gap_free_chain(trial_database, admin, now):
    writers, sites_each = 6, 4
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        uow = UnitOfWork(trial_database.session_factory, clock=lambda: now + timedelta(seconds=worker))
        try:
            for number in range(sites_each):
                trial_setup.add_site(uow, admin, f"W{worker}N{number}", f"Worker {worker} site {number}")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    uow = UnitOfWork(trial_database.session_factory)
    result = verify_audit(uow)
    assert (result.ok, result.count) == (True, 3 + writers * sites_each)
    with trial_database.engine.connect() as connection:
        sequences = connection.execute(text("SELECT sequence FROM audit_events ORDER BY sequence")).scalars().all()
    assert sequences == list(range(1, 3 + writers * sites_each + 1))
