"""Subjects, screening and consent: register a candidate, enter screening data (eligibility judged
criterion by criterion), record a screen failure or consent, the screening log; and a randomized
subject's end of study: withdrawal and completion.

Every route parses the body into a model below, calls one service of services/subjects.py,
screening.py, screening_log.py or end_of_study.py, and returns what it answered; the services
check role and site.
"""

from __future__ import annotations

import datetime as dt
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import Reason, SiteFilter, SubjectId, jsonable, today
from cmvtrial.adapters.api.schemas import SCREENING_RECORD_EXAMPLE, EligibilityOut
from cmvtrial.core.disposition import MAX_DETAILS, WITHDRAWAL_REASONS
from cmvtrial.errors import Refused
from cmvtrial.services import end_of_study, screening, subjects
from cmvtrial.services.screening_log import screening_log

router = APIRouter(tags=["subjects"])
_TIME = "2025-03-03T09:00:00Z"


def _example(**values: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [values]})


class SubjectIn(BaseModel):
    model_config = _example(site_code="PKUPH", screening_number="S-001", reason="referred by the ward")

    site_code: str = Field(max_length=200, description="The site's code.")
    screening_number: str = Field(max_length=200, description="Unique at the site; 1-32 letters, digits, . _ -.")
    reason: str | None = Reason


class SubjectOut(BaseModel):
    model_config = _example(
        id=7, site_id=1, site_code="PKUPH", screening_number="S-001", subject_number=None, status="screening",
        eligibility=None, screen_failure_reasons=None, consent_date=None, protocol_version_id=1, created_at=_TIME,
        end_of_study_date=None, end_of_study_reason=None, end_of_study_details=None,
    )

    id: int
    site_id: int
    site_code: str
    screening_number: str
    subject_number: str | None = Field(description="Given at randomization.")
    status: str = Field(description="screening, eligible, screen_failed, randomized, on_treatment, in_follow_up, "
                                    "completed, withdrawn, lost_to_follow_up or died.")
    eligibility: str | None = Field(description="eligible, not_eligible or undetermined; null before any data.")
    screen_failure_reasons: list[dict[str, Any]] | None
    consent_date: date | None
    protocol_version_id: int
    created_at: datetime
    end_of_study_date: date | None = Field(None, description="The day the subject left the trial or completed it.")
    end_of_study_reason: str | None = Field(None, description="completed, or the withdrawal reason's code.")
    end_of_study_details: str | None = Field(None, description="The reason in words, or a note.")


class AllocationSummaryOut(BaseModel):
    arm: str
    stratum: str
    sequence: int | None
    method: str
    allocated_at: datetime


class SubjectDetailOut(BaseModel):
    """A subject with its screening data, the verdict judged afresh, consent and allocation."""

    subject: SubjectOut
    screening_data: dict[str, Any] = Field(description="The screening record as stored (docs/screening-record.md).")
    missing_required: list[str]
    eligibility: EligibilityOut | None
    allocation: AllocationSummaryOut | None


class ScreeningIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"record": SCREENING_RECORD_EXAMPLE, "reason": None},
        {"record": {"nyha_class": 2}, "reason": "corrected from the echocardiography report"},
    ]})

    record: dict[str, Any] = Field(description="Keys of the screening record to store; null removes a value "
                                               "(for corticosteroid, null means none). Changing a stored value needs "
                                               "a reason.")
    reason: str | None = Reason


class ScreeningEntryOut(BaseModel):
    """What the entry did and the verdict now."""

    subject: SubjectOut
    created: list[str]
    updated: list[str]
    removed: list[str]
    missing_required: list[str]
    eligibility: EligibilityOut


class ScreenFailureIn(BaseModel):
    model_config = _example(category="declined", detail="declined after reading the information sheet")

    category: Literal["declined", "other"] = Field(description="declined (to participate) or other.")
    detail: str = Field(max_length=2000, description="What happened, in a few words.")
    reason: str | None = Reason


