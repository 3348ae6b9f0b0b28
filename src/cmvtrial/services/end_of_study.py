"""A subject's end of study: withdrawal (leaving before the end) and completion (the final visit done).

Why a use case of its own (DESIGN.md §3; issue 7's demo and issue 9's app need it): until a subject's
study ends, the site worklist keeps asking for their visits, the dosing service accepts doses and
the analyses count them as ongoing. Ending it is one record with who, when, the date and the reason
(the CDISC disposition event, SDTM DS), written by the subject's investigator (``subject.withdraw``,
``subject.complete`` in permissions.py; site staff of the subject's own site only).

- ``withdraw_subject``: a randomized subject leaves on a date, for a reason of the controlled list
  (core/disposition.py: withdrew consent, lost to follow-up, adverse event, investigator decision,
  death, other — which needs the reason in words), with optional free text. The status becomes
  ``withdrawn``, ``lost_to_follow_up`` or ``died`` (the analysis snapshot's vocabulary); the date,
  reason and words are stored on the subject; every visit planned after the date is cancelled
  (as the end of treatment cancels later treatment visits, visits.py), and from then on visits,
  visit data and doses dated after it are refused (``AfterWithdrawal``: visits.refuse_after_leaving).
- ``complete_subject``: a subject whose final protocol visit (the follow-up three months after the
  end of treatment) is done becomes ``completed`` on that visit's date.

**Completion is explicit, not automatic.** Sites expect the status to follow the data, but an
automatic change inside data entry would be a side effect of whatever was typed last: a corrected
visit date or a removed value would have to un-complete the subject silently, and the audit trail
would show a status change nobody decided. The end-of-study page of a case report form is an
investigator's statement that the subject's participation is over, so it is recorded as one: the
service checks the final visit is done and stores the completion with the investigator's name. The
subject page offers it as soon as the final visit is done (adapters/web), so nothing is forgotten.

Each refusal changes nothing, not even the audit trail: not randomized (``NotRandomized``), already
ended (``StudyEnded``, so a double submit is harmless), a date in the future or before
randomization (``InvalidInput``), a withdrawal dated before data already recorded
(``AfterWithdrawal``), a completion before the final visit is done (``FinalVisitNotDone``), the
wrong role or another site's subject (``Forbidden``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from cmvtrial.core.disposition import (
    COMPLETION,
    ENDED,
    ExitReason,
    LatestData,
    check_withdrawal,
    clean_details,
    conflicting_data,
    exit_reason,
    final_visit,
)
from cmvtrial.core.schedule import VisitStatus
from cmvtrial.errors import AfterWithdrawal, FinalVisitNotDone, NotRandomized, StudyEnded
from cmvtrial.services import visits
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visits import TreatmentContext
from cmvtrial.store.tables import Allocation, DoseAdministration, StudyEvent, Subject


@dataclass(frozen=True)
class EndOfStudyView:
    """A subject's end of study as recorded, and the visits it cancelled."""

    subject_id: int
    subject: str
    site_code: str
    status: str
    date: date
    reason: str
    reason_label: str
    dsdecod: str
    details: str | None
    cancelled: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"subject_id": self.subject_id, "subject": self.subject, "site": self.site_code, "status": self.status,
                "date": self.date.isoformat(), "reason": self.reason, "reason_label": self.reason_label,
                "dsdecod": self.dsdecod, "details": self.details, "cancelled": list(self.cancelled)}


def withdraw_subject(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    *,
    reason: str,
    on_date: date,
    today: date,
    details: str | None = None,
) -> EndOfStudyView:
    """Record that a randomized subject left the trial on ``on_date`` (see the module docstring)."""
    visits.require_date(today, "today")
    with uow:
        subject = visits.subject_in_scope(uow, actor, "subject.withdraw", subject_id, lock=True)
        ctx = _still_in_the_trial(uow, subject)
        withdrawal = check_withdrawal(reason, on_date, details=details, today=today, randomized_on=ctx.randomized_on)
        conflict = conflicting_data(withdrawal, _latest_data(uow, subject))
        if conflict is not None:
            raise AfterWithdrawal(f"subject {ctx.label}: {conflict}", field="date", value=withdrawal.on_date.isoformat())
        _end(uow, actor, subject, withdrawal.reason, withdrawal.on_date, withdrawal.details,
             action="subject.withdraw", why=withdrawal.describe())
        cancelled = _cancel_planned_visits(uow, actor, ctx, today=today, why=f"withdrawn: {withdrawal.describe()}")
        view = _view(ctx, cancelled)
        uow.commit()
    return view


