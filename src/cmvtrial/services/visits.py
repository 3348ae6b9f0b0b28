"""The visit calendar in the system: each subject's calendar, visits recorded, the site worklist.

Why the calendar is computed and only facts are stored (DESIGN.md §3 step 5): core/schedule.py
derives every visit's target date and window from the protocol's plan and two dates, the *actual*
randomization date and the end of treatment. The randomization date is the UTC date of the
subject's allocation (``allocations.allocated_at``), never the clock; the end of treatment is the
sample date of the CMV-DNA result that met the stop rule, recorded on the subject by the data-entry
service. The database keeps what happened — a study event per visit that was done, missed,
cancelled or planned for a known date — and this module hands those rows to the core as records.

Use cases (each one transaction, role and site checked, every change audited):

- ``subject_calendar`` / ``calendar_ics``: a subject's calendar with each visit's status on
  ``today``, and the same as an iCalendar file;
- ``record_visit``: a visit done on a date (a date outside the window is kept and flagged as a
  protocol deviation) or missed (with a reason); changing a recorded date needs a reason;
- ``visits_due``: a site's visits due this week, overdue and missed.

Shared with data_entry.py, dosing_records.py, signatures.py and end_of_treatment.py:
``subject_in_scope`` (role first, then the subject's site), ``treatment_context`` (the randomized
subject with protocol, arm and randomization date), ``calendar_of`` and ``ensure_event`` /
``set_visit_date`` / ``update_event``. What a new end of treatment does to the stored visits
(treatment visits after it cancelled, the follow-up scheduled, all undone when a correction removes
it) is services/end_of_treatment.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select

from cmvtrial.core.disposition import ENDED, LEFT_EARLY, exit_reason
from cmvtrial.core.schedule import (
    Calendar,
    ScheduledVisit,
    VisitKey,
    VisitRecord,
    VisitStatus,
    Worklist,
    parse_visit_label,
    site_worklist,
)
from cmvtrial.core.schedule import SubjectVisits as CoreSubjectVisits
from cmvtrial.core.schedule import visit_calendar as core_calendar
from cmvtrial.errors import AfterWithdrawal, InvalidInput, NotFound, Refused
from cmvtrial.services import permissions
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import protocol_of_version, protocol_with_digest
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Allocation, FormInstance, ProtocolVersion, Site, StudyEvent, Subject

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

#: Subjects whose visits no longer appear on a site's worklist: their study has ended.
INACTIVE_STATUSES = ENDED


@dataclass(frozen=True)
class TreatmentContext:
    """A randomized subject with what every treatment-phase rule needs."""

    subject: Subject
    protocol: Protocol
    site_code: str
    arm_id: str
    randomized_on: date

    @property
    def label(self) -> str:
        return subject_label(self.subject)


@dataclass(frozen=True)
class SubjectCalendar:
    subject_id: int
    subject: str
    site_code: str
    arm: str
    randomized_on: date
    end_of_treatment: date | None
    end_of_treatment_reason: str | None
    calendar: Calendar
    deviations: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        data = self.calendar.to_dict()
        for visit in data["visits"]:  # type: ignore[union-attr]
            visit["deviation"] = self.deviations.get(visit["visit"])
        return {"subject_id": self.subject_id, "subject": self.subject, "site": self.site_code, "arm": self.arm,
                "end_of_treatment_reason": self.end_of_treatment_reason, **data}


@dataclass(frozen=True)
class VisitView:
    subject_id: int
    subject: str
    visit: str
    status: str
    actual_date: date | None
    window_start: date | None
    window_end: date | None
    deviation: str | None
    changed: bool


# ------------------------------------------------------------------------------------------------
# Shared helpers


def subject_label(subject: Subject) -> str:
    return subject.subject_number or subject.screening_number


def visit_label(code: str, index: int) -> str:
    return f"{code}{index}" if index else code


def site_code(uow: UnitOfWork, site_id: int) -> str:
    site = uow.session.get(Site, site_id)
    return site.code if site is not None else str(site_id)


def subject_in_scope(uow: UnitOfWork, actor: Actor, action: str, subject_id: int, *, lock: bool = False) -> Subject:
    """The subject, once the actor's role allows ``action`` (checked first, so a forbidden role
    learns nothing about which subjects exist) and then the subject's site does."""
    permissions.require(actor, action)
    if isinstance(subject_id, bool) or not isinstance(subject_id, int):
        raise InvalidInput("a subject id is a whole number", field="subject", value=subject_id)
    if lock:
        subject = uow.subjects.locked(subject_id)
    else:
        query = select(Subject).where(Subject.id == subject_id)
        subject = uow.session.scalars(query.execution_options(populate_existing=True)).one_or_none()
    if subject is None:
        raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
    permissions.require(actor, action, site=subject.site_id)
    return subject


