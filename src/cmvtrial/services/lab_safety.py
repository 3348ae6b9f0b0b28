"""Lab values that reach a CTCAE grade become proposals for the investigator, never events by themselves.

Issue 5: "a lab value that reaches grade 1 or more proposes an adverse event (or updates the worst
grade of an open one) for the investigator to confirm; nothing is created silently". So
``review_lab_value`` grades the value (``core.ctcae``), asks ``core.adverse_events.propose_from_lab``
what it suggests given the subject's open event of that term, and stores the suggestion as a
*pending proposal* with the grader's reasons. The investigator then confirms it (which records the
new event, or raises the open event's grade, through the same checks as the AE form) or dismisses
it with a reason. Every step is audited.

One pending proposal per subject and term: a worse value supersedes the pending one (a new event
keeps the earliest start date, since the event began with the first abnormal value); a value no
worse than what is pending adds nothing. A confirmation re-checks the situation, so a proposal made
stale by an event recorded in the meantime is refused instead of duplicating it.

The data-capture service calls ``stage_lab_review`` inside its own transaction when it saves a lab
value (the proposal commits or rolls back with the value); ``review_lab_value`` is the same use case
in a transaction of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from cmvtrial.core import adverse_events as core
from cmvtrial.core.ctcae import GradeResult, Term, shipped_table
from cmvtrial.errors import InvalidInput, NotFound, Refused
from cmvtrial.services import permissions
from cmvtrial.services.adverse_events import (
    AdverseEventView,
    event_view,
    require_reason,
    revise_event,
    store_event,
    subject_for,
    subject_label,
)
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.safety_repositories import AdverseEventRepository, LabSafetyProposalRepository
from cmvtrial.store.tables import LabSafetyProposal, Subject

LOINC = re.compile(r"\d{1,8}-\d")
P = ParamSpec("P")
R = TypeVar("R")
Outcome = Literal["proposed", "already_pending", "no_action", "not_graded"]


@dataclass(frozen=True)
class ProposalView:
    id: int
    subject_id: int
    subject: str
    site_id: int
    action: str
    term: str
    meddra_code: str
    grade: int
    grade_text: str
    current_grade: int | None
    adverse_event_id: int | None
    observed_on: date
    start_date: date | None
    loinc: str | None
    value: float
    unit: str
    criterion: str
    reasons: tuple[str, ...]
    status: str
    decision_reason: str | None
    created_at: datetime
    decided_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        from cmvtrial.core.audit_chain import to_jsonable

        return dict(to_jsonable({name: getattr(self, name) for name in self.__dataclass_fields__}))


@dataclass(frozen=True)
class LabReview:
    """What reviewing one lab value did: ``proposal`` is the pending proposal (new or already there)."""

    outcome: Outcome
    reason: str
    grading: GradeResult | None = None
    proposal: ProposalView | None = None
    superseded: tuple[int, ...] = ()


@dataclass(frozen=True)
class Decision:
    proposal: ProposalView
    event: AdverseEventView | None


# --- reviewing a value --------------------------------------------------------------------------------


def stage_lab_review(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    term_or_loinc: str,
    value: float,
    unit: str,
    *,
    observed_on: date,
    lln: float | None = None,
    uln: float | None = None,
    baseline: float | None = None,
    item_value_id: int | None = None,
    today: date | None = None,
) -> LabReview:
    """``review_lab_value`` inside the caller's open unit of work (no commit here).

    ``term_or_loinc`` is a CTCAE term name or synonym, or the LOINC code of the lab item; a LOINC
    code no shipped term grades (CMV-DNA, say) is "not_graded", not an error, so the data-capture
    service can pass every lab value through here.
    """
    subject = subject_for(uow, actor, "lab_safety.review", subject_id, lock=True)
    today = today or uow.clock().date()
    if not isinstance(observed_on, date) or isinstance(observed_on, datetime):
        raise InvalidInput("observed_on must be a date", field="observed_on", value=str(observed_on))
    if observed_on > today:
        raise InvalidInput(f"the lab date {observed_on} is in the future (today {today})",
                           field="observed_on", value=observed_on.isoformat())
    table = shipped_table()
    reference = str(term_or_loinc).strip()
    loinc = reference if LOINC.fullmatch(reference) else None
    if loinc is not None:
        terms = table.terms_for_loinc(loinc)
        if not terms:
            return LabReview("not_graded", f"no CTCAE v{table.version} term is graded from LOINC {loinc}")
        term = terms[0]
    else:
        term = table.find(reference)
    grading = table.grade(term.term, value, unit, lln=lln, uln=uln, baseline=baseline)
    events = AdverseEventRepository(uow.session)
    open_rows = events.open_events(subject.id, term.term)
    open_event = (core.OpenEvent(term.term, open_rows[0].ctcae_grade or 0, open_rows[0].id)
                  if open_rows else None)
    suggestion = core.propose_from_lab(grading, observed_on=observed_on, open_event=open_event, table=table)
    if suggestion.action == "none":
        return LabReview("no_action", suggestion.reason, grading=grading)
    return _store_proposal(uow, actor, subject, term, suggestion, grading, loinc=loinc, value=value,
                           unit=grading.unit, observed_on=observed_on, item_value_id=item_value_id)


def _in_own_transaction(
    stage: Callable[Concatenate[UnitOfWork, P], R], name: str, doc: str
) -> Callable[Concatenate[UnitOfWork, P], R]:
    """A staged use case in a transaction of its own: committed when it returns, rolled back (changing
    nothing) when it raises. It takes the staged function's parameters, so they are written once."""

    def run(uow: UnitOfWork, *args: P.args, **kwargs: P.kwargs) -> R:
        with uow:
            result = stage(uow, *args, **kwargs)
            uow.commit()
        return result

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    return run


