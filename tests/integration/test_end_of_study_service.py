"""A subject's end of study (services/end_of_study.py): a withdrawal stores the status, date and reason,
cancels what was planned after it and stops later visits and doses; completion needs the final visit
done; every refusal changes nothing; and the analysis snapshot tells both."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from data_capture_support import GCV, RANDOMIZED_ON, cmv, counts, make_capture_trial
from sqlalchemy import select

from cmvtrial.errors import (
    AfterWithdrawal,
    FinalVisitNotDone,
    Forbidden,
    InvalidInput,
    NotFound,
    NotRandomized,
    StudyEnded,
)
from cmvtrial.services import analysis_data, data_entry, dosing_records, end_of_study, visits
from cmvtrial.store.tables import AuditEvent, StudyEvent, Subject

TW1 = RANDOMIZED_ON + timedelta(days=7)        # 10 Mar 2025
TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def withdraw(trial, subject=None, *, actor=None, reason="withdrew_consent", on=date(2025, 3, 12), today=TODAY,
             details=None):
    return end_of_study.withdraw_subject(trial.uow, actor or trial.investigator, subject or trial.il2_subject,
                                         reason=reason, on_date=on, today=today, details=details)


def complete(trial, subject=None, *, actor=None, today=TODAY):
    return end_of_study.complete_subject(trial.uow, actor or trial.investigator, subject or trial.il2_subject,
                                         today=today)


def dose(trial, on: date, *, today=TODAY, subject=None):
    return dosing_records.record_administration(trial.uow, trial.coordinator, subject or trial.il2_subject, {
        "drug": GCV, "dose": 300, "unit": "mg", "route": "intravenous", "date": on.isoformat(), "given_by": "Nurse Li"},
        today=today)


def end_treatment(trial, *, subject=None, today=TODAY):
    """TW1's CMV-DNA is not detected: treatment ends on TW1 and FU3M is planned for 90 days later."""
    data_entry.enter_visit_data(trial.uow, trial.coordinator, subject or trial.il2_subject, "TW1",
                                {"cmv_load": cmv(TW1, result="not_detected")}, today=today, visit_date=TW1)


def subject_row(trial, subject_id=None) -> Subject:
    with trial.uow.reading():
        return trial.uow.session.get(Subject, subject_id or trial.il2_subject)


def last_audit(trial) -> AuditEvent:
    with trial.uow.reading():
        return trial.uow.session.scalars(select(AuditEvent).where(AuditEvent.entity_type == "subject")
                                         .order_by(AuditEvent.sequence.desc())).first()


# ------------------------------------------------------------------------------------------------
# Withdrawal


def test_a_withdrawal_stores_status_date_and_reason_with_one_audited_change(trial):
    dose(trial, date(2025, 3, 5))
    view = withdraw(trial, reason="adverse_event", details="grade 3 neutropenia, did not want to go on")
    assert (view.status, view.date, view.reason, view.reason_label, view.dsdecod) == (
        "withdrawn", date(2025, 3, 12), "adverse_event", "adverse event", "ADVERSE EVENT")
    assert view.details == "grade 3 neutropenia, did not want to go on" and view.subject == "R-S-001"
    row = subject_row(trial)
    assert (row.status, row.end_of_study_date, row.end_of_study_reason, row.end_of_study_details) == (
        "withdrawn", date(2025, 3, 12), "adverse_event", "grade 3 neutropenia, did not want to go on")
    event = last_audit(trial)
    before, after = json.loads(event.before), json.loads(event.after)
    assert (event.action, before["status"], after["status"]) == ("subject.withdraw", "on_treatment", "withdrawn")
    assert before["end_of_study_date"] is None and after["end_of_study_date"] == "2025-03-12"
    assert event.reason == "adverse event"


@pytest.mark.parametrize(("reason", "details", "status", "described"), [
    ("lost_to_follow_up", None, "lost_to_follow_up", "lost to follow-up"),
    ("death", "sepsis", "died", "death"),
    ("investigator_decision", None, "withdrawn", "investigator decision"),
    ("other", "moved to another city", "withdrawn", "other: moved to another city"),
])
def test_each_reason_leads_to_its_status(trial, reason, details, status, described):
    assert withdraw(trial, reason=reason, details=details).status == status
    assert last_audit(trial).reason == described


