"""The visit calendar in the system, for both shipped protocols: dates from the actual randomization
date (across month ends and leap days), visits recorded, deviations flagged, the site worklist."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from data_capture_support import RANDOMIZED_ON, add_subject, cmv, counts, make_capture_trial
from sqlalchemy import select

from cmvtrial.errors import Forbidden, InvalidInput, NotFound, Refused
from cmvtrial.services import data_entry, visits
from cmvtrial.store.tables import AuditEvent, StudyEvent

TODAY = date(2025, 3, 14)


@pytest.fixture(params=["sle-cmv-il2", "nct04225780"])
def protocol_id(request):
    return request.param


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def test_the_calendar_starts_at_the_actual_randomization_date(trial):
    found = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=TODAY)
    assert (found.randomized_on, found.arm, found.end_of_treatment) == (RANDOMIZED_ON, "il2_gcv", None)
    calendar = found.calendar
    assert [visit.label for visit in calendar.visits] == ["BL", "TW1", "TW2", "W12", "FU3M"]
    baseline, week1, week2 = calendar.visit("BL"), calendar.visit("TW", 1), calendar.visit("TW", 2)
    assert (baseline.target_date, baseline.status) == (RANDOMIZED_ON, "overdue")
    assert (week1.window_start, week1.target_date, week1.window_end) == (date(2025, 3, 8), date(2025, 3, 10),
                                                                         date(2025, 3, 12))
    assert (week1.status, week2.status) == ("overdue", "scheduled")
    assert calendar.visit("W12").target_date == RANDOMIZED_ON + timedelta(days=84)
    assert (calendar.visit("FU3M").status, calendar.visit("FU3M").target_date) == ("pending", None)


@pytest.mark.parametrize(("randomized_on", "week1", "week12"), [
    (date(2024, 2, 26), date(2024, 3, 4), date(2024, 5, 20)),    # across a leap day
    (date(2025, 1, 29), date(2025, 2, 5), date(2025, 4, 23)),    # across a month end
    (date(2023, 12, 28), date(2024, 1, 4), date(2024, 3, 21)),   # across a year end and a leap February
])
def test_dates_cross_month_ends_and_leap_days(trial, randomized_on, week1, week12):
    subject = add_subject(trial.uow, trial.admin, trial.site_id, "S-LEAP", arm="gcv", randomized_on=randomized_on)
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, subject, today=randomized_on).calendar
    assert calendar.visit("BL").target_date == randomized_on
    assert calendar.visit("TW", 1).target_date == week1
    assert calendar.visit("W12").target_date == week12


def test_a_visit_done_outside_its_window_is_kept_and_flagged(trial):
    late = date(2025, 3, 13)
    view = visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY, on_date=late)
    assert (view.status, view.actual_date, view.changed) == ("done", late, True)
    assert view.deviation == "TW1 done on 2025-03-13, 1 day(s) after its window 2025-03-08 to 2025-03-12"
    with trial.uow.reading():
        event = trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence.desc())).first()
        assert event.action == "study_event.deviation"
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=TODAY)
    assert calendar.calendar.visit("TW", 1).out_of_window
    assert calendar.to_dict()["visits"][1]["deviation"] == view.deviation


def test_recording_again_changes_nothing_and_a_new_date_needs_a_reason(trial):
    visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY, on_date=date(2025, 3, 10))
    before = counts(trial.uow)
    again = visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY,
                                on_date=date(2025, 3, 10))
    assert not again.changed and counts(trial.uow) == before
    with pytest.raises(InvalidInput, match="already recorded"):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY,
                            on_date=date(2025, 3, 11))
    assert counts(trial.uow) == before
    moved = visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY,
                                on_date=date(2025, 3, 11), reason="date typed wrongly")
    assert moved.actual_date == date(2025, 3, 11) and moved.deviation is None


def test_a_missed_visit_needs_a_reason_and_no_data(trial):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="give a reason"):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY, missed=True)
    assert counts(trial.uow) == before
    view = visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW1", today=TODAY, missed=True,
                               reason="patient in hospital elsewhere")
    assert view.status == "missed"
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL",
                                {"cmv_load": cmv(RANDOMIZED_ON)}, today=TODAY, visit_date=RANDOMIZED_ON)
    with pytest.raises(Refused, match="has data entered"):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "BL", today=TODAY, missed=True,
                            reason="x")


@pytest.mark.parametrize(("visit", "options", "error", "message"), [
    ("TW1", {"on_date": date(2025, 3, 15)}, InvalidInput, "after today"),
    ("TW1", {}, InvalidInput, "either the date"),
    ("TW1", {"on_date": date(2025, 3, 10), "missed": True, "reason": "x"}, InvalidInput, "either the date"),
    ("BL", {"on_date": date(2025, 3, 2)}, InvalidInput, "before randomization"),
    ("TW0", {"on_date": date(2025, 3, 10)}, InvalidInput, "not a visit"),
    ("TW5", {"on_date": date(2025, 3, 10)}, NotFound, "not in the calendar"),
    ("FU3M", {"on_date": date(2025, 3, 10)}, Refused, "end of treatment"),
])
def test_bad_visit_records_are_refused_and_change_nothing(trial, visit, options, error, message):
    before = counts(trial.uow)
    with pytest.raises(error, match=message):
        visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, visit, today=TODAY, **options)
    assert counts(trial.uow) == before


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_who_may_record_a_visit(trial, role):
    before = counts(trial.uow)
    actor = trial.actors()[role]
    if role in ("investigator", "coordinator"):
        assert visits.record_visit(trial.uow, actor, trial.il2_subject, "BL", today=TODAY, on_date=RANDOMIZED_ON).changed
        return
    with pytest.raises(Forbidden):
        visits.record_visit(trial.uow, actor, trial.il2_subject, "BL", today=TODAY, on_date=RANDOMIZED_ON)
    assert counts(trial.uow) == before


def test_another_sites_staff_can_neither_record_nor_read(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        visits.record_visit(trial.uow, trial.other_coordinator, trial.il2_subject, "BL", today=TODAY,
                            on_date=RANDOMIZED_ON)
    with pytest.raises(Forbidden, match="another site"):
        visits.subject_calendar(trial.uow, trial.other_investigator, trial.il2_subject, today=TODAY)
    with pytest.raises(Forbidden, match="another site"):
        visits.visits_due(trial.uow, trial.other_coordinator, "PKUPH", today=TODAY)
    with pytest.raises(Forbidden):
        visits.subject_calendar(trial.uow, trial.statistician, trial.il2_subject, today=TODAY)
    assert counts(trial.uow) == before


def test_a_candidate_has_no_calendar_before_randomization(trial):
    with pytest.raises(Refused, match="not randomized"):
        visits.subject_calendar(trial.uow, trial.coordinator, trial.screening_subject, today=TODAY)


def test_the_site_worklist_lists_due_overdue_and_missed(trial):
    visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "BL", today=TODAY, on_date=RANDOMIZED_ON)
    today = date(2025, 3, 20)  # TW1 of both subjects passed; TW2 window (15-19 Mar) closed; TW3 window opens 22 Mar
    found = visits.visits_due(trial.uow, trial.coordinator, "pkuph", today=today)
    worklist = found.worklist
    due = {(entry.subject, entry.visit.label) for entry in worklist.due_this_week}
    overdue = {(entry.subject, entry.visit.label) for entry in worklist.overdue}
    missed = {(entry.subject, entry.visit.label) for entry in worklist.missed}
    assert due == {("R-S-001", "TW3"), ("R-S-002", "TW3")}
    assert overdue == {("R-S-002", "BL"), ("R-S-002", "TW2"), ("R-S-001", "TW2")}
    assert missed == {("R-S-001", "TW1"), ("R-S-002", "TW1")}
    assert all(entry.site == "PKUPH" for entry in worklist.due_this_week)  # OTHER's subject is not listed
    assert found.to_dict()["site"] == "PKUPH"
    with pytest.raises(NotFound):
        visits.visits_due(trial.uow, trial.data_manager, "NOPE", today=today)


def test_the_calendar_exports_as_icalendar(trial):
    text = visits.calendar_ics(trial.uow, trial.coordinator, trial.il2_subject, today=TODAY,
                               generated_at=datetime(2025, 3, 14, 9, 0, tzinfo=UTC))
    assert text.startswith("BEGIN:VCALENDAR\r\n") and text.endswith("END:VCALENDAR\r\n")
    assert "DTSTART;VALUE=DATE:20250303" in text and "UID:" in text and "R-S-001" in text
    assert "S-001" not in text.replace("R-S-001", "")  # the trial's subject code only


def test_end_of_treatment_cancels_stored_treatment_visits(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "TW1",
                                {"cmv_load": cmv(date(2025, 3, 10), result="not_detected")}, today=TODAY,
                                visit_date=date(2025, 3, 10))
    with trial.uow.reading():
        events = {(e.visit_code, e.repeat_index): e.status for e in trial.uow.session.scalars(
            select(StudyEvent).where(StudyEvent.subject_id == trial.il2_subject))}
    assert events == {("TW", 1): "done", ("FU3M", 0): "planned"}
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=TODAY).calendar
    assert calendar.visit("TW", 1).end_of_treatment
    assert [visit.label for visit in calendar.visits if visit.code == "TW"] == ["TW1"]