_ALLOCATION_AND_SITE = (select(Allocation.arm_id, Allocation.allocated_at, Site.code, ProtocolVersion.sha256)
                        .select_from(Allocation)
                        .join(Site, Site.id == bindparam("site"))
                        .join(ProtocolVersion, ProtocolVersion.id == bindparam("version"))
                        .where(Allocation.subject_id == bindparam("subject")))


def treatment_context(uow: UnitOfWork, subject: Subject) -> TreatmentContext:
    """The randomized subject's protocol, arm and randomization date; Refused before randomization."""
    # One round trip for the allocation, the site's code and the protocol text's digest (this runs on
    # every write of a visit; the parsed protocol is then found by its digest).
    found = uow.session.execute(_ALLOCATION_AND_SITE, {"subject": subject.id, "site": subject.site_id,
                                                        "version": subject.protocol_version_id}).one_or_none()
    if found is None:
        raise Refused(f"subject {subject_label(subject)} is not randomized (status {subject.status}): "
                      "the calendar, visit data and doses start at randomization", field="subject", value=subject.id)
    arm_id, allocated_at, code, digest = found
    return TreatmentContext(subject, protocol_with_digest(uow, subject.protocol_version_id, digest), code, arm_id,
                            allocated_at.date())


_SUBJECT_EVENTS = select(StudyEvent).where(StudyEvent.subject_id == bindparam("subject"))


def stored_events(uow: UnitOfWork, subject_id: int) -> dict[VisitKey, StudyEvent]:
    rows = uow.session.scalars(_SUBJECT_EVENTS, {"subject": subject_id})
    return {(row.visit_code, row.repeat_index): row for row in rows}


def visit_records(protocol: Protocol, events: Mapping[VisitKey, StudyEvent]) -> dict[VisitKey, VisitRecord]:
    """The stored events as the core's records (every stored visit is listed, even a planned one,
    so the calendar can say which treatment visits end of treatment cancels)."""
    known = {visit.code for visit in protocol.visits}
    records = {}
    for key, event in events.items():
        if key[0] not in known:
            continue  # a visit of another protocol version's plan; the calendar follows the subject's own
        if event.status == "done" and event.actual_date is not None:
            records[key] = VisitRecord(actual_date=event.actual_date)
        elif event.status == "missed":
            records[key] = VisitRecord(missed=True)
        else:
            records[key] = VisitRecord()
    return records


def _screened_on(protocol: Protocol, events: Mapping[VisitKey, StudyEvent]) -> date | None:
    for visit in protocol.visits:
        if visit.anchor == "screening":
            event = events.get((visit.code, 0))
            if event is not None and event.actual_date is not None:
                return event.actual_date
    return None


def calendar_of(
    ctx: TreatmentContext,
    events: Mapping[VisitKey, StudyEvent],
    *,
    today: date,
    through: date | None = None,
    end_of_treatment: Any = ...,
) -> Calendar:
    eot = ctx.subject.end_of_treatment_date if end_of_treatment is ... else end_of_treatment
    return core_calendar(ctx.protocol, randomized_on=ctx.randomized_on, today=today, end_of_treatment=eot,
                         screened_on=_screened_on(ctx.protocol, events), records=visit_records(ctx.protocol, events),
                         through=through, left_on=left_on(ctx.subject))