def test_a_withdrawal_in_follow_up_cancels_the_planned_follow_up_visit(trial):
    end_treatment(trial)
    with trial.uow.reading():
        planned = trial.uow.session.scalars(select(StudyEvent).where(StudyEvent.visit_code == "FU3M")).one()
        assert planned.status == "planned"
    today = TW1 + timedelta(days=40)
    view = withdraw(trial, reason="lost_to_follow_up", on=TW1 + timedelta(days=30), today=today)
    assert view.cancelled == ("FU3M",)
    with trial.uow.reading():
        event = trial.uow.session.scalars(select(StudyEvent).where(StudyEvent.visit_code == "FU3M")).one()
        assert event.status == "cancelled"
        cancel = trial.uow.session.scalars(select(AuditEvent).where(AuditEvent.action == "study_event.cancel")
                                           .order_by(AuditEvent.sequence.desc())).first()
        assert cancel.reason == "withdrawn: lost to follow-up"
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=today).calendar
    assert {v.label: v.status for v in calendar.visits}["FU3M"] == "cancelled"
    assert {v.label: v.status for v in calendar.visits}["W12"] == "cancelled"


def test_after_a_withdrawal_later_visits_data_and_doses_are_refused_earlier_ones_kept(trial):
    withdraw(trial, on=date(2025, 3, 12))
    before = counts(trial.uow)
    with pytest.raises(AfterWithdrawal, match="left the trial on 2025-03-12") as error:
        dose(trial, date(2025, 3, 13))
    assert error.value.details["field"] == "date"
    with pytest.raises(AfterWithdrawal):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW2", today=date(2025, 3, 18),
                            on_date=date(2025, 3, 17))
    with pytest.raises(AfterWithdrawal):
        data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "TW2",
                                    {"cmv_load": cmv(date(2025, 3, 17))}, today=date(2025, 3, 18),
                                    visit_date=date(2025, 3, 17))
    with pytest.raises(AfterWithdrawal, match="cancelled"):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "W12", today=date(2025, 6, 1), missed=True,
                            reason="not seen")
    assert counts(trial.uow) == before
    # Data of the withdrawal day, or earlier data entered late, are still taken.
    assert dose(trial, date(2025, 3, 12)).status == "given"
    assert visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY,
                               on_date=TW1).status == "done"
    # The subject no longer appears on the site's worklist.
    due = visits.visits_due(trial.uow, trial.coordinator, "PKUPH", today=date(2025, 3, 17)).to_dict()
    assert "R-S-001" not in str(due) and "R-S-002" in str(due)


# ------------------------------------------------------------------------------------------------
# Refusals change nothing


def refusals(trial):
    dose(trial, date(2025, 3, 11))
    visits.record_visit(trial.uow, trial.coordinator, trial.gcv_subject, "TW1", today=TODAY, on_date=TW1)
    return [
        (NotRandomized, "not randomized", dict(subject=trial.screening_subject)),
        (InvalidInput, "after today", dict(on=TODAY + timedelta(days=1))),
        (InvalidInput, "before randomization", dict(on=RANDOMIZED_ON - timedelta(days=1))),
        (AfterWithdrawal, "a dose recorded on 2025-03-11", dict(on=TW1)),
        (AfterWithdrawal, "visit TW1 done on 2025-03-10", dict(subject=trial.gcv_subject, on=date(2025, 3, 9))),
        (InvalidInput, "not a withdrawal reason", dict(reason="bored")),
        (InvalidInput, "needs the reason in words", dict(reason="other")),
        (InvalidInput, "must be a date", dict(on="2025-03-12")),
        (Forbidden, "may not subject.withdraw", dict(actor=trial.coordinator)),
        (Forbidden, "may not subject.withdraw", dict(actor=trial.monitor)),
        (Forbidden, "another site", dict(actor=trial.other_investigator)),
        (NotFound, "no subject", dict(subject=9999)),
        (InvalidInput, "whole number", dict(subject="1")),
    ]


