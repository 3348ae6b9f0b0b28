"""The visit calendar: which visits a subject has, when, and where each one stands on a given day.

Why computed, not stored: the calendar follows from the protocol's visit plan and two dates — the
*actual* randomization date (baseline, day 0) and the end of treatment, which is the date of the
first CMV-DNA below the assay's limit (DESIGN.md §3 step 5). Storing dates that could be derived
would let them drift from the plan; the services store only what happened (a visit done on a date,
a visit recorded as missed) and ask this module for the rest. Nothing here reads a clock: ``today``
is passed in.

The plan (``protocol.visits``) has single visits, ``day`` days after their anchor (randomization,
screening or end of treatment), and repeating visits, every ``every_days`` from ``first_day`` until
CMV negativity. Each occurrence has a target date and a window. So, for both shipped protocols:
baseline on day 0; treatment-week visits on days 7, 14, ... until the visit whose CMV-DNA was
negative, which becomes the end of treatment (later treatment visits are cancelled); week 12 on day
84 whatever the treatment status; and the follow-up 3 months after drug withdrawal, anchored to the
end of treatment and *pending* (undated) until treatment has ended.

Status of a visit on ``today`` (:class:`VisitStatus`):

- ``done`` — a date was recorded for it (``out_of_window`` says whether that date broke the window,
  a protocol deviation that is kept and flagged, never refused);
- ``missed`` — recorded as missed, or a repeating visit whose next occurrence's window has opened:
  a weekly visit that did not happen cannot be done any more once the next one is due;
- ``overdue`` — its window has closed with nothing recorded, and it can still be caught up;
- ``due`` — its window is open today; ``scheduled`` — its window opens later;
- ``cancelled`` — a treatment visit after end of treatment, or any visit not done that falls after
  the day the subject left the trial (``left_on``, a withdrawal: core/disposition.py);
  ``pending`` — anchored to an end of treatment that has not happened yet.

:func:`end_of_treatment_date` applies the protocol's negativity rule (how many consecutive results
below the limit, how far apart) to a subject's CMV-DNA results; :func:`site_worklist` lists what a
site has due this week, overdue and missed from plain inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from cmvtrial.core.form_entry import clean_number
from cmvtrial.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import CmvDnaAssay, Protocol, Visit

#: How far ahead "due this week" looks: today and the six days after it.
DAYS_IN_WEEK = 7

#: (visit code, occurrence): 0 for a single visit, 1, 2, ... for a repeating visit's occurrences.
VisitKey = tuple[str, int]


class VisitStatus(StrEnum):
    SCHEDULED = "scheduled"
    DUE = "due"
    OVERDUE = "overdue"
    MISSED = "missed"
    DONE = "done"
    CANCELLED = "cancelled"
    PENDING = "pending"


@dataclass(frozen=True)
class VisitRecord:
    """What the site recorded about one visit: the date it happened, or that it was missed."""

    actual_date: date | None = None
    missed: bool = False


@dataclass(frozen=True)
class ScheduledVisit:
    """One visit (one occurrence of a repeating visit) in a subject's calendar."""

    code: str
    index: int
    name: str
    anchor: str
    day: int
    target_date: date | None
    window_start: date | None
    window_end: date | None
    status: VisitStatus
    actual_date: date | None = None
    end_of_treatment: bool = False
    forms: tuple[str, ...] = ()

    @property
    def key(self) -> VisitKey:
        return (self.code, self.index)

    @property
    def label(self) -> str:
        """``BL``, ``W12``; ``TW3`` for the third treatment-week visit."""
        return f"{self.code}{self.index}" if self.index else self.code

    def window_deviation_days(self, on_date: date) -> int | None:
        """0 inside the window; days before its start (negative) or after its end (positive);
        None while the visit has no date (pending)."""
        if self.window_start is None or self.window_end is None:
            return None
        if on_date < self.window_start:
            return (on_date - self.window_start).days
        if on_date > self.window_end:
            return (on_date - self.window_end).days
        return 0

    @property
    def out_of_window(self) -> bool:
        """A visit done outside its window: a protocol deviation to flag."""
        return self.actual_date is not None and bool(self.window_deviation_days(self.actual_date))

    def to_dict(self) -> dict[str, object]:
        def iso(value: date | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "visit": self.label, "code": self.code, "index": self.index, "name": self.name,
            "anchor": self.anchor, "day": self.day, "target_date": iso(self.target_date),
            "window_start": iso(self.window_start), "window_end": iso(self.window_end),
            "status": str(self.status), "actual_date": iso(self.actual_date),
            "out_of_window": self.out_of_window, "end_of_treatment": self.end_of_treatment,
            "forms": list(self.forms),
        }


