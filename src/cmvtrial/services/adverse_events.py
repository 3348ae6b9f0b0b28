"""Recording adverse events: create, revise with a reason, read per subject or per site.

Each use case opens the unit of work, checks the role and then the subject's site, lets
``core.adverse_events.build_adverse_event`` decide (CTCAE term or free text, the grade's wording,
ICH seriousness, the hard edit checks, the soft findings), stores the row and its audit event in the
same transaction, and commits. A hard problem raises InvalidInput before anything is written, so a
refusal leaves no row and no audit event; soft findings are stored on the event and returned
(STYLE.md: findings are results, not exceptions).

The study drugs an event must be assessed against are the protocol's (every regimen of every arm,
read from the protocol version the subject was enrolled under), so relatedness is given for IL-2
and for ganciclovir separately (issue 5). For a randomized subject, a study drug their arm does not
receive is filled in as "not applicable" when the form leaves it out: asking a site to assess
IL-2 for a control-arm subject would only invite noise.

The safety services (``lab_safety``, ``sae_reporting``) reuse ``subject_for``, ``store_event``,
``revise_event`` and ``event_view`` inside their own transactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from cmvtrial.core import adverse_events as core
from cmvtrial.core.ctcae import shipped_table
from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import InvalidInput, NotFound
from cmvtrial.services import permissions
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import protocol_of_version
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.safety_repositories import AdverseEventRepository
from cmvtrial.store.tables import AdverseEvent, Allocation, Site, Subject, User

#: Where an event came from: typed on the AE form, or confirmed from a lab-grade proposal.
SOURCES = ("manual", "lab_grading")


@dataclass(frozen=True)
class AdverseEventView:
    """An adverse event as the services hand it out (plain values, safe after the session closed)."""

    id: int
    subject_id: int
    subject: str
    site_id: int
    site_code: str
    ae_number: int
    term: str
    verbatim: str
    ctcae_term: bool
    meddra_code: str | None
    ctcae_version: str | None
    grade: int
    grade_text: str
    serious: bool
    seriousness: tuple[str, ...]
    awareness_time: datetime | None
    drugs: tuple[core.DrugAssessment, ...]
    outcome: str
    start_date: date
    end_date: date | None
    narrative: str | None
    findings: tuple[core.EditFinding, ...]
    source: str
    recorded_at: datetime
    recorded_by: str
    updated_at: datetime | None
    report_submitted_at: datetime | None = None
    report_submitted_by: str | None = None
    report_reference: str | None = None

    @property
    def label(self) -> str:
        """How people name the event: the subject and the event's number for that subject."""
        return f"{self.subject} AE {self.ae_number}"

    @property
    def is_open(self) -> bool:
        return self.end_date is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the shape of `cmvtrial ae list --json`."""
        from cmvtrial.core.audit_chain import to_jsonable

        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["drugs"] = [d.model_dump(mode="json") for d in self.drugs]
        data["findings"] = [{"code": f.code, "field": f.field, "message": f.message} for f in self.findings]
        return dict(to_jsonable(data))


# --- the subject, its protocol and its study drugs ----------------------------------------------------


def subject_for(uow: UnitOfWork, actor: Actor, action: str, subject_id: int, *, lock: bool = False) -> Subject:
    """The subject, once the actor's role and site allow ``action`` on it (role first, so a
    forbidden role learns nothing about which subjects exist)."""
    permissions.require(actor, action)
    subject = uow.subjects.locked(subject_id) if lock else uow.subjects.get(subject_id)
    if subject is None:
        raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
    permissions.require(actor, action, site=subject.site_id)
    return subject


def protocol_of(uow: UnitOfWork, subject: Subject) -> Protocol:
    """The protocol version the subject was enrolled under (DESIGN.md §2: an amendment is a new
    version, and each subject keeps theirs)."""
    return protocol_of_version(uow, subject.protocol_version_id)


def study_drugs(protocol: Protocol) -> list[str]:
    """Every drug of every arm's regimens, in the protocol's order, each once."""
    seen: dict[str, str] = {}
    for arm in protocol.arms:
        for regimen in arm.regimens:
            seen.setdefault(regimen.drug.casefold(), regimen.drug)
    return list(seen.values())


def arm_drugs(uow: UnitOfWork, subject: Subject, protocol: Protocol) -> set[str] | None:
    """The (case-folded) drugs of the subject's arm, or None before randomization."""
    allocation = uow.session.scalar(select(Allocation).where(Allocation.subject_id == subject.id))
    if allocation is None:
        return None
    arm = next((a for a in protocol.arms if a.id == allocation.arm_id), None)
    return None if arm is None else {r.drug.casefold() for r in arm.regimens}