class ConsentIn(BaseModel):
    model_config = _example(date="2025-03-01", reason=None)

    date: dt.date = Field(description="The date informed consent was signed (YYYY-MM-DD).")
    reason: str | None = Reason


_REASONS = ", ".join(f"{reason.code} ({reason.dsdecod})" for reason in WITHDRAWAL_REASONS)


class WithdrawalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"date": "2025-03-20", "reason": "withdrew_consent", "details": None},
        {"date": "2025-04-02", "reason": "other", "details": "moved to another city for work"}]})

    date: dt.date = Field(description="The last day the subject took part (YYYY-MM-DD); not after today, not before "
                                      "randomization or data already recorded.")
    reason: str = Field(max_length=64, description=f"One of {_REASONS}.")
    details: str | None = Field(None, max_length=MAX_DETAILS,
                                description="The reason in words (required for other); otherwise an optional note.")


class CompletionIn(BaseModel):
    model_config = _example(details=None)

    details: str | None = Field(None, max_length=MAX_DETAILS, description="An optional note.")


class EndOfStudyOut(BaseModel):
    model_config = _example(
        subject_id=7, subject="PKUPH-001", site="PKUPH", status="withdrawn", date="2025-03-20",
        reason="withdrew_consent", reason_label="withdrew consent", dsdecod="WITHDRAWAL BY SUBJECT", details=None,
        cancelled=["TW3", "W12"])

    subject_id: int
    subject: str
    site: str
    status: str = Field(description="withdrawn, lost_to_follow_up, died or completed.")
    date: dt.date
    reason: str
    reason_label: str
    dsdecod: str = Field(description="The CDISC disposition term (SDTM DS.DSDECOD).")
    details: str | None
    cancelled: list[str] = Field(description="Planned visits the withdrawal cancelled.")


def subject_out(view: subjects.SubjectView) -> SubjectOut:
    return SubjectOut.model_validate(view, from_attributes=True)


@router.get("/subjects", response_model=list[SubjectOut], responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_subjects(
    actor: ActorDep,
    context: ContextDep,
    site: SiteFilter = None,
    status: Annotated[str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="Only this status.")] = None,
    search: Annotated[str | None, Query(max_length=64, description="Part of a screening or subject number.")] = None,
) -> list[SubjectOut]:
    """The subjects you may see (your site's, or every site's), by site."""
    views = subjects.list_subjects(context.uow(), actor, site_code=site, status=status, search=search)
    return [subject_out(view) for view in views]