@dataclass(frozen=True)
class Calendar:
    """A subject's visits in date order (undated pending visits last), as of ``today``."""

    protocol_id: str
    randomized_on: date
    end_of_treatment: date | None
    today: date
    visits: tuple[ScheduledVisit, ...]

    def visit(self, code: str, index: int = 0) -> ScheduledVisit:
        for visit in self.visits:
            if visit.key == (code, index):
                return visit
        label = f"{code}{index}" if index else code
        raise NotFound(f"the calendar has no visit {label}", field="visit", value=label)

    def visit_for(self, on_date: date) -> ScheduledVisit | None:
        """The not-yet-done visit whose window holds ``on_date`` (where a result taken that day
        belongs), or None when the date is in no open window (an unscheduled or late sample)."""
        for visit in self.visits:
            if visit.status in (VisitStatus.DONE, VisitStatus.CANCELLED, VisitStatus.PENDING):
                continue
            if visit.window_deviation_days(on_date) == 0:
                return visit
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": self.protocol_id,
            "randomized_on": self.randomized_on.isoformat(),
            "end_of_treatment": self.end_of_treatment.isoformat() if self.end_of_treatment else None,
            "today": self.today.isoformat(),
            "visits": [visit.to_dict() for visit in self.visits],
        }


def parse_visit_label(protocol: Protocol, label: str) -> VisitKey:
    """``"W12"`` -> ("W12", 0); ``"TW3"`` -> ("TW", 3) for a repeating visit TW. InvalidInput otherwise."""
    text = label.strip() if isinstance(label, str) else ""
    for visit in protocol.visits:
        if visit.repeat is None and text == visit.code:
            return (visit.code, 0)
    for visit in protocol.visits:
        suffix = text[len(visit.code):]
        if visit.repeat is not None and text.startswith(visit.code) and suffix.isdigit() and int(suffix) >= 1:
            return (visit.code, int(suffix))
    known = ", ".join(visit.code + ("<n>" if visit.repeat else "") for visit in protocol.visits)
    raise InvalidInput(f"'{label}' is not a visit of {protocol.id} (visits: {known})", field="visit", value=label)


# ------------------------------------------------------------------------------------------------
# The calendar


