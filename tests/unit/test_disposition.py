"""A subject's end of study (core/disposition.py) and the calendar of a subject who left (core/schedule.py):
the CDISC reasons and the statuses they lead to, the dates a withdrawal may carry, the visits it
cancels, and which visit is the final one."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.analysis.trial_data import DISCONTINUED_STATUSES, SUBJECT_STATUSES
from cmvtrial.core.disposition import (
    COMPLETION,
    ENDED,
    LEFT_EARLY,
    WITHDRAWAL_REASONS,
    LatestData,
    Withdrawal,
    check_withdrawal,
    conflicting_data,
    exit_reason,
    final_visit,
    withdrawal_reason,
)
from cmvtrial.core.schedule import VisitRecord, VisitStatus, visit_calendar
from cmvtrial.errors import InvalidInput
from cmvtrial.protocols import load_shipped_protocol

RANDOMIZED = date(2025, 3, 3)
TODAY = date(2025, 4, 1)
PROTOCOL = load_shipped_protocol("sle-cmv-il2")[0]


def test_every_reason_is_a_cdisc_term_and_leads_to_a_status_the_analyses_know():
    ncomplt = {"COMPLETED", "WITHDRAWAL BY SUBJECT", "LOST TO FOLLOW-UP", "DEATH", "ADVERSE EVENT",
               "PHYSICIAN DECISION", "OTHER"}  # NCI C66727, as adapters/interop/terminology.py lists it
    for reason in (*WITHDRAWAL_REASONS, COMPLETION):
        assert reason.dsdecod in ncomplt and reason.status in SUBJECT_STATUSES
        assert exit_reason(reason.code) is reason
    assert set(LEFT_EARLY) == set(DISCONTINUED_STATUSES)
    assert {reason.status for reason in WITHDRAWAL_REASONS} == set(LEFT_EARLY)
    assert set(ENDED) == {*LEFT_EARLY, "completed"}
    assert exit_reason(None) is None and exit_reason("nonsense") is None


@pytest.mark.parametrize(("given_as", "code"), [
    ("withdrew_consent", "withdrew_consent"), ("withdrew consent", "withdrew_consent"),
    ("  Lost to follow-up ", "lost_to_follow_up"), ("death", "death"), ("investigator decision", "investigator_decision"),
])
def test_a_reason_is_named_by_its_code_or_label(given_as, code):
    assert withdrawal_reason(given_as).code == code


def test_an_unknown_reason_lists_the_choices_and_suggests_the_nearest():
    with pytest.raises(InvalidInput, match="did you mean withdrew_consent") as error:
        withdrawal_reason("withdrew_consnt")
    assert error.value.details["field"] == "reason" and "other" in error.value.details["choices"]
    with pytest.raises(InvalidInput, match="not a withdrawal reason"):
        withdrawal_reason(None)
    with pytest.raises(InvalidInput):
        withdrawal_reason("completed")  # completion is not a withdrawal


def test_a_withdrawal_is_dated_between_randomization_and_today():
    found = check_withdrawal("adverse_event", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED,
                             details="  grade 3 neutropenia  ")
    assert found == Withdrawal(date(2025, 3, 20), withdrawal_reason("adverse_event"), "grade 3 neutropenia")
    assert (found.status, found.describe()) == ("withdrawn", "adverse event")
    assert check_withdrawal("death", RANDOMIZED, today=TODAY, randomized_on=RANDOMIZED).status == "died"
    assert check_withdrawal("withdrew_consent", TODAY, today=TODAY, randomized_on=RANDOMIZED).on_date == TODAY
    with pytest.raises(InvalidInput, match="after today") as error:
        check_withdrawal("withdrew_consent", TODAY + timedelta(days=1), today=TODAY, randomized_on=RANDOMIZED)
    assert error.value.details["field"] == "date"
    with pytest.raises(InvalidInput, match="before randomization"):
        check_withdrawal("withdrew_consent", RANDOMIZED - timedelta(days=1), today=TODAY, randomized_on=RANDOMIZED)
    with pytest.raises(InvalidInput, match="must be a date"):
        check_withdrawal("withdrew_consent", "2025-03-20", today=TODAY, randomized_on=RANDOMIZED)


def test_other_needs_words_and_the_words_are_bounded():
    with pytest.raises(InvalidInput, match="needs the reason in words") as error:
        check_withdrawal("other", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED, details="   ")
    assert error.value.details["field"] == "details"
    moved = check_withdrawal("other", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED, details="moved abroad")
    assert (moved.status, moved.describe()) == ("withdrawn", "other: moved abroad")
    with pytest.raises(InvalidInput, match="at most 2000"):
        check_withdrawal("death", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED, details="x" * 2001)
    with pytest.raises(InvalidInput, match="must be text"):
        check_withdrawal("death", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED, details=42)


def test_data_recorded_after_the_withdrawal_date_conflict_with_it():
    found = check_withdrawal("lost_to_follow_up", date(2025, 3, 20), today=TODAY, randomized_on=RANDOMIZED)
    assert conflicting_data(found, None) is None
    assert conflicting_data(found, LatestData(date(2025, 3, 20), "visit TW2 done")) is None  # the same day is fine
    assert conflicting_data(found, LatestData(date(2025, 3, 21), "a dose of ganciclovir")) == (
        "the withdrawal date 2025-03-20 is before data already recorded: a dose of ganciclovir on 2025-03-21")


# ------------------------------------------------------------------------------------------------
# The calendar of a subject who left


def calendar(today=TODAY, **kwargs):
    return visit_calendar(PROTOCOL, randomized_on=RANDOMIZED, today=today, **kwargs)


def test_visits_after_the_day_a_subject_left_are_cancelled():
    records = {("BL", 0): VisitRecord(date(2025, 3, 3)), ("TW", 1): VisitRecord(date(2025, 3, 10)),
               ("TW", 3): VisitRecord()}  # a visit planned for a known date
    found = calendar(records=records, left_on=date(2025, 3, 15))
    statuses = {visit.label: visit.status for visit in found.visits}
    assert statuses == {"BL": "done", "TW1": "done", "TW2": "cancelled", "TW3": "cancelled", "W12": "cancelled",
                        "FU3M": "cancelled"}
    # Without leaving, the same subject has TW2 missed, TW3 to TW5 listed and FU3M pending.
    assert {visit.label: visit.status for visit in calendar(records=records).visits}["FU3M"] == "pending"


def test_leaving_keeps_what_happened_before():
    records = {("BL", 0): VisitRecord(date(2025, 3, 3)), ("TW", 1): VisitRecord(missed=True)}
    found = calendar(records=records, left_on=date(2025, 3, 18))
    statuses = {visit.label: visit.status for visit in found.visits}
    # TW2 (17 Mar) fell on or before the day the subject left: it stays missed, not cancelled.
    assert statuses == {"BL": "done", "TW1": "missed", "TW2": "missed", "TW3": "cancelled", "W12": "cancelled",
                        "FU3M": "cancelled"}


def test_leaving_in_follow_up_cancels_only_the_follow_up_visits_still_to_come():
    eot = date(2025, 3, 17)
    records = {("BL", 0): VisitRecord(date(2025, 3, 3)), ("TW", 1): VisitRecord(date(2025, 3, 10)),
               ("TW", 2): VisitRecord(date(2025, 3, 17)), ("W12", 0): VisitRecord(date(2025, 5, 26))}
    found = calendar(today=date(2025, 6, 1), end_of_treatment=eot, records=records, left_on=date(2025, 6, 1))
    assert {visit.label: visit.status for visit in found.visits} == {
        "BL": "done", "TW1": "done", "TW2": "done", "W12": "done", "FU3M": "cancelled"}


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=200))
def test_nothing_after_leaving_is_ever_due_and_nothing_done_is_undone(left_day, today_day):
    left_on = RANDOMIZED + timedelta(days=left_day)
    today = max(left_on, RANDOMIZED + timedelta(days=today_day))
    records = {("BL", 0): VisitRecord(RANDOMIZED)}
    found = calendar(today=today, records=records, left_on=left_on)
    for visit in found.visits:
        if visit.target_date is None or visit.target_date > left_on:
            assert visit.status == VisitStatus.CANCELLED, visit
    assert found.visit("BL").status == VisitStatus.DONE


def test_the_final_visit_is_the_follow_up_once_treatment_has_ended():
    assert final_visit(calendar()) is None  # FU3M has no date before the end of treatment
    eot = date(2025, 3, 17)
    found = calendar(today=date(2025, 7, 1), end_of_treatment=eot,
                     records={("TW", 2): VisitRecord(eot), ("FU3M", 0): VisitRecord(date(2025, 6, 16))})
    last = final_visit(found)
    assert last is not None and (last.label, last.target_date, last.status) == ("FU3M", eot + timedelta(days=90), "done")
    # A subject whose treatment ended late has week 12 before... and FU3M still last.
    late = calendar(today=date(2025, 7, 1), end_of_treatment=date(2025, 5, 19))
    assert final_visit(late).label == "FU3M"  # type: ignore[union-attr]