def left_on(subject: Subject) -> date | None:
    """The day the subject left the trial early (withdrawn, lost to follow-up, died), else None."""
    return subject.end_of_study_date if subject.status in LEFT_EARLY else None


def refuse_after_leaving(ctx: TreatmentContext, on_date: date, what: str) -> None:
    """Refuse ``what`` dated after the day the subject left the trial (services/end_of_study.py);
    data of that day itself, or earlier data entered late, are accepted."""
    left = left_on(ctx.subject)
    if left is not None and on_date > left:
        reason = exit_reason(ctx.subject.end_of_study_reason)
        why = f" ({reason.label})" if reason is not None else ""
        raise AfterWithdrawal(f"{what} on {on_date.isoformat()} is after subject {ctx.label} left the trial on "
                              f"{left.isoformat()}{why}", field="date", value=on_date.isoformat())


def require_date(value: object, name: str) -> date:
    if not isinstance(value, date) or isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a date (YYYY-MM-DD)", field=name, value=str(value))
    return value


def scheduled_visit(ctx: TreatmentContext, calendar: Calendar, key: VisitKey) -> ScheduledVisit:
    try:
        return calendar.visit(*key)
    except NotFound:
        label = visit_label(*key)
        raise NotFound(f"{label} is not in the calendar of subject {ctx.label} yet (treatment visits are "
                       "listed up to the next one due)", field="visit", value=label) from None


def deviation_text(visit: ScheduledVisit, on_date: date) -> str | None:
    """Why doing ``visit`` on ``on_date`` is a protocol deviation, or None inside the window."""
    days = visit.window_deviation_days(on_date)
    if not days:
        return None
    side = "before" if days < 0 else "after"
    return (f"{visit.label} done on {on_date.isoformat()}, {abs(days)} day(s) {side} its window "
            f"{visit.window_start.isoformat()} to {visit.window_end.isoformat()}")  # type: ignore[union-attr]


def ensure_event(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, events: dict[VisitKey, StudyEvent],
                 visit: ScheduledVisit, *, reason: str | None = None) -> StudyEvent:
    """The stored event of ``visit``, created (planned, with its dates) when it has none yet."""
    event = events.get(visit.key)
    if event is not None:
        return event
    event = StudyEvent(subject_id=ctx.subject.id, visit_code=visit.code, repeat_index=visit.index,
                       target_date=visit.target_date, window_start=visit.window_start, window_end=visit.window_end,
                       status="planned", created_at=uow.clock())
    uow.session.add(event)
    uow.session.flush()
    uow.audit.record(actor, "study_event.create", event, after=event, reason=reason, site_id=ctx.subject.site_id)
    events[visit.key] = event
    return event


def set_visit_date(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, event: StudyEvent, visit: ScheduledVisit,
                   on_date: date, *, reason: str | None, extra_deviation: str | None = None) -> bool:
    """Record ``visit`` as done on ``on_date`` (with the deviation, if any); False when nothing changed.
    A different date than the one recorded needs a reason (checked by the caller before writing)."""
    deviation = "; ".join(text for text in (deviation_text(visit, on_date), extra_deviation) if text) or None
    wanted = ("done", on_date, deviation, visit.target_date, visit.window_start, visit.window_end)
    current = (event.status, event.actual_date, event.deviation, event.target_date, event.window_start, event.window_end)
    if wanted == current:
        return False
    before = snapshot(event)
    event.status, event.actual_date, event.deviation = "done", on_date, deviation
    event.target_date, event.window_start, event.window_end = visit.target_date, visit.window_start, visit.window_end
    event.updated_at = uow.clock()
    uow.session.flush()
    action = "study_event.deviation" if deviation and deviation != current[2] else "study_event.update"
    uow.audit.record(actor, action, event, before=before, after=event, reason=reason, site_id=ctx.subject.site_id)
    return True


