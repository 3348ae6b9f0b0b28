"""Safety: adverse events (record, update, list), the lab-grade proposals an investigator confirms
or dismisses, and serious adverse events with their expedited-report clock and report form."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.responses import Response

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import MAX_ID, Reason, SiteFilter, SubjectFilter, SubjectId, now, today
from cmvtrial.services import adverse_events, lab_safety, sae_reporting

router = APIRouter(tags=["safety"])

EventId = Annotated[int, Path(ge=1, le=MAX_ID, description="The adverse event's id.")]
ProposalId = Annotated[int, Path(ge=1, le=MAX_ID, description="The lab-safety proposal's id.")]

AE_FORM_EXAMPLE: dict[str, Any] = {
    "term": "Neutrophil count decreased", "verbatim": "neutropenia", "start_date": "2025-03-12", "grade": 3,
    "outcome": "RECOVERING/RESOLVING", "seriousness": [], "drugs": [
        {"drug": "interleukin-2", "relatedness": "unlikely", "action_taken": "DOSE NOT CHANGED"},
        {"drug": "ganciclovir", "relatedness": "probable", "action_taken": "DRUG INTERRUPTED"}],
    "narrative": None,
}
AE_OUT_EXAMPLE: dict[str, Any] = {
    "id": 4, "subject_id": 7, "subject": "PKUPH-001", "site_id": 1, "site_code": "PKUPH", "ae_number": 1,
    "term": "Neutrophil count decreased", "verbatim": "neutropenia", "ctcae_term": True, "meddra_code": "10029366",
    "ctcae_version": "5.0", "grade": 3, "grade_text": "<1000 - 500/mm3; <1.0 - 0.5 x 10e9 /L", "serious": False,
    "seriousness": [], "awareness_time": None, "drugs": AE_FORM_EXAMPLE["drugs"], "outcome": "RECOVERING/RESOLVING",
    "start_date": "2025-03-12", "end_date": None, "narrative": None, "findings": [], "source": "manual",
    "recorded_at": "2025-03-12T10:00:00Z", "recorded_by": "li.wei", "updated_at": None,
    "report_submitted_at": None, "report_submitted_by": None, "report_reference": None,
}
_AE = {200: {"description": "The adverse event (fields as `cmvtrial ae list --json`).",
             "content": {"application/json": {"example": AE_OUT_EXAMPLE}}}}
_AE_CREATED = {201: _AE[200]}


class AdverseEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"event": AE_FORM_EXAMPLE, "reason": None}]})

    event: dict[str, Any] = Field(description="The AE form: term (CTCAE term, synonym or free text), verbatim, "
                                              "start_date, end_date, grade (1-5), outcome, seriousness (ICH E2A "
                                              "criteria), awareness_time (serious events), drugs [{drug, relatedness, "
                                              "action_taken}] for every study drug, narrative.")
    reason: str | None = Reason


class AdverseEventChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"changes": {"grade": 4}, "reason": "worsened: ANC 0.4 x 10^9/L on 2025-03-14"}]})

    changes: dict[str, Any] = Field(description="The AE form's fields to change; every check runs again.")
    reason: str = Field(max_length=2000, description="Why the event is changed (required; audited).")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "details": {"outcome": "NOT RECOVERED/NOT RESOLVED", "drugs": AE_FORM_EXAMPLE["drugs"]}, "reason": None}]})

    details: dict[str, Any] = Field(default_factory=dict, description="For a new event: the rest of the AE form.")
    reason: str | None = Reason


class DismissIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"reason": "haemolysed sample; repeat count normal"}]})

    reason: str = Field(max_length=2000, description="Why it is not an adverse event (required; audited).")


class SaeSubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"submitted_at": "2025-03-12T18:30:00+08:00", "reference": "SPONSOR-2025-0042", "reason": None}]})

    submitted_at: AwareDatetime | None = Field(None, description="When it was sent (default now).")
    reference: str | None = Field(None, max_length=200, description="The report's reference, e.g. a case number.")
    reason: str | None = Reason


def _decision(decision: lab_safety.Decision) -> dict[str, Any]:
    return {"proposal": decision.proposal.to_dict(),
            "adverse_event": decision.event.to_dict() if decision.event else None}


@router.get("/adverse-events", response_model=list[dict[str, Any]],
            responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_events(actor: ActorDep, context: ContextDep, subject_id: SubjectFilter = None, site: SiteFilter = None,
                serious: bool = False) -> list[dict[str, Any]]:
    """Adverse events you may see: one subject's, one site's, or all (site users: their site)."""
    uow = context.uow()
    site_id = adverse_events.site_id_for(uow, site) if site else None
    views = adverse_events.list_adverse_events(uow, actor, subject_id=subject_id, site_id=site_id, serious_only=serious)
    return [view.to_dict() for view in views]


@router.post("/subjects/{subject_id}/adverse-events", status_code=201, response_model=dict[str, Any],
             responses={**problem_responses(*AUTHENTICATED, 404, 409, 422), **_AE_CREATED})
def record_event(subject_id: SubjectId, body: AdverseEventIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """Record an adverse event for a subject of your site; the grade is worded by CTCAE v5.0 and the
    answer lists soft findings (each a query). Hard problems are refused, each naming its field."""
    view = adverse_events.record_adverse_event(context.uow(), actor, subject_id, body.event, today=today(context),
                                               reason=body.reason)
    return view.to_dict()


@router.get("/adverse-events/{event_id}", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 404, 422), **_AE})
def show_event(event_id: EventId, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """One adverse event."""
    return adverse_events.get_adverse_event(context.uow(), actor, event_id).to_dict()


@router.patch("/adverse-events/{event_id}", response_model=dict[str, Any],
              responses={**problem_responses(*AUTHENTICATED, 404, 409, 422), **_AE})
def update_event(event_id: EventId, body: AdverseEventChangeIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """Change fields of a recorded adverse event, with a reason; every check runs again."""
    view = adverse_events.update_adverse_event(context.uow(), actor, event_id, body.changes, reason=body.reason,
                                               today=today(context))
    return view.to_dict()


@router.get("/lab-proposals", response_model=list[dict[str, Any]],
            responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_proposals(
    actor: ActorDep,
    context: ContextDep,
    subject_id: SubjectFilter = None,
    status: Annotated[Literal["pending", "confirmed", "dismissed", "superseded", "all"],
                      Query(description="Which proposals (default: those waiting for the investigator).")] = "pending",
) -> list[dict[str, Any]]:
    """Lab values graded by CTCAE that propose a new adverse event or a worse grade of an open one."""
    views = lab_safety.list_proposals(context.uow(), actor, subject_id=subject_id,
                                      status=None if status == "all" else status)
    return [view.to_dict() for view in views]


@router.post("/lab-proposals/{proposal_id}/confirm", response_model=dict[str, Any],
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def confirm_proposal(proposal_id: ProposalId, body: ConfirmIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """The investigator confirms a proposal: a new adverse event, or the open one's grade raised."""
    decision = lab_safety.confirm_proposal(context.uow(), actor, proposal_id, body.details, reason=body.reason,
                                           today=today(context))
    return _decision(decision)