def visit_calendar(
    protocol: Protocol,
    *,
    randomized_on: date,
    today: date,
    end_of_treatment: date | None = None,
    screened_on: date | None = None,
    records: Mapping[VisitKey, VisitRecord] | None = None,
    through: date | None = None,
    left_on: date | None = None,
) -> Calendar:
    """The calendar of one subject (see the module docstring).

    While treatment goes on, repeating visits are listed up to the first one whose window opens
    after ``today`` (or after ``through``, to plan further ahead). ``records`` holds what the site
    recorded per (visit code, occurrence); a key the plan does not know is InvalidInput. A subject
    who left the trial on ``left_on`` has nothing planned after that day: repeating visits are
    listed up to it, and every visit not done or missed whose target date is later (or that has no
    date yet) is cancelled.
    """
    for name, value in (("randomized_on", randomized_on), ("today", today)):
        _require_date(value, name)
    records = dict(records or {})
    codes = {visit.code: visit for visit in protocol.visits}
    for code, index in records:
        visit = codes.get(code)
        if visit is None:
            raise InvalidInput(f"visit '{code}' is not in the visit plan of {protocol.id}", field="visit", value=code)
        if (visit.repeat is None) != (index == 0) or index < 0:
            raise InvalidInput(f"visit {code} occurrence {index} does not exist (single visits are 0, "
                               "repeating visits count from 1)", field="visit", value=f"{code}{index}")
    if end_of_treatment is not None:
        _require_date(end_of_treatment, "end_of_treatment")
        if end_of_treatment < randomized_on:
            raise InvalidInput(f"end of treatment {end_of_treatment.isoformat()} is before randomization "
                               f"{randomized_on.isoformat()}", field="end_of_treatment")
    anchors = {"randomization": randomized_on, "screening": screened_on, "end_of_treatment": end_of_treatment}
    horizon = max(today, through) if through is not None else today
    if left_on is not None:
        _require_date(left_on, "left_on")
        horizon = min(horizon, left_on)
    visits: list[tuple[int, ScheduledVisit]] = []
    for order, visit in enumerate(protocol.visits):
        anchor = anchors[visit.anchor]
        if visit.anchor == "screening" and anchor is None:
            continue  # the calendar starts at randomization unless the screening date is given
        if visit.repeat is None:
            visits.append((order, _single(visit, anchor, records.get((visit.code, 0)), today)))
        else:
            visits.extend((order, occurrence) for occurrence in
                          _occurrences(visit, anchor, end_of_treatment, records, today, horizon))
    if left_on is not None:
        visits = [(order, _after_leaving(visit, left_on, records.get(visit.key))) for order, visit in visits]
    visits.sort(key=lambda pair: (pair[1].target_date or date.max, pair[0], pair[1].index))
    return Calendar(protocol.id, randomized_on, end_of_treatment, today, tuple(v for _, v in visits))


def _after_leaving(visit: ScheduledVisit, left_on: date, record: VisitRecord | None) -> ScheduledVisit:
    """``visit`` as it stands for a subject who left the trial on ``left_on``: what was done or
    recorded as missed stays; a visit that could only have happened later is cancelled."""
    if visit.status in (VisitStatus.DONE, VisitStatus.CANCELLED) or (record is not None and record.missed):
        return visit
    if visit.target_date is None or visit.target_date > left_on:
        return replace(visit, status=VisitStatus.CANCELLED)
    return visit


def _require_date(value: object, name: str) -> None:
    if not isinstance(value, date) or hasattr(value, "hour"):
        raise InvalidInput(f"{name} must be a date", field=name, value=value)


def _dates(visit: Visit, target: date) -> tuple[date, date, date]:
    return (target, target - timedelta(days=visit.window.before_days), target + timedelta(days=visit.window.after_days))


def _status(start: date, end: date, record: VisitRecord | None, today: date, next_start: date | None) -> VisitStatus:
    if record is not None and record.actual_date is not None:
        return VisitStatus.DONE
    if record is not None and record.missed:
        return VisitStatus.MISSED
    if today < start:
        return VisitStatus.SCHEDULED
    if today <= end:
        return VisitStatus.DUE
    if next_start is not None and today >= next_start:
        return VisitStatus.MISSED
    return VisitStatus.OVERDUE


def _single(visit: Visit, anchor: date | None, record: VisitRecord | None, today: date) -> ScheduledVisit:
    day = visit.day or 0
    actual = record.actual_date if record else None
    if anchor is None:
        status = VisitStatus.DONE if actual else VisitStatus.PENDING
        return ScheduledVisit(visit.code, 0, visit.name, visit.anchor, day, None, None, None, status, actual,
                              forms=visit.forms)
    target, start, end = _dates(visit, anchor + timedelta(days=day))
    return ScheduledVisit(visit.code, 0, visit.name, visit.anchor, day, target, start, end,
                          _status(start, end, record, today, None), actual, forms=visit.forms)


