"""The visit calendar (core/schedule.py) for both shipped protocols: dates from the actual
randomization date across month ends and leap days, windows, statuses on a given day, the stop rule
(first CMV-DNA below the assay's limit), out-of-window deviations and the per-site lists.

Expected dates are counted by hand on the calendar (e.g. 26 Feb 2024 + 7 days = 4 Mar 2024, across
29 Feb; + 84 days = 20 May 2024).
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.protocol import Protocol, Quantity
from cmvtrial.core.schedule import (
    CmvResult,
    SubjectVisits,
    VisitRecord,
    VisitStatus,
    end_of_treatment_date,
    is_cmv_negative,
    parse_visit_label,
    site_worklist,
    visit_calendar,
)
from cmvtrial.errors import InvalidInput, NotFound
from cmvtrial.protocols import load_shipped_protocol

SHIPPED = ["sle-cmv-il2", "nct04225780"]
PROTOCOLS = {pid: load_shipped_protocol(pid)[0] for pid in SHIPPED}
LEAP = date(2024, 2, 26)


@pytest.fixture(params=SHIPPED)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return PROTOCOLS[request.param]


def dates(calendar, label):
    visit = next(v for v in calendar.visits if v.label == label)
    return visit.target_date, visit.window_start, visit.window_end


def status(calendar, label):
    return next(v for v in calendar.visits if v.label == label).status


# ------------------------------------------------------------------------------------------------
# Dates


@pytest.mark.parametrize(
    ("randomized", "tw1", "tw2", "w12"),
    [
        (date(2024, 2, 26), date(2024, 3, 4), date(2024, 3, 11), date(2024, 5, 20)),   # across 29 Feb
        (date(2024, 2, 22), date(2024, 2, 29), date(2024, 3, 7), date(2024, 5, 16)),   # onto the leap day
        (date(2025, 1, 31), date(2025, 2, 7), date(2025, 2, 14), date(2025, 4, 25)),   # month end, common year
        (date(2023, 12, 29), date(2024, 1, 5), date(2024, 1, 12), date(2024, 3, 22)),  # year end
    ],
)
def test_dates_follow_the_actual_randomization_date(protocol, randomized, tw1, tw2, w12):
    calendar = visit_calendar(protocol, randomized_on=randomized, today=randomized + timedelta(days=10))
    assert dates(calendar, "BL") == (randomized, randomized, randomized)
    assert dates(calendar, "TW1") == (tw1, tw1 - timedelta(days=2), tw1 + timedelta(days=2))
    assert dates(calendar, "TW2")[0] == tw2
    assert dates(calendar, "W12") == (w12, w12 - timedelta(days=7), w12 + timedelta(days=7))
    assert status(calendar, "FU3M") == VisitStatus.PENDING and dates(calendar, "FU3M") == (None, None, None)


@pytest.mark.parametrize(
    ("eot", "fu3m"),
    [(date(2024, 3, 11), date(2024, 6, 9)), (date(2024, 11, 30), date(2025, 2, 28))],
)
def test_follow_up_is_three_months_after_end_of_treatment(protocol, eot, fu3m):
    randomized = eot - timedelta(days=14)
    calendar = visit_calendar(protocol, randomized_on=randomized, today=eot, end_of_treatment=eot)
    assert dates(calendar, "FU3M") == (fu3m, fu3m, fu3m + timedelta(days=14))


def test_the_visits_come_in_date_order_with_their_forms(protocol):
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 20))
    labels = [v.label for v in calendar.visits]
    assert labels == ["BL", "TW1", "TW2", "TW3", "TW4", "W12", "FU3M"]
    assert "cmv_load" in calendar.visit("TW", 2).forms
    with pytest.raises(NotFound):
        calendar.visit("TW", 9)


def test_weekly_visits_are_listed_up_to_the_next_one_or_through_a_date(protocol):
    today = date(2024, 3, 20)  # TW3 window 16-20 Mar is open; TW4's opens 23 Mar
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=today)
    assert [v.index for v in calendar.visits if v.code == "TW"] == [1, 2, 3, 4]
    ahead = visit_calendar(protocol, randomized_on=LEAP, today=today, through=date(2024, 4, 10))
    assert [v.index for v in ahead.visits if v.code == "TW"][-1] == 7  # TW6 window opens 6 Apr; TW7 13 Apr


# ------------------------------------------------------------------------------------------------
# Status on a given day


@pytest.mark.parametrize(
    ("today", "expected"),
    [
        (date(2024, 3, 1), VisitStatus.SCHEDULED),   # window 2-6 Mar not open
        (date(2024, 3, 2), VisitStatus.DUE),         # first day of the window
        (date(2024, 3, 6), VisitStatus.DUE),         # last day of the window
        (date(2024, 3, 7), VisitStatus.OVERDUE),     # window closed, TW2's not open yet
        (date(2024, 3, 8), VisitStatus.OVERDUE),
        (date(2024, 3, 9), VisitStatus.MISSED),      # TW2's window opened: TW1 can no longer be done
    ],
)
def test_status_of_a_weekly_visit_through_its_window(protocol, today, expected):
    assert status(visit_calendar(protocol, randomized_on=LEAP, today=today), "TW1") == expected


def test_a_single_visit_stays_overdue_until_recorded(protocol):
    late = date(2024, 9, 1)
    assert status(visit_calendar(protocol, randomized_on=LEAP, today=late), "W12") == VisitStatus.OVERDUE
    records = {("W12", 0): VisitRecord(missed=True)}
    assert status(visit_calendar(protocol, randomized_on=LEAP, today=late, records=records), "W12") == VisitStatus.MISSED


def test_recorded_visits_are_done_and_deviations_flagged(protocol):
    records = {("BL", 0): VisitRecord(LEAP), ("TW", 1): VisitRecord(date(2024, 3, 8)),
               ("TW", 2): VisitRecord(missed=True)}
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 20), records=records)
    bl, tw1, tw2 = calendar.visit("BL"), calendar.visit("TW", 1), calendar.visit("TW", 2)
    assert (bl.status, bl.out_of_window) == (VisitStatus.DONE, False)
    assert (tw1.status, tw1.actual_date, tw1.out_of_window) == (VisitStatus.DONE, date(2024, 3, 8), True)
    assert tw1.window_deviation_days(date(2024, 3, 8)) == 2
    assert tw1.window_deviation_days(date(2024, 3, 1)) == -1
    assert tw2.status == VisitStatus.MISSED


def test_visit_for_a_date_is_the_open_window_that_holds_it(protocol):
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 20),
                              records={("BL", 0): VisitRecord(LEAP)})
    assert calendar.visit_for(date(2024, 3, 17)).label == "TW3"
    assert calendar.visit_for(date(2024, 3, 14)) is None  # between windows: unscheduled
    assert calendar.visit_for(LEAP) is None  # baseline is done


# ------------------------------------------------------------------------------------------------
# The stop rule


def test_the_negative_visit_becomes_end_of_treatment_and_later_visits_are_cancelled(protocol):
    eot = date(2024, 3, 11)  # TW2's target
    records = {("TW", 1): VisitRecord(date(2024, 3, 4)), ("TW", 3): VisitRecord()}  # TW3 stored as planned
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 25), end_of_treatment=eot,
                              records=records)
    tw = [v for v in calendar.visits if v.code == "TW"]
    assert [(v.index, v.status, v.end_of_treatment) for v in tw] == [
        (1, VisitStatus.DONE, False), (2, VisitStatus.DONE, True), (3, VisitStatus.CANCELLED, False)]
    assert tw[1].actual_date == eot
    assert status(calendar, "W12") == VisitStatus.SCHEDULED  # week 12 happens whether or not treatment ended
    assert dates(calendar, "FU3M")[0] == eot + timedelta(days=90)


def test_end_of_treatment_on_a_recorded_visit_date_picks_that_visit(protocol):
    records = {("TW", 2): VisitRecord(date(2024, 3, 13))}
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 20),
                              end_of_treatment=date(2024, 3, 13), records=records)
    assert calendar.visit("TW", 2).end_of_treatment and not calendar.visit("TW", 2).out_of_window


def test_a_negative_result_outside_every_window_ends_treatment_at_the_nearest_visit_flagged(protocol):
    eot = date(2024, 3, 15)  # between TW2 (9-13 Mar) and TW3 (16-20 Mar); nearest target is TW3 (18 Mar)
    calendar = visit_calendar(protocol, randomized_on=LEAP, today=date(2024, 3, 30), end_of_treatment=eot)
    eot_visit = next(v for v in calendar.visits if v.end_of_treatment)
    assert (eot_visit.label, eot_visit.actual_date, eot_visit.out_of_window) == ("TW3", eot, True)
    assert [v.label for v in calendar.visits if v.code == "TW"] == ["TW1", "TW2", "TW3"]


def test_end_of_treatment_before_randomization_is_refused(protocol):
    with pytest.raises(InvalidInput, match="before randomization"):
        visit_calendar(protocol, randomized_on=LEAP, today=LEAP, end_of_treatment=LEAP - timedelta(days=1))


@pytest.mark.parametrize(
    ("records", "message"),
    [({("XX", 0): VisitRecord()}, "not in the visit plan"), ({("TW", 0): VisitRecord()}, "does not exist"),
     ({("W12", 2): VisitRecord()}, "does not exist")],
)
def test_records_for_visits_the_plan_does_not_have_are_refused(protocol, records, message):
    with pytest.raises(InvalidInput, match=message):
        visit_calendar(protocol, randomized_on=LEAP, today=LEAP, records=records)


def test_dates_must_be_dates(protocol):
    with pytest.raises(InvalidInput, match="today must be a date"):
        visit_calendar(protocol, randomized_on=LEAP, today="2024-03-01")  # type: ignore[arg-type]


# CMV negativity: LLOQ 137 IU/mL = 150.7 copies/mL with the assay's 1.1 copies per IU (domain.md §3.1-3.2)


@pytest.mark.parametrize(
    ("result", "negative"),
    [
        (CmvResult(LEAP, "not_detected"), True),
        (CmvResult(LEAP, "detected_below_lloq"), True),
        (CmvResult(LEAP, "quantified", 150, "copies/mL"), True),
        (CmvResult(LEAP, "quantified", 150.7, "copies/mL"), False),
        (CmvResult(LEAP, "quantified", 136.9, "IU/mL"), True),
        (CmvResult(LEAP, "quantified", 137, "IU/mL"), False),
        (CmvResult(LEAP, None, 20000, "copies/mL"), False),
    ],
)
def test_negative_means_below_the_assay_limit(protocol, result, negative):
    assert is_cmv_negative(protocol.assay.cmv_dna, result) is negative


@pytest.mark.parametrize(
    ("result", "message"),
    [(CmvResult(LEAP, "weird"), "unknown CMV-DNA result category"), (CmvResult(LEAP, "quantified"), "needs its load"),
     (CmvResult(LEAP, "quantified", -1, "copies/mL"), "cannot be negative")],
)
def test_bad_cmv_results_are_refused(protocol, result, message):
    with pytest.raises(InvalidInput, match=message):
        is_cmv_negative(protocol.assay.cmv_dna, result)


def test_the_first_negative_result_ends_treatment(protocol):
    results = [CmvResult(date(2024, 3, 11), "not_detected"), CmvResult(date(2024, 3, 4), "quantified", 4000, "copies/mL"),
               CmvResult(LEAP, "quantified", 20000, "copies/mL"), CmvResult(date(2024, 3, 18), "not_detected")]
    assert end_of_treatment_date(protocol.assay.cmv_dna, results) == date(2024, 3, 11)
    assert end_of_treatment_date(protocol.assay.cmv_dna, results[1:3]) is None


def test_two_consecutive_negatives_a_week_apart_when_the_protocol_asks(protocol):
    assay = protocol.assay.cmv_dna
    stricter = assay.model_copy(update={"negativity": assay.negativity.model_copy(
        update={"consecutive_below_lloq": 2, "min_days_between": 7})})
    pos, neg = ("quantified", 5000, "copies/mL"), ("not_detected",)
    series = [(0, pos), (7, neg), (10, neg), (14, pos), (21, neg), (25, neg), (28, neg)]
    results = [CmvResult(LEAP + timedelta(days=day), *values) for day, values in series]
    # day 7 negative, 10 too soon, 14 positive resets; 21 negative, 25 too soon, 28 completes the pair
    assert end_of_treatment_date(stricter, results) == LEAP + timedelta(days=28)
    lenient = stricter.model_copy(update={"negativity": stricter.negativity.model_copy(
        update={"detected_below_lloq_counts_as_negative": False, "consecutive_below_lloq": 1})})
    assert end_of_treatment_date(lenient, [CmvResult(LEAP, "detected_below_lloq")]) is None


def test_the_limit_is_compared_in_the_assay_unit(protocol):
    assay = protocol.assay.cmv_dna
    assert assay.in_primary_unit(assay.lloq) == pytest.approx(150.7)
    assert assay.in_primary_unit(Quantity(value=100, unit="IU/mL")) == pytest.approx(110)


# ------------------------------------------------------------------------------------------------
# Per site


def test_site_worklist_lists_due_this_week_overdue_and_missed():
    sle, nct = PROTOCOLS["sle-cmv-il2"], PROTOCOLS["nct04225780"]
    today = date(2024, 3, 20)
    subjects = [
        # TW3 due today (16-20 Mar); TW4 opens 23 Mar (within the week); TW2 missed (TW3 open); BL overdue
        SubjectVisits("S-001", "A", sle, LEAP, records={("TW", 1): VisitRecord(date(2024, 3, 4))}),
        # randomized 9 Mar: BL done; TW1 16 Mar (window 14-18) overdue, TW2's window (21-25) not yet open
        SubjectVisits("S-002", "A", nct, date(2024, 3, 9), records={("BL", 0): VisitRecord(date(2024, 3, 9))}),
        SubjectVisits("S-003", "B", sle, date(2024, 3, 19)),
    ]
    worklist = site_worklist(subjects, today=today, site="A")
    assert worklist.week_end == date(2024, 3, 26)
    assert [(e.subject, e.visit.label) for e in worklist.due_this_week] == [
        ("S-001", "TW3"), ("S-002", "TW2"), ("S-001", "TW4")]  # by window end: 20, 25, 27 Mar
    assert [(e.subject, e.visit.label) for e in worklist.overdue] == [("S-001", "BL"), ("S-002", "TW1")]
    assert [(e.subject, e.visit.label) for e in worklist.missed] == [("S-001", "TW2")]
    everyone = site_worklist(subjects, today=today)
    assert {e.subject for e in everyone.due_this_week} == {"S-001", "S-002", "S-003"}
    assert worklist.to_dict()["overdue"][0]["subject"] == "S-001"


def test_parse_visit_label(protocol):
    assert parse_visit_label(protocol, "W12") == ("W12", 0)
    assert parse_visit_label(protocol, "TW3") == ("TW", 3)
    for bad in ("TW0", "TW", "X1", "BL2"):
        with pytest.raises(InvalidInput):
            parse_visit_label(protocol, bad)


# ------------------------------------------------------------------------------------------------
# Laws


@given(
    protocol_id=st.sampled_from(SHIPPED),
    randomized=st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)),
    elapsed=st.integers(min_value=0, max_value=200),
    negative_after=st.one_of(st.none(), st.integers(min_value=1, max_value=150)),
)
def test_calendar_laws(protocol_id, randomized, elapsed, negative_after):
    protocol = PROTOCOLS[protocol_id]
    today = randomized + timedelta(days=elapsed)
    eot = None if negative_after is None else randomized + timedelta(days=negative_after)
    calendar = visit_calendar(protocol, randomized_on=randomized, today=today, end_of_treatment=eot)
    weekly = [v for v in calendar.visits if v.code == "TW"]
    for visit in weekly:
        assert visit.target_date == randomized + timedelta(days=7 * visit.index)
    for earlier, later in zip(weekly, weekly[1:], strict=False):
        assert earlier.window_end < later.window_start  # windows never overlap
    dated = [v.target_date for v in calendar.visits if v.target_date]
    assert dated == sorted(dated)
    assert sum(v.end_of_treatment for v in calendar.visits) == (0 if eot is None else 1)
    if eot is None:
        assert weekly[-1].window_start > today  # the next weekly visit is always shown
        assert calendar.visit("FU3M").status == VisitStatus.PENDING
    for visit in calendar.visits:
        if visit.status == VisitStatus.DUE:
            assert visit.window_start <= today <= visit.window_end
        if visit.status == VisitStatus.SCHEDULED:
            assert today < visit.window_start
        if visit.status in (VisitStatus.OVERDUE, VisitStatus.MISSED) and not visit.end_of_treatment:
            assert today > visit.window_end