def arm_label(uow: UnitOfWork, subject: Subject, protocol: Protocol) -> str | None:
    allocation = uow.session.scalar(select(Allocation).where(Allocation.subject_id == subject.id))
    if allocation is None:
        return None
    arm = next((a for a in protocol.arms if a.id == allocation.arm_id), None)
    return arm.label if arm else allocation.arm_id


def _with_absent_drugs(data: Mapping[str, Any], drugs: list[str], received: set[str] | None) -> dict[str, Any]:
    """Fill "not applicable" for study drugs the subject's arm does not receive and the form omits."""
    filled = dict(data)
    if received is None:
        return filled
    given = filled.get("drugs", [])
    if not isinstance(given, list | tuple):
        return filled
    named = {str(d.get("drug", "")).casefold() for d in given if isinstance(d, Mapping)}
    missing = [d for d in drugs if d.casefold() not in received and d.casefold() not in named]
    if missing:
        filled["drugs"] = [*given, *({"drug": d, "relatedness": core.Relatedness.NOT_APPLICABLE.value,
                                      "action_taken": core.ActionTaken.NOT_APPLICABLE.value} for d in missing)]
    return filled


# --- rows and views -------------------------------------------------------------------------------------


def core_input(row: AdverseEvent) -> dict[str, Any]:
    """The stored event as ``build_adverse_event`` input, so a revision runs every check again."""
    return {
        "term": row.term,
        "meddra_code": row.meddra_code,
        "verbatim": row.verbatim_term if row.verbatim_term != row.term else None,
        "start_date": row.onset_date,
        "end_date": row.resolution_date,
        "grade": row.ctcae_grade,
        "seriousness": list(row.seriousness_criteria or []),
        "awareness_time": row.awareness_time,
        "drugs": list(row.drug_assessments or []),
        "outcome": row.outcome,
        "narrative": row.narrative,
    }


def _apply(row: AdverseEvent, checked: core.CheckedEvent) -> None:
    event = checked.event
    row.term = event.term
    row.verbatim_term = event.verbatim or event.term
    row.ctcae_term = event.term if event.ctcae_term else None
    row.meddra_code = event.meddra_code
    row.ctcae_version = event.ctcae_version
    row.ctcae_grade = event.grade
    row.grade_text = event.grade_text
    row.serious = event.serious
    row.seriousness_criteria = [str(c) for c in event.seriousness]
    row.awareness_time = event.awareness_time
    row.drug_assessments = [d.model_dump(mode="json") for d in event.drugs]
    row.outcome = str(event.outcome)
    row.onset_date = event.start_date
    row.resolution_date = event.end_date
    row.narrative = event.narrative
    row.findings = [{"code": f.code, "field": f.field, "message": f.message} for f in checked.findings]