def _occurrences(
    visit: Visit,
    anchor: date | None,
    end_of_treatment: date | None,
    records: Mapping[VisitKey, VisitRecord],
    today: date,
    horizon: date,
) -> list[ScheduledVisit]:
    repeat = visit.repeat
    assert repeat is not None
    if anchor is None:
        return [ScheduledVisit(visit.code, 1, visit.name, visit.anchor, repeat.first_day, None, None, None,
                               VisitStatus.PENDING, forms=visit.forms)]

    def target(index: int) -> date:
        return anchor + timedelta(days=repeat.first_day + (index - 1) * repeat.every_days)

    recorded = sorted(index for code, index in records if code == visit.code)
    last_eot = _end_of_treatment_occurrence(visit, anchor, end_of_treatment, records) if end_of_treatment else None
    if last_eot is not None:
        last = last_eot
    else:
        last = 1
        while _dates(visit, target(last))[1] <= horizon:
            last += 1  # up to and including the first occurrence whose window opens after the horizon
    if repeat.max_count is not None:
        last = min(last, repeat.max_count)
    occurrences = []
    for index in sorted(set(range(1, last + 1)) | set(recorded)):
        if repeat.max_count is not None and index > repeat.max_count:
            continue
        day = repeat.first_day + (index - 1) * repeat.every_days
        when, start, end = _dates(visit, target(index))
        record = records.get((visit.code, index))
        actual = record.actual_date if record else None
        eot = index == last_eot
        if eot:
            status, actual = VisitStatus.DONE, actual or end_of_treatment
        elif last_eot is not None and index > last_eot and actual is None:
            status = VisitStatus.CANCELLED
        else:
            next_start = _dates(visit, target(index + 1))[1]
            status = _status(start, end, record, today, next_start)
        occurrences.append(ScheduledVisit(visit.code, index, visit.name, visit.anchor, day, when, start, end,
                                          status, actual, end_of_treatment=eot, forms=visit.forms))
    return occurrences


