"""Data entry plans before it writes (services/data_entry.py): on SQLite the checking and planning
run in a reading transaction, the writing in a second one that proceeds only when the subject's
``row_version`` shows nothing of the subject changed in between — otherwise the entry is planned
again. These tests put another write between the two transactions and check that nothing is lost
or overwritten unseen, and that a write of another subject costs no second plan. On PostgreSQL,
which locks rows, the entry plans under the subject's lock in one transaction."""

from __future__ import annotations

from datetime import date

import pytest
from data_capture_support import HEMATOLOGY, RANDOMIZED_ON, make_capture_trial
from sqlalchemy import select

from cmvtrial.errors import InvalidInput
from cmvtrial.services import data_entry
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AuditEvent, ItemValue, Subject

TODAY = date(2025, 3, 20)


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def enter(trial, forms, *, subject=None, reason="lab import"):
    return data_entry.enter_visit_data(UnitOfWork(trial.uow.session_factory), trial.coordinator,
                                       subject or trial.il2_subject, "BL", {"hematology": forms}, today=TODAY,
                                       visit_date=RANDOMIZED_ON, reason=reason)


def row_version(trial, subject_id):
    with trial.uow.reading():
        return trial.uow.session.scalar(select(Subject.row_version).where(Subject.id == subject_id))


def stored_platelets(trial):
    with trial.uow.reading():
        row = trial.uow.session.scalars(select(ItemValue).where(ItemValue.subject_id == trial.il2_subject,
                                                                ItemValue.item_id == "platelets")).one()
        return row.normalized_number, row.version


def plans_with_a_write_in_between(monkeypatch, write_in_between):
    """Count the reading transactions that reach the write, running ``write_in_between`` once, between
    the first plan and its write."""
    calls = []
    original = UnitOfWork.start_writing

    def start_writing(uow):
        calls.append(uow)
        if len(calls) == 1:
            write_in_between()
        original(uow)

    monkeypatch.setattr(UnitOfWork, "start_writing", start_writing)
    return calls


def test_locking_a_subject_raises_its_row_version_and_a_refusal_leaves_it(trial):
    before = row_version(trial, trial.il2_subject)
    enter(trial, HEMATOLOGY)
    assert row_version(trial, trial.il2_subject) == before + 1
    with pytest.raises(InvalidInput):
        enter(trial, {**HEMATOLOGY, "platelets": -5})
    assert row_version(trial, trial.il2_subject) == before + 1
    # Sending what is stored changes nothing and takes no lock.
    assert not enter(trial, HEMATOLOGY).changed
    assert row_version(trial, trial.il2_subject) == before + 1


def test_the_row_version_is_not_in_the_audit_trail(trial):
    enter(trial, HEMATOLOGY)
    with trial.uow.reading():
        texts = [event.before or "" for event in trial.uow.session.scalars(select(AuditEvent))]
        texts += [event.after or "" for event in trial.uow.session.scalars(select(AuditEvent))]
    assert texts and not any("row_version" in text for text in texts)


#: The planning window exists on SQLite only (the database's single write lock); these tests run there.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_sqlite_plans_before_the_write_lock_and_postgresql_under_the_subjects_lock(trial, monkeypatch):
    calls = plans_with_a_write_in_between(monkeypatch, lambda: None)
    assert enter(trial, HEMATOLOGY).changed
    assert len(calls) == (1 if trial.uow.session_factory.kw["bind"].dialect.name == "sqlite" else 0)


@SQLITE_ONLY
def test_an_entry_planned_before_another_write_of_the_subject_is_planned_again(trial, monkeypatch):
    enter(trial, HEMATOLOGY)
    calls = plans_with_a_write_in_between(monkeypatch, lambda: enter(trial, {**HEMATOLOGY, "platelets": 150}))
    result = enter(trial, {**HEMATOLOGY, "platelets": 175})
    # First plan (interrupted), the write in between, then the second plan that wrote.
    assert len(calls) == 3 and result.changed
    assert stored_platelets(trial) == (175.0, 3)
    with trial.uow.reading():
        updates = list(trial.uow.session.scalars(select(AuditEvent).where(AuditEvent.action == "item_value.update")
                                                 .order_by(AuditEvent.sequence)))
    # The trail shows each change from the value it really replaced: 210 -> 150 -> 175.
    olds_and_news = [(event.before, event.after) for event in updates if '"platelets"' in (event.after or "")]
    assert [('"normalized_number":210.0' in old, '"normalized_number":150.0' in new) for old, new in
            olds_and_news[:1]] == [(True, True)]
    assert '"normalized_number":150.0' in olds_and_news[1][0] and '"normalized_number":175.0' in olds_and_news[1][1]
    assert verify_audit(trial.uow).ok


@SQLITE_ONLY
def test_a_write_for_another_subject_in_between_needs_no_second_plan(trial, monkeypatch):
    enter(trial, HEMATOLOGY)
    calls = plans_with_a_write_in_between(monkeypatch, lambda: enter(trial, HEMATOLOGY, subject=trial.gcv_subject))
    assert enter(trial, {**HEMATOLOGY, "platelets": 175}).changed
    assert len(calls) == 2  # this entry's single plan and the other subject's entry
    assert stored_platelets(trial) == (175.0, 2)


@SQLITE_ONLY
def test_an_entry_whose_subject_keeps_changing_is_planned_under_the_lock_at_last(trial, monkeypatch):
    enter(trial, HEMATOLOGY)
    original = UnitOfWork.start_writing
    interruptions = []

    def start_writing(uow):
        if len(interruptions) < data_entry.PLANNING_ATTEMPTS:
            interruptions.append(True)
            with UnitOfWork(trial.uow.session_factory) as other:
                other.subjects.locked(trial.il2_subject)
                other.commit()
        original(uow)

    monkeypatch.setattr(UnitOfWork, "start_writing", start_writing)
    assert enter(trial, {**HEMATOLOGY, "platelets": 175}).changed
    # Every plan before the lock was interrupted; the last attempt planned under the lock.
    assert len(interruptions) == data_entry.PLANNING_ATTEMPTS - 1
    assert stored_platelets(trial) == (175.0, 2)


@SQLITE_ONLY
def test_nothing_is_written_in_the_reading_transaction(trial):
    """A change made while planning would be committed by the reading transaction, outside the
    queue of writers: start_writing refuses it, and the audit events likewise."""
    with trial.uow:
        trial.uow.read_first()
        trial.uow.session.get(Subject, trial.il2_subject).consent_date = date(2025, 1, 2)
        with pytest.raises(RuntimeError, match="changed while reading"):
            trial.uow.start_writing()
    with trial.uow:
        trial.uow.read_first()
        trial.uow.audit.record(trial.admin, "test.event", ("subject", trial.il2_subject))
        with pytest.raises(RuntimeError, match="recorded while reading"):
            trial.uow.start_writing()


def test_a_change_of_a_subject_without_its_lock_fails_the_suite(trial):
    """The rule the planning relies on is checked in every test (tests/conftest.py)."""
    with pytest.raises(AssertionError, match="did not lock the subject"):
        with trial.uow:
            row = trial.uow.session.get(Subject, trial.il2_subject)
            row.consent_date = date(2025, 1, 2)
            trial.uow.session.flush()