def clean_reason(reason: str | None) -> str | None:
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    return text or None


def require_reason(reason: str | None, what: str) -> str:
    text = clean_reason(reason)
    if text is None:
        raise InvalidInput(f"{what}: give a reason (--reason); the old and new values stay in the audit trail",
                           field="reason")
    return text


def update_event(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, event: StudyEvent, action: str,
                 reason: str | None, **changes: Any) -> None:
    """Change a stored visit's fields and audit it as ``action`` (missed, cancelled, reinstated,
    rescheduled: services/end_of_treatment.py moves visits too)."""
    before = snapshot(event)
    for name, value in changes.items():
        setattr(event, name, value)
    event.updated_at = uow.clock()
    uow.session.flush()
    uow.audit.record(actor, action, event, before=before, after=event, reason=reason, site_id=ctx.subject.site_id)


# ------------------------------------------------------------------------------------------------
# Use cases


def _deviations(events: Mapping[VisitKey, StudyEvent]) -> dict[str, str]:
    return {visit_label(*key): event.deviation for key, event in events.items() if event.deviation}


def subject_calendar(uow: UnitOfWork, actor: Actor, subject_id: int, *, today: date) -> SubjectCalendar:
    """A randomized subject's calendar with the status of each visit on ``today``."""
    require_date(today, "today")
    with uow.reading():
        subject = subject_in_scope(uow, actor, "subject.view", subject_id)
        ctx = treatment_context(uow, subject)
        events = stored_events(uow, subject.id)
        calendar = calendar_of(ctx, events, today=today)
        return SubjectCalendar(subject.id, ctx.label, ctx.site_code, ctx.arm_id, ctx.randomized_on,
                               subject.end_of_treatment_date, subject.end_of_treatment_reason, calendar,
                               _deviations(events))


def calendar_ics(uow: UnitOfWork, actor: Actor, subject_id: int, *, today: date, generated_at: datetime) -> str:
    """The subject's calendar as an iCalendar file (core/icalendar.py); only the subject code appears."""
    from cmvtrial.core.icalendar import calendar_to_ics

    found = subject_calendar(uow, actor, subject_id, today=today)
    return calendar_to_ics(found.calendar, subject=found.subject, generated_at=generated_at)


def record_visit(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    visit: str,
    *,
    today: date,
    on_date: date | None = None,
    missed: bool = False,
    reason: str | None = None,
) -> VisitView:
    """Record a visit as done on ``on_date`` or as ``missed`` (which needs a reason). A date outside
    the window is kept and flagged as a deviation; changing what was recorded needs a reason."""
    require_date(today, "today")
    if missed == (on_date is not None):
        raise InvalidInput("record either the date the visit was done or that it was missed", field="date")
    if on_date is not None:
        require_date(on_date, "date")
        if on_date > today:
            raise InvalidInput(f"the visit date {on_date.isoformat()} is after today ({today.isoformat()})",
                               field="date", value=on_date.isoformat())
    note = clean_reason(reason)
    with uow:
        subject = subject_in_scope(uow, actor, "visit.record", subject_id, lock=True)
        ctx = treatment_context(uow, subject)
        key = parse_visit_label(ctx.protocol, visit)
        if on_date is not None:
            refuse_after_leaving(ctx, on_date, visit_label(*key))
        events = stored_events(uow, subject.id)
        calendar = calendar_of(ctx, events, today=today, through=on_date)
        scheduled = scheduled_visit(ctx, calendar, key)
        refuse_unavailable(ctx, scheduled, on_date)
        if on_date is not None and on_date < ctx.randomized_on and scheduled.anchor != "screening":
            raise InvalidInput(f"{scheduled.label} cannot be before randomization ({ctx.randomized_on.isoformat()})",
                               field="date", value=on_date.isoformat())
        event = events.get(key)
        if missed:
            note = require_reason(note, f"recording {scheduled.label} as missed")
            if event is not None and _has_forms(uow, event):
                raise Refused(f"{scheduled.label} has data entered; it cannot be missed", field="visit",
                              value=scheduled.label)
        if event is not None and event.status in ("done", "missed") and (
                missed != (event.status == "missed") or (on_date is not None and on_date != event.actual_date)):
            note = require_reason(note, f"{scheduled.label} is already recorded ({event.status}"
                                  + (f" on {event.actual_date.isoformat()})" if event.actual_date else ")"))
        event = ensure_event(uow, actor, ctx, events, scheduled, reason=note)
        if missed:
            changed = event.status != "missed"
            if changed:
                update_event(uow, actor, ctx, event, "study_event.missed", note, status="missed", actual_date=None,
                             deviation=None)
        else:
            changed = set_visit_date(uow, actor, ctx, event, scheduled, on_date, reason=note)  # type: ignore[arg-type]
        view = VisitView(subject.id, ctx.label, scheduled.label, event.status, event.actual_date, event.window_start,
                         event.window_end, event.deviation, changed)
        uow.commit()
    return view