review_lab_value = _in_own_transaction(
    stage_lab_review,
    "review_lab_value",
    """Grade a lab value and store what it proposes (parameters as ``stage_lab_review``); bad input
    (unknown term or unit, negative count, missing limit) raises and changes nothing.""",
)


def _store_proposal(
    uow: UnitOfWork, actor: Actor, subject: Subject, term: Term, suggestion: core.Proposal, grading: GradeResult,
    *, loinc: str | None, value: float, unit: str, observed_on: date, item_value_id: int | None,
) -> LabReview:
    proposals = LabSafetyProposalRepository(uow.session)
    pending = proposals.pending(subject.id, term.term)
    for earlier in pending:
        same_target = earlier.action == suggestion.action and earlier.adverse_event_id == suggestion.event_id
        if same_target and earlier.grade >= suggestion.grade:
            return LabReview("already_pending", f"proposal {earlier.id} (grade {earlier.grade}) is already "
                             f"waiting for the investigator", grading=grading,
                             proposal=proposal_view(uow, earlier, subject))
    start = suggestion.start_date
    if suggestion.action == "new_event":
        start = min([observed_on, *(p.start_date for p in pending if p.action == "new_event" and p.start_date)])
    row = proposals.add(LabSafetyProposal(
        subject_id=subject.id, item_value_id=item_value_id, action=suggestion.action, term=term.term,
        meddra_code=term.meddra_code, grade=suggestion.grade, grade_text=suggestion.grade_text,
        current_grade=suggestion.current_grade,
        adverse_event_id=int(suggestion.event_id) if suggestion.event_id is not None else None,
        observed_on=observed_on, start_date=start, loinc=loinc, value=float(value), unit=unit,
        grading={"criterion": grading.criterion, "reasons": list(grading.reasons), "value": grading.value,
                 "unit": grading.unit},
        status="pending", created_at=uow.clock(), created_by_user_id=actor.user_id,
    ))
    uow.audit.record(actor, "lab_safety_proposal.create", row, after=row, reason=suggestion.reason,
                     site_id=subject.site_id)
    for earlier in pending:
        before = snapshot(earlier)
        earlier.status = "superseded"
        earlier.decision_reason = f"superseded by proposal {row.id} (grade {row.grade} on {observed_on})"
        earlier.decided_at = uow.clock()
        uow.session.flush()
        uow.audit.record(actor, "lab_safety_proposal.supersede", earlier, before=before, after=earlier,
                         reason=earlier.decision_reason, site_id=subject.site_id)
    return LabReview("proposed", suggestion.reason, grading=grading, proposal=proposal_view(uow, row, subject),
                     superseded=tuple(p.id for p in pending))


# --- deciding -------------------------------------------------------------------------------------------


