"""End of treatment in the system: what a new (or withdrawn) end of treatment does to a subject's calendar.

Why its own step (DESIGN.md §3 step 5): the end of treatment is a fact stored on the subject — the
sample date of the CMV-DNA result that met the protocol's stop rule, which the data-entry service
works out after every change of a CMV-DNA result or its visit's date (services/data_entry.py) —
and the stored visits must follow it in the same transaction: treatment visits after it
cancelled, the follow-up visits anchored to it planned with their dates. A correction that removes
or moves it reinstates what no longer follows and moves the follow-up. Every change is audited;
the calendar itself comes from core/schedule.py through services/visits.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from cmvtrial.core.schedule import VisitKey, VisitStatus
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visits import TreatmentContext, calendar_of, ensure_event, update_event
from cmvtrial.store.tables import StudyEvent

#: Statuses that mean treatment goes on; a new end of treatment moves them to ``in_follow_up``.
TREATMENT_STATUSES = ("randomized", "on_treatment")


@dataclass(frozen=True)
class EndOfTreatmentChange:
    """What a new (or withdrawn) end of treatment did to the calendar."""

    before: date | None
    after: date | None
    cancelled: tuple[str, ...]
    reinstated: tuple[str, ...]
    scheduled: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"before": self.before.isoformat() if self.before else None,
                "after": self.after.isoformat() if self.after else None,
                "cancelled": list(self.cancelled), "reinstated": list(self.reinstated),
                "scheduled": list(self.scheduled)}


def sync_end_of_treatment(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, events: dict[VisitKey, StudyEvent],
                          new_eot: date | None, *, why: str | None, reason: str | None,
                          today: date) -> EndOfTreatmentChange | None:
    """Store ``new_eot`` on the subject and bring the stored visits in line: treatment visits after
    it cancelled, visits anchored to it planned with their dates (DESIGN.md §3 step 5). A correction
    that removes or moves the end of treatment reinstates what no longer follows. None when unchanged."""
    subject = ctx.subject
    old = subject.end_of_treatment_date
    if old == new_eot:
        return None
    before = snapshot(subject)
    subject.end_of_treatment_date = new_eot
    subject.end_of_treatment_reason = why if new_eot is not None else None
    if new_eot is not None and subject.status in TREATMENT_STATUSES:
        subject.status = "in_follow_up"
    elif new_eot is None and subject.status == "in_follow_up":
        subject.status = "on_treatment"
    subject.updated_at = uow.clock()
    uow.session.flush()
    action = "subject.end_of_treatment" if new_eot is not None else "subject.end_of_treatment_withdrawn"
    uow.audit.record(actor, action, subject, before=before, after=subject, reason=reason or why)

    calendar = calendar_of(ctx, events, today=today, end_of_treatment=new_eot)
    cancelled, reinstated, scheduled = [], [], []
    for visit in calendar.visits:
        event = events.get(visit.key)
        anchored_to_eot = visit.anchor == "end_of_treatment"
        if event is None:
            if anchored_to_eot and visit.target_date is not None and visit.status != VisitStatus.CANCELLED:
                ensure_event(uow, actor, ctx, events, visit, reason=why)
                scheduled.append(visit.label)
            continue
        if visit.status == VisitStatus.CANCELLED and event.status == "planned":
            update_event(uow, actor, ctx, event, "study_event.cancel", why, status="cancelled")
            cancelled.append(visit.label)
        elif visit.status != VisitStatus.CANCELLED and event.status == "cancelled":
            update_event(uow, actor, ctx, event, "study_event.reinstate", reason or why, status="planned")
            reinstated.append(visit.label)
        elif anchored_to_eot and (event.target_date, event.window_start, event.window_end) != (
                visit.target_date, visit.window_start, visit.window_end):
            update_event(uow, actor, ctx, event, "study_event.reschedule", reason or why, target_date=visit.target_date,
                         window_start=visit.window_start, window_end=visit.window_end)
            scheduled.append(visit.label)
    return EndOfTreatmentChange(old, new_eot, tuple(cancelled), tuple(reinstated), tuple(scheduled))