def refuse_unavailable(ctx: TreatmentContext, visit: ScheduledVisit, on_date: date | None = None) -> None:
    """Refuse work on a visit that will not happen or has no date yet, or (given ``on_date``) that
    would be dated after the subject left the trial."""
    left = left_on(ctx.subject)
    if left is not None and visit.status == VisitStatus.CANCELLED:
        raise AfterWithdrawal(f"{visit.label} was cancelled: subject {ctx.label} left the trial on {left.isoformat()}",
                              field="visit", value=visit.label)
    if on_date is not None:
        refuse_after_leaving(ctx, on_date, visit.label)
    if visit.status == VisitStatus.CANCELLED:
        raise Refused(f"{visit.label} was cancelled: treatment of subject {ctx.label} ended on "
                      f"{ctx.subject.end_of_treatment_date}", field="visit", value=visit.label)
    if visit.status == VisitStatus.PENDING:
        raise Refused(f"{visit.label} is anchored to the end of treatment, which subject {ctx.label} has not "
                      "reached", field="visit", value=visit.label)


def _has_forms(uow: UnitOfWork, event: StudyEvent) -> bool:
    return uow.session.scalar(select(FormInstance.id).where(FormInstance.study_event_id == event.id).limit(1)) is not None


@dataclass(frozen=True)
class SiteWorklist:
    site_code: str
    worklist: Worklist

    def to_dict(self) -> dict[str, object]:
        return {"site": self.site_code, **self.worklist.to_dict()}


def visits_due(uow: UnitOfWork, actor: Actor, site: str, *, today: date) -> SiteWorklist:
    """The site's visits due this week (window open now or within six days), overdue and missed."""
    require_date(today, "today")
    permissions.require(actor, "subject.view")
    code = site.strip().upper() if isinstance(site, str) else ""
    with uow.reading():
        found = uow.sites.require_code(code)
        permissions.require(actor, "subject.view", site=found.id)
        rows = uow.session.execute(
            select(Subject, Allocation.arm_id, Allocation.allocated_at)
            .join(Allocation, Allocation.subject_id == Subject.id)
            .where(Subject.site_id == found.id, Subject.status.not_in(INACTIVE_STATUSES))
            .order_by(Subject.id)
        )
        inputs = []
        for subject, _arm, allocated_at in rows:
            protocol = protocol_of_version(uow, subject.protocol_version_id)
            events = stored_events(uow, subject.id)
            inputs.append(CoreSubjectVisits(subject_label(subject), found.code, protocol, allocated_at.date(),
                                            subject.end_of_treatment_date, visit_records(protocol, events)))
    return SiteWorklist(found.code, site_worklist(inputs, today=today, site=found.code))