@router.post("/subjects", status_code=201, response_model=SubjectOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def register_subject(body: SubjectIn, actor: ActorDep, context: ContextDep) -> SubjectOut:
    """Register a screening candidate at a site (investigator or coordinator of that site)."""
    view = subjects.register_subject(context.uow(), actor, body.site_code, body.screening_number, reason=body.reason)
    return subject_out(view)


@router.get("/subjects/{subject_id}", response_model=SubjectDetailOut,
            responses=problem_responses(*AUTHENTICATED, 404, 422))
def show_subject(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> SubjectDetailOut:
    """A subject: status, screening data, eligibility criterion by criterion, consent and allocation."""
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    return SubjectDetailOut(
        subject=subject_out(detail.subject), screening_data=jsonable(detail.screening_data),
        missing_required=list(detail.missing_required),
        eligibility=EligibilityOut.model_validate(detail.eligibility.to_dict()) if detail.eligibility else None,
        allocation=AllocationSummaryOut.model_validate(detail.allocation, from_attributes=True)
        if detail.allocation else None,
    )


@router.post("/subjects/{subject_id}/screening", response_model=ScreeningEntryOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def enter_screening(subject_id: SubjectId, body: ScreeningIn, actor: ActorDep, context: ContextDep) -> ScreeningEntryOut:
    """Enter or correct screening data; eligibility is judged again and stored (not eligible makes a
    screen failure naming the criteria). Re-sending what is stored changes nothing."""
    entry = screening.enter_screening_data(context.uow(), actor, subject_id, body.record, reason=body.reason)
    return ScreeningEntryOut(
        subject=subject_out(entry.subject), created=list(entry.created), updated=list(entry.updated),
        removed=list(entry.removed), missing_required=list(entry.missing_required),
        eligibility=EligibilityOut.model_validate(entry.eligibility.to_dict()),
    )


@router.get("/subjects/{subject_id}/eligibility", response_model=EligibilityOut,
            responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def eligibility(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> EligibilityOut:
    """The subject's eligibility on the screening data stored now, criterion by criterion."""
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    if detail.eligibility is None:
        raise Refused(f"subject {subject_id} has no screening data yet", field="subject", value=subject_id)
    return EligibilityOut.model_validate(detail.eligibility.to_dict())


@router.post("/subjects/{subject_id}/screen-failure", response_model=SubjectOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def screen_failure(subject_id: SubjectId, body: ScreenFailureIn, actor: ActorDep, context: ContextDep) -> SubjectOut:
    """Record a screen failure eligibility cannot see (declined, or another reason)."""
    view = screening.record_screen_failure(context.uow(), actor, subject_id, body.category, body.detail,
                                           reason=body.reason)
    return subject_out(view)


@router.post("/subjects/{subject_id}/consent", response_model=SubjectOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def consent(subject_id: SubjectId, body: ConsentIn, actor: ActorDep, context: ContextDep) -> SubjectOut:
    """Record the date informed consent was signed (needed before randomization); changing it needs a reason."""
    return subject_out(screening.record_consent(context.uow(), actor, subject_id, body.date, reason=body.reason))


@router.post("/subjects/{subject_id}/withdrawal", response_model=EndOfStudyOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def withdraw(subject_id: SubjectId, body: WithdrawalIn, actor: ActorDep, context: ContextDep) -> EndOfStudyOut:
    """Record that a randomized subject left the trial (the subject's investigator): the planned visits
    after the date are cancelled, later visits and doses are refused. A second withdrawal is refused."""
    view = end_of_study.withdraw_subject(context.uow(), actor, subject_id, reason=body.reason, on_date=body.date,
                                         today=today(context), details=body.details)
    return EndOfStudyOut.model_validate(view.to_dict())


@router.post("/subjects/{subject_id}/completion", response_model=EndOfStudyOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def complete(subject_id: SubjectId, body: CompletionIn, actor: ActorDep, context: ContextDep) -> EndOfStudyOut:
    """Record that a subject completed the trial (the subject's investigator), once the final protocol
    visit (FU3M) is done; it is dated by that visit."""
    view = end_of_study.complete_subject(context.uow(), actor, subject_id, today=today(context), details=body.details)
    return EndOfStudyOut.model_validate(view.to_dict())


@router.get(
    "/screening-log", response_model=dict[str, Any], responses={
        **problem_responses(*AUTHENTICATED, 404, 422),
        200: {"description": "Every candidate with status and screen-failure reasons, and the CONSORT counts "
                             "(overall and by site).",
              "content": {"application/json": {"example": {
                  "site": None, "counts": {"assessed_for_eligibility": 2, "excluded": 1, "randomized": 1},
                  "counts_by_site": {}, "candidates": []}}}},
    },
)
def screening_log_(actor: ActorDep, context: ContextDep, site: SiteFilter = None) -> dict[str, Any]:
    """The screening log (statuses and reasons, no clinical values) and the CONSORT enrolment counts."""
    log = screening_log(context.uow(), actor, site_code=site)
    return {
        "site": log.site_code,
        "counts": log.counts.to_dict(),
        "counts_by_site": {code: counts.to_dict() for code, counts in log.counts_by_site.items()},
        "candidates": [
            jsonable({"id": e.subject.id, "site": e.subject.site_code, "screening_number": e.subject.screening_number,
                      "subject_number": e.subject.subject_number, "screening_date": e.screening_date,
                      "status": e.subject.status, "eligibility": e.subject.eligibility,
                      "screen_failure_reasons": e.subject.screen_failure_reasons, "randomized": e.randomized})
            for e in log.entries
        ],
    }