def event_view(uow: UnitOfWork, row: AdverseEvent, subject: Subject | None = None) -> AdverseEventView:
    subject = subject or uow.subjects.require(row.subject_id)
    return AdverseEventView(
        id=row.id,
        subject_id=subject.id,
        subject=subject_label(subject),
        site_id=subject.site_id,
        site_code=_site_code(uow, subject.site_id),
        ae_number=row.ae_number,
        term=row.term,
        verbatim=row.verbatim_term,
        ctcae_term=row.ctcae_term is not None,
        meddra_code=row.meddra_code,
        ctcae_version=row.ctcae_version,
        grade=row.ctcae_grade or 0,
        grade_text=row.grade_text or "",
        serious=row.serious,
        seriousness=tuple(row.seriousness_criteria or ()),
        awareness_time=row.awareness_time,
        drugs=tuple(core.DrugAssessment.model_validate(d) for d in row.drug_assessments or ()),
        outcome=row.outcome or "",
        start_date=row.onset_date,
        end_date=row.resolution_date,
        narrative=row.narrative,
        findings=tuple(core.EditFinding(**f) for f in row.findings or ()),
        source=row.source,
        recorded_at=row.recorded_at,
        recorded_by=_username(uow, row.recorded_by_user_id) or "",
        updated_at=row.updated_at,
        report_submitted_at=row.sae_report_submitted_at,
        report_submitted_by=_username(uow, row.sae_report_submitted_by_user_id),
        report_reference=row.sae_report_reference,
    )


def subject_label(subject: Subject) -> str:
    return subject.subject_number or subject.screening_number


def _site_code(uow: UnitOfWork, site_id: int) -> str:
    site = uow.session.get(Site, site_id)
    return site.code if site else str(site_id)


def _username(uow: UnitOfWork, user_id: int | None) -> str | None:
    if user_id is None:
        return None
    user = uow.session.get(User, user_id)
    return user.username if user else str(user_id)


# --- inside a transaction (shared with the lab-proposal and SAE services) --------------------------------


def check_event(uow: UnitOfWork, subject: Subject, data: Mapping[str, Any], *, today: date) -> core.CheckedEvent:
    """Run the AE form's checks for this subject: InvalidInput lists every hard problem."""
    if not isinstance(data, Mapping):
        raise InvalidInput("an adverse event is a JSON object of fields", field="record")
    protocol = protocol_of(uow, subject)
    drugs = study_drugs(protocol)
    filled = _with_absent_drugs(data, drugs, arm_drugs(uow, subject, protocol))
    return core.build_adverse_event(filled, today=today, study_drugs=drugs, table=shipped_table())


def store_event(
    uow: UnitOfWork,
    actor: Actor,
    subject: Subject,
    data: Mapping[str, Any],
    *,
    today: date,
    source: str = "manual",
    reason: str | None = None,
) -> AdverseEvent:
    """Check and insert one event with its audit event, in the caller's open transaction."""
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", field="source", value=source)
    checked = check_event(uow, subject, data, today=today)
    events = AdverseEventRepository(uow.session)
    row = AdverseEvent(subject_id=subject.id, ae_number=events.next_number(subject.id), source=source,
                       recorded_at=uow.clock(), recorded_by_user_id=actor.user_id)
    _apply(row, checked)
    events.add(row)
    uow.audit.record(actor, "adverse_event.create", row, after=row, reason=reason, site_id=subject.site_id)
    return row


def revise_event(
    uow: UnitOfWork,
    actor: Actor,
    row: AdverseEvent,
    subject: Subject,
    changes: Mapping[str, Any],
    *,
    reason: str,
    today: date,
) -> AdverseEvent:
    """Apply ``changes`` to a stored event (all checks again), audited with before, after and reason."""
    reason = require_reason(reason)
    if not isinstance(changes, Mapping) or not changes:
        raise InvalidInput("give at least one field to change", field="changes")
    merged = {**core_input(row), **changes}
    if "term" in changes and "meddra_code" not in changes:
        merged.pop("meddra_code")  # the table fills in the new term's code
    checked = check_event(uow, subject, merged, today=today)
    before = snapshot(row)
    _apply(row, checked)
    after = snapshot(row)
    changed = {k for k in after if after[k] != (before or {}).get(k)}
    if not changed:
        raise InvalidInput(f"the changes leave adverse event {row.id} as it was; nothing was recorded",
                           field="changes")
    row.updated_at = uow.clock()
    uow.session.flush()
    uow.audit.record(actor, "adverse_event.update", row, before=before, after=row, reason=reason,
                     site_id=subject.site_id)
    return row