def _end_of_treatment_occurrence(
    visit: Visit, anchor: date, end_of_treatment: date, records: Mapping[VisitKey, VisitRecord]
) -> int:
    """Which occurrence of a repeating visit the negative result ended: the one recorded on that
    date; else the one whose window holds the date; else the nearest (a deviation, flagged)."""
    repeat = visit.repeat
    assert repeat is not None
    for (code, index), record in sorted(records.items()):
        if code == visit.code and record.actual_date == end_of_treatment:
            return index
    offset = (end_of_treatment - anchor).days - repeat.first_day
    candidates = range(1, max(1, offset // repeat.every_days + 1) + 2)

    def target(index: int) -> date:
        return anchor + timedelta(days=repeat.first_day + (index - 1) * repeat.every_days)

    for index in candidates:
        _, start, end = _dates(visit, target(index))
        if start <= end_of_treatment <= end:
            return index
    return min(candidates, key=lambda index: (abs((end_of_treatment - target(index)).days), index))


# ------------------------------------------------------------------------------------------------
# The stop rule


#: Result categories of a CMV-DNA result (the ``cmv_result`` codelist of the shipped protocols).
QUANTIFIED, DETECTED_BELOW_LLOQ, NOT_DETECTED = "quantified", "detected_below_lloq", "not_detected"


@dataclass(frozen=True)
class CmvResult:
    """One CMV-DNA result: its sample date, category and (when quantified) load with its unit."""

    sample_date: date
    category: str | None = None
    load: float | None = None
    unit: str | None = None


def is_cmv_negative(assay: CmvDnaAssay, result: CmvResult) -> bool:
    """Negative = below the assay's limit of quantification or not detected (reference/domain.md
    §3.4); "detected below the limit" counts as negative when the protocol says so."""
    from cmvtrial.core.protocol import Quantity

    if result.category == NOT_DETECTED:
        return True
    if result.category == DETECTED_BELOW_LLOQ:
        return assay.negativity.detected_below_lloq_counts_as_negative
    if result.category not in (None, QUANTIFIED):
        raise InvalidInput(f"unknown CMV-DNA result category '{result.category}' (known: {QUANTIFIED}, "
                           f"{DETECTED_BELOW_LLOQ}, {NOT_DETECTED})", field="result", value=result.category)
    if result.load is None or result.unit is None:
        raise InvalidInput("a quantified CMV-DNA result needs its load and unit", field="cmv_dna")
    if result.load < 0:
        raise InvalidInput(f"a CMV-DNA load cannot be negative (got {result.load:g})", field="cmv_dna")
    load = clean_number(assay.in_primary_unit(Quantity(value=result.load, unit=result.unit)))
    return load < clean_number(assay.in_primary_unit(assay.lloq))  # 137 IU/mL x 1.1 is 150.7, not 150.70000000000002


def end_of_treatment_date(assay: CmvDnaAssay, results: Iterable[CmvResult]) -> date | None:
    """The date treatment ends: the sample that completes the protocol's run of consecutive
    negative results (``negativity.consecutive_below_lloq``, each at least ``min_days_between``
    days after the previous counted one; a positive result starts the count again). None while
    the rule is not met."""
    rule = assay.negativity
    count, last_counted = 0, None
    for result in sorted(results, key=lambda r: r.sample_date):
        if not is_cmv_negative(assay, result):
            count, last_counted = 0, None
            continue
        if last_counted is not None and (result.sample_date - last_counted).days < rule.min_days_between:
            continue  # negative, but too soon after the previous one to count
        count, last_counted = count + 1, result.sample_date
        if count >= rule.consecutive_below_lloq:
            return result.sample_date
    return None


# ------------------------------------------------------------------------------------------------
# Per site


@dataclass(frozen=True)
class SubjectVisits:
    """Plain inputs for one subject's calendar."""

    subject: str
    site: str
    protocol: Protocol
    randomized_on: date
    end_of_treatment: date | None = None
    records: Mapping[VisitKey, VisitRecord] = field(default_factory=dict)


@dataclass(frozen=True)
class WorklistEntry:
    subject: str
    site: str
    visit: ScheduledVisit

    def to_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "site": self.site, **self.visit.to_dict()}


@dataclass(frozen=True)
class Worklist:
    """A site's visits: due within the week starting today, overdue, and missed."""

    today: date
    week_end: date
    due_this_week: tuple[WorklistEntry, ...]
    overdue: tuple[WorklistEntry, ...]
    missed: tuple[WorklistEntry, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "today": self.today.isoformat(), "week_end": self.week_end.isoformat(),
            "due_this_week": [e.to_dict() for e in self.due_this_week],
            "overdue": [e.to_dict() for e in self.overdue],
            "missed": [e.to_dict() for e in self.missed],
        }


def site_worklist(subjects: Sequence[SubjectVisits], *, today: date, site: str | None = None) -> Worklist:
    """Visits due this week (window open now or opening within the next six days), overdue and
    missed, for the subjects of ``site`` (all subjects when None), soonest deadline first."""
    _require_date(today, "today")
    week_end = today + timedelta(days=DAYS_IN_WEEK - 1)
    due, overdue, missed = [], [], []
    for subject in subjects:
        if site is not None and subject.site != site:
            continue
        calendar = visit_calendar(subject.protocol, randomized_on=subject.randomized_on, today=today,
                                  end_of_treatment=subject.end_of_treatment, records=subject.records, through=week_end)
        for visit in calendar.visits:
            entry = WorklistEntry(subject.subject, subject.site, visit)
            if visit.status == VisitStatus.DUE or (
                visit.status == VisitStatus.SCHEDULED and visit.window_start is not None and visit.window_start <= week_end
            ):
                due.append(entry)
            elif visit.status == VisitStatus.OVERDUE:
                overdue.append(entry)
            elif visit.status == VisitStatus.MISSED:
                missed.append(entry)

    def order(entry: WorklistEntry) -> tuple[date, str, str]:
        return (entry.visit.window_end or date.max, entry.subject, entry.visit.label)

    return Worklist(today, week_end, tuple(sorted(due, key=order)), tuple(sorted(overdue, key=order)),
                    tuple(sorted(missed, key=order)))