def complete_subject(
    uow: UnitOfWork, actor: Actor, subject_id: int, *, today: date, details: str | None = None
) -> EndOfStudyView:
    """Record that a subject completed the trial: their final protocol visit is done (module docstring)."""
    visits.require_date(today, "today")
    note = clean_details(details)
    with uow:
        subject = visits.subject_in_scope(uow, actor, "subject.complete", subject_id, lock=True)
        ctx = _still_in_the_trial(uow, subject)
        calendar = visits.calendar_of(ctx, visits.stored_events(uow, subject.id), today=today)
        last = final_visit(calendar)
        if last is None:
            pending = ", ".join(v.label for v in calendar.visits if v.status == VisitStatus.PENDING)
            raise FinalVisitNotDone(f"subject {ctx.label} cannot complete yet: treatment has not ended, so the final "
                                    f"visit ({pending}) has no date", field="subject", value=subject.id)
        if last.status != VisitStatus.DONE or last.actual_date is None:
            raise FinalVisitNotDone(f"subject {ctx.label} cannot complete yet: the final visit {last.label} (due "
                                    f"{last.target_date}) is {last.status}", field="visit", value=last.label)
        _end(uow, actor, subject, COMPLETION, last.actual_date, note, action="subject.complete",
             why=f"final visit {last.label} done on {last.actual_date.isoformat()}")
        view = _view(ctx, ())
        uow.commit()
    return view


# ------------------------------------------------------------------------------------------------


def _still_in_the_trial(uow: UnitOfWork, subject: Subject) -> TreatmentContext:
    """The randomized subject's context; NotRandomized or StudyEnded otherwise."""
    if uow.session.scalar(select(Allocation.id).where(Allocation.subject_id == subject.id)) is None:
        raise NotRandomized(f"subject {visits.subject_label(subject)} is not randomized (status {subject.status}); "
                            "a candidate who does not go on leaves as a screen failure", field="subject",
                            value=subject.id)
    ctx = visits.treatment_context(uow, subject)
    if subject.status in ENDED:
        reason = exit_reason(subject.end_of_study_reason)
        raise StudyEnded(f"subject {ctx.label} already ended the study on {subject.end_of_study_date} "
                         f"({reason.label if reason else subject.status}); nothing was changed", field="subject",
                         value=subject.id, status=subject.status)
    return ctx


def _latest_data(uow: UnitOfWork, subject: Subject) -> LatestData | None:
    """The latest visit done or dose recorded for the subject (what a withdrawal may not precede)."""
    found: list[LatestData] = []
    visit = uow.session.execute(
        select(StudyEvent.actual_date, StudyEvent.visit_code, StudyEvent.repeat_index)
        .where(StudyEvent.subject_id == subject.id, StudyEvent.status == "done", StudyEvent.actual_date.is_not(None))
        .order_by(StudyEvent.actual_date.desc()).limit(1)).first()
    if visit is not None:
        found.append(LatestData(visit[0], f"visit {visits.visit_label(visit[1], visit[2])} done"))
    dosed = uow.session.scalar(select(func.max(DoseAdministration.administered_on))
                               .where(DoseAdministration.subject_id == subject.id))
    if dosed is not None:
        found.append(LatestData(dosed, "a dose recorded"))
    return max(found, key=lambda latest: latest.on_date, default=None)


def _end(uow: UnitOfWork, actor: Actor, subject: Subject, reason: ExitReason, on_date: date, details: str | None,
         *, action: str, why: str) -> None:
    before = snapshot(subject)
    subject.status = reason.status
    subject.end_of_study_date, subject.end_of_study_reason, subject.end_of_study_details = on_date, reason.code, details
    subject.updated_at = uow.clock()
    uow.session.flush()
    uow.audit.record(actor, action, subject, before=before, after=subject, reason=why)


def _cancel_planned_visits(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, *, today: date,
                           why: str) -> tuple[str, ...]:
    """Cancel the stored visits the subject will no longer come to (each change audited)."""
    events = visits.stored_events(uow, ctx.subject.id)
    cancelled = []
    for visit in visits.calendar_of(ctx, events, today=today).visits:
        event = events.get(visit.key)
        if event is None or event.status != "planned" or visit.status != VisitStatus.CANCELLED:
            continue
        before = snapshot(event)
        event.status, event.updated_at = "cancelled", uow.clock()
        uow.session.flush()
        uow.audit.record(actor, "study_event.cancel", event, before=before, after=event, reason=why,
                         site_id=ctx.subject.site_id)
        cancelled.append(visit.label)
    return tuple(cancelled)


def _view(ctx: TreatmentContext, cancelled: tuple[str, ...]) -> EndOfStudyView:
    subject = ctx.subject
    reason = exit_reason(subject.end_of_study_reason)
    assert reason is not None and subject.end_of_study_date is not None
    return EndOfStudyView(subject.id, ctx.label, ctx.site_code, subject.status, subject.end_of_study_date, reason.code,
                          reason.label, reason.dsdecod, subject.end_of_study_details, cancelled)