def require_reason(reason: str | None) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise InvalidInput("a reason is required for this change (it goes into the audit trail)", field="reason")
    return text


def event_row_for(uow: UnitOfWork, actor: Actor, action: str, event_id: int,
                  *, lock: bool = False) -> tuple[AdverseEvent, Subject]:
    """The event and its subject, once the actor may do ``action`` on that subject's site."""
    permissions.require(actor, action)
    events = AdverseEventRepository(uow.session)
    row = uow.session.get(AdverseEvent, event_id, with_for_update=lock) if lock else events.get(event_id)
    if row is None:
        raise NotFound(f"no adverse event with id {event_id}", field="adverse_event", value=event_id)
    subject = uow.subjects.locked(row.subject_id) if lock else uow.subjects.require(row.subject_id)
    assert subject is not None  # a foreign key guarantees it
    permissions.require(actor, action, site=subject.site_id)
    return row, subject


# --- use cases -------------------------------------------------------------------------------------------


def record_adverse_event(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    data: Mapping[str, Any],
    *,
    today: date | None = None,
    reason: str | None = None,
) -> AdverseEventView:
    """Record an AE for a subject of the actor's site; the view carries the soft findings.

    ``today`` is the site's date (the CLI passes the local date); it defaults to the clock's UTC
    date. Refusals (InvalidInput, Forbidden, NotFound) change nothing.
    """
    with uow:
        subject = subject_for(uow, actor, "adverse_event.record", subject_id, lock=True)
        row = store_event(uow, actor, subject, data, today=today or uow.clock().date(), reason=reason)
        view = event_view(uow, row, subject)
        uow.commit()
    return view


def update_adverse_event(
    uow: UnitOfWork,
    actor: Actor,
    event_id: int,
    changes: Mapping[str, Any],
    *,
    reason: str,
    today: date | None = None,
) -> AdverseEventView:
    """Change fields of a recorded event; a reason is required and the checks run again."""
    with uow:
        row, subject = event_row_for(uow, actor, "adverse_event.record", event_id, lock=True)
        revise_event(uow, actor, row, subject, changes, reason=reason, today=today or uow.clock().date())
        view = event_view(uow, row, subject)
        uow.commit()
    return view


def get_adverse_event(uow: UnitOfWork, actor: Actor, event_id: int) -> AdverseEventView:
    with uow.reading():
        row, subject = event_row_for(uow, actor, "adverse_event.view", event_id)
        return event_view(uow, row, subject)


def list_adverse_events(
    uow: UnitOfWork,
    actor: Actor,
    *,
    subject_id: int | None = None,
    site_id: int | None = None,
    serious_only: bool = False,
) -> list[AdverseEventView]:
    """Events of one subject, one site, or (for users of all sites) every site.

    A site user sees only their site: asking for another site's subject or site is Forbidden.
    """
    permissions.require(actor, "adverse_event.view")
    with uow.reading():
        if subject_id is not None:
            subject_for(uow, actor, "adverse_event.view", subject_id)
        if site_id is not None:
            permissions.require(actor, "adverse_event.view", site=site_id)
        scope = site_id if site_id is not None else permissions.site_scope(actor)
        rows = AdverseEventRepository(uow.session).listing(site_id=scope, subject_id=subject_id,
                                                           serious_only=serious_only)
        return [event_view(uow, row, subject) for row, subject in rows]


def site_id_for(uow: UnitOfWork, code: str) -> int:
    """The id of the site with this code (NotFound lists the known codes)."""
    with uow.reading():
        return uow.sites.require_code(code.strip().upper()).id