@router.post("/lab-proposals/{proposal_id}/dismiss", response_model=dict[str, Any],
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def dismiss_proposal(proposal_id: ProposalId, body: DismissIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """The investigator dismisses a proposal, with the reason."""
    return _decision(lab_safety.dismiss_proposal(context.uow(), actor, proposal_id, reason=body.reason))


@router.get("/serious-adverse-events", response_model=list[dict[str, Any]],
            responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_serious(actor: ActorDep, context: ContextDep, site: SiteFilter = None,
                 overdue: Annotated[bool, Query(description="Only reports past their deadline and not sent.")] = False,
                 ) -> list[dict[str, Any]]:
    """Serious adverse events with their expedited-report clock, most urgent first."""
    uow = context.uow()
    site_id = adverse_events.site_id_for(uow, site) if site else None
    statuses = sae_reporting.list_serious_events(uow, actor, now=now(context), site_id=site_id, overdue_only=overdue)
    return [status.to_dict() for status in statuses]


@router.post("/adverse-events/{event_id}/sae-report", response_model=dict[str, Any],
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def submit_sae_report(event_id: EventId, body: SaeSubmitIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """Record that a serious event's expedited report was sent (investigator); once per event."""
    status = sae_reporting.submit_report(context.uow(), actor, event_id, submitted_at=body.submitted_at,
                                         reference=body.reference, reason=body.reason)
    return status.to_dict()


@router.get("/adverse-events/{event_id}/sae-report.{fmt}", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       200: {"description": "The SAE report form: a self-contained HTML page or a PDF.",
                             "content": {"text/html": {}, "application/pdf": {}}}})
def sae_report(event_id: EventId, fmt: Annotated[Literal["html", "pdf"], Path(description="html or pdf")],
               actor: ActorDep, context: ContextDep) -> Response:
    """The SAE report form of a serious event (narrative, dates, seriousness, causality per drug)."""
    from cmvtrial.adapters.reports.sae_report import render

    form = sae_reporting.sae_report_form(context.uow(), actor, event_id, now=now(context))
    media = "text/html; charset=utf-8" if fmt == "html" else "application/pdf"
    return Response(render(form, fmt), media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="sae-report-{event_id}.{fmt}"'})