def confirm_proposal(
    uow: UnitOfWork,
    actor: Actor,
    proposal_id: int,
    details: Mapping[str, Any] | None = None,
    *,
    reason: str | None = None,
    today: date | None = None,
) -> Decision:
    """The investigator accepts a proposal: a new event (``details`` completes the AE form:
    relatedness per drug, outcome, seriousness …) or the open event's grade raised.

    The proposal fixes the term; ``details`` may change anything else, the grade included (the
    investigator may judge the clinical part of a grade, e.g. anemia needing transfusion).
    """
    details = dict(details or {})
    with uow:
        row, subject = _pending_proposal(uow, actor, "lab_safety.decide", proposal_id)
        today = today or uow.clock().date()
        if "term" in details:
            named = shipped_table().lookup(str(details["term"]))
            if named is None or named.term != row.term:
                raise InvalidInput(f"proposal {row.id} is about '{row.term}'; the term cannot change "
                                   f"(record a separate event instead)", field="term", value=details["term"])
        events = AdverseEventRepository(uow.session)
        open_rows = events.open_events(subject.id, row.term)
        text = f"lab safety proposal {row.id}: {row.term} grade {row.grade} on {row.observed_on}"
        if row.action == "new_event":
            if open_rows:
                raise Refused(f"proposal {row.id} is stale: AE {open_rows[0].ae_number} ('{row.term}', grade "
                              f"{open_rows[0].ctcae_grade}) is open now; dismiss it or review the value again",
                              proposal=row.id)
            data = {"term": row.term, "grade": row.grade, "start_date": row.start_date or row.observed_on, **details}
            event = store_event(uow, actor, subject, data, today=today, source="lab_grading",
                                reason=reason or f"confirmed {text}")
        else:
            event = events.get(row.adverse_event_id) if row.adverse_event_id else None
            if event is None or event.resolution_date is not None or (event.ctcae_grade or 0) >= row.grade:
                raise Refused(f"proposal {row.id} is stale: the event it would raise is closed or already at "
                              f"grade {row.grade} or above; dismiss it", proposal=row.id)
            event = revise_event(uow, actor, event, subject, {"grade": row.grade, **details},
                                 reason=reason or f"worst grade raised by {text}", today=today)
        before = snapshot(row)
        row.status = "confirmed"
        row.adverse_event_id = event.id
        row.decision_reason = " ".join(reason.split()) if reason else None
        row.decided_at = uow.clock()
        row.decided_by_user_id = actor.user_id
        uow.session.flush()
        uow.audit.record(actor, "lab_safety_proposal.confirm", row, before=before, after=row, reason=reason,
                         site_id=subject.site_id)
        decision = Decision(proposal_view(uow, row, subject), event_view(uow, event, subject))
        uow.commit()
    return decision


def dismiss_proposal(uow: UnitOfWork, actor: Actor, proposal_id: int, *, reason: str) -> Decision:
    """The investigator judges the value not to be an adverse event (or not a worse one); the reason
    is kept on the proposal and in the audit trail."""
    reason = require_reason(reason)
    with uow:
        row, subject = _pending_proposal(uow, actor, "lab_safety.decide", proposal_id)
        before = snapshot(row)
        row.status = "dismissed"
        row.decision_reason = reason
        row.decided_at = uow.clock()
        row.decided_by_user_id = actor.user_id
        uow.session.flush()
        uow.audit.record(actor, "lab_safety_proposal.dismiss", row, before=before, after=row, reason=reason,
                         site_id=subject.site_id)
        decision = Decision(proposal_view(uow, row, subject), None)
        uow.commit()
    return decision


def _pending_proposal(uow: UnitOfWork, actor: Actor, action: str,
                      proposal_id: int) -> tuple[LabSafetyProposal, Subject]:
    permissions.require(actor, action)
    row = uow.session.get(LabSafetyProposal, proposal_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no lab safety proposal with id {proposal_id}", field="proposal", value=proposal_id)
    subject = uow.subjects.locked(row.subject_id)  # it may get a new AE number
    assert subject is not None  # a foreign key guarantees it
    permissions.require(actor, action, site=subject.site_id)
    if row.status != "pending":
        raise Refused(f"proposal {row.id} was already {row.status}; nothing was changed",
                      proposal=row.id, status=row.status)
    return row, subject


# --- reading --------------------------------------------------------------------------------------------


def list_proposals(
    uow: UnitOfWork,
    actor: Actor,
    *,
    subject_id: int | None = None,
    site_id: int | None = None,
    status: str | None = "pending",
) -> list[ProposalView]:
    """Proposals (pending ones by default) the actor may see: their site's, or all for central users."""
    permissions.require(actor, "adverse_event.view")
    with uow.reading():
        if subject_id is not None:
            subject_for(uow, actor, "adverse_event.view", subject_id)
        if site_id is not None:
            permissions.require(actor, "adverse_event.view", site=site_id)
        scope = site_id if site_id is not None else permissions.site_scope(actor)
        rows = LabSafetyProposalRepository(uow.session).listing(site_id=scope, subject_id=subject_id, status=status)
        return [proposal_view(uow, row, subject) for row, subject in rows]


def proposal_view(uow: UnitOfWork, row: LabSafetyProposal, subject: Subject | None = None) -> ProposalView:
    subject = subject or uow.subjects.require(row.subject_id)
    grading = row.grading or {}
    return ProposalView(
        id=row.id, subject_id=subject.id, subject=subject_label(subject), site_id=subject.site_id,
        action=row.action, term=row.term, meddra_code=row.meddra_code, grade=row.grade, grade_text=row.grade_text,
        current_grade=row.current_grade, adverse_event_id=row.adverse_event_id, observed_on=row.observed_on,
        start_date=row.start_date, loinc=row.loinc, value=row.value, unit=row.unit,
        criterion=str(grading.get("criterion", "")), reasons=tuple(grading.get("reasons", ())),
        status=row.status, decision_reason=row.decision_reason, created_at=row.created_at, decided_at=row.decided_at,
    )