def test_every_refused_withdrawal_changes_nothing(trial):
    cases = refusals(trial)
    before = counts(trial.uow)
    row = subject_row(trial)
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            withdraw(trial, **kwargs)
        assert counts(trial.uow) == before, message
    after = subject_row(trial)
    assert (after.status, after.end_of_study_date, after.end_of_study_reason) == (row.status, None, None)


def test_a_second_withdrawal_or_completion_is_refused_and_changes_nothing(trial):
    withdraw(trial)
    before = counts(trial.uow)
    with pytest.raises(StudyEnded, match="already ended the study on 2025-03-12 \\(withdrew consent\\)"):
        withdraw(trial)
    with pytest.raises(StudyEnded):
        withdraw(trial, reason="death", on=date(2025, 3, 13))
    with pytest.raises(StudyEnded):
        complete(trial)
    assert counts(trial.uow) == before


# ------------------------------------------------------------------------------------------------
# Completion


def test_completion_needs_the_final_visit_done_then_takes_its_date(trial):
    before = counts(trial.uow)
    with pytest.raises(FinalVisitNotDone, match="treatment has not ended, so the final visit \\(FU3M\\) has no date"):
        complete(trial)
    assert counts(trial.uow) == before
    end_treatment(trial)
    fu3m = TW1 + timedelta(days=90)
    before = counts(trial.uow)
    with pytest.raises(FinalVisitNotDone, match=f"the final visit FU3M \\(due {fu3m}\\) is scheduled"):
        complete(trial, today=fu3m - timedelta(days=1))
    with pytest.raises(Forbidden):
        complete(trial, actor=trial.coordinator, today=fu3m)
    with pytest.raises(Forbidden, match="another site"):
        complete(trial, actor=trial.other_investigator, today=fu3m)
    with pytest.raises(NotRandomized):
        complete(trial, subject=trial.screening_subject)
    assert counts(trial.uow) == before
    visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "FU3M", today=fu3m + timedelta(days=3),
                        on_date=fu3m + timedelta(days=2))
    view = complete(trial, today=fu3m + timedelta(days=5))
    assert (view.status, view.date, view.reason, view.dsdecod, view.cancelled) == (
        "completed", fu3m + timedelta(days=2), "completed", "COMPLETED", ())
    event = last_audit(trial)
    assert (event.action, json.loads(event.before)["status"], json.loads(event.after)["status"]) == (
        "subject.complete", "in_follow_up", "completed")
    assert event.reason == f"final visit FU3M done on {fu3m + timedelta(days=2)}"
    before = counts(trial.uow)
    with pytest.raises(StudyEnded, match="completed"):
        complete(trial, today=fu3m + timedelta(days=5))
    with pytest.raises(StudyEnded):
        withdraw(trial, today=fu3m + timedelta(days=5))
    assert counts(trial.uow) == before


# ------------------------------------------------------------------------------------------------
# The analysis snapshot


def test_the_snapshot_tells_withdrawn_and_completed_subjects_at_the_cut_off(trial):
    dose(trial, date(2025, 3, 5), subject=trial.gcv_subject)
    withdraw(trial, subject=trial.gcv_subject, reason="other", details="moved abroad")
    end_treatment(trial)
    fu3m = TW1 + timedelta(days=90)
    visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "FU3M", today=fu3m, on_date=fu3m)
    complete(trial, today=fu3m)

    def records(cutoff):
        data = analysis_data.build_trial_data(trial.uow, trial.statistician, data_cutoff=cutoff)
        return {record.subject_id: record for record in data.subjects}

    found = records(fu3m)
    withdrawn, completed = found["R-S-002"], found["R-S-001"]
    assert (withdrawn.status, withdrawn.withdrawal_date, withdrawn.withdrawal_reason) == (
        "withdrawn", date(2025, 3, 12), "other: moved abroad")
    assert (completed.status, completed.withdrawal_date, completed.withdrawal_reason) == ("completed", None, None)
    # Before the withdrawal and the completion, the same subjects were on treatment and in follow-up.
    earlier = records(date(2025, 3, 11))
    assert (earlier["R-S-002"].status, earlier["R-S-002"].withdrawal_date) == ("on_treatment", None)
    assert earlier["R-S-001"].status == "in_follow_up"
