"""Visits and visit data: a subject's calendar (JSON and iCalendar), a site's visits due and
overdue, recording a visit done or missed, entering a visit's form values (unit, limit and
edit-check messages come back per item), what is stored at a visit, signatures, labs and CMV-DNA.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import Reason, SiteCode, SubjectId, VisitLabel, jsonable, now, today
from cmvtrial.services import data_entry, signatures, visit_data, visits
from cmvtrial.services.signatures import MEANINGS

router = APIRouter(tags=["visits"])


def _document(description: str, example: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    content = {"application/json": {"example": example}} if example else {}
    return {200: {"description": description, **({"content": content} if content else {})}}


class VisitRecordIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"date": "2025-03-10", "missed": False, "reason": None},
        {"date": None, "missed": True, "reason": "the subject was admitted elsewhere"}]})

    date: dt.date | None = Field(None, description="The date the visit was done (outside its window: kept, flagged).")
    missed: bool = Field(False, description="Record the visit as missed instead (needs a reason).")
    reason: str | None = Reason


class VisitOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subject_id": 7, "subject": "PKUPH-001", "visit": "TW1", "status": "done", "actual_date": "2025-03-10",
        "window_start": "2025-03-08", "window_end": "2025-03-12", "deviation": None, "changed": True}]})

    subject_id: int
    subject: str
    visit: str
    status: str
    actual_date: dt.date | None
    window_start: dt.date | None
    window_end: dt.date | None
    deviation: str | None = Field(description="A protocol deviation (a date outside the window), if any.")
    changed: bool


class VisitDataIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "date": "2025-03-10",
        "forms": {"hematology": {"wbc": 5.2, "anc": "3100 cells/uL", "lymphocytes": 1.1, "platelets": 210,
                                 "hemoglobin": {"value": 12.8, "unit": "g/dL"}},
                  "cmv_load": {"collection_date": "2025-03-10", "result": "quantified", "cmv_dna": "900 IU/mL"}},
        "complete": ["hematology"], "reason": None}]})

    date: dt.date | None = Field(None, description="The visit's date (default: the date recorded, else today).")
    forms: dict[str, Any] = Field(description="Form id -> {item: value}; a repeating form takes a list. A value is a "
                                              "number in the item's unit, \"3100 cells/uL\", {value, unit}, or "
                                              "{missing_reason}; null removes a stored value.")
    complete: bool | list[str] = Field(False, description="Mark every submitted form complete, or the listed ones.")
    reason: str | None = Reason


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"password": "your-own-password", "meaning": "approval"}]})

    password: str = Field(max_length=2000, description="Your password again (21 CFR 11.200: signing re-authenticates).")
    meaning: Literal["approval", "review", "responsibility", "authorship"] = Field(
        "approval", description="What the signature means: " + "; ".join(f"{k}: {v}" for k, v in MEANINGS.items()))


class SignatureOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 3, "subject_id": 7, "subject": "PKUPH-001", "visit": "TW1", "meaning": "approval",
        "statement": MEANINGS["approval"], "signed_by": "dr.zhang", "signer_name": "Zhang Wei",
        "signed_at": "2025-03-11T10:00:00Z", "record_sha256": "ab12…", "current_sha256": "ab12…", "valid": True,
        "invalidated_at": None, "invalidated_reason": None,
        "manifestation": "Signed by Zhang Wei (dr.zhang) on 2025-03-11 10:00:00 UTC: approval"}]})

    id: int
    subject_id: int
    subject: str
    visit: str
    meaning: str
    statement: str
    signed_by: str
    signer_name: str
    signed_at: dt.datetime
    record_sha256: str
    current_sha256: str
    valid: bool = Field(description="Whether the visit's data still match what was signed.")
    invalidated_at: dt.datetime | None
    invalidated_reason: str | None
    manifestation: str


@router.get("/subjects/{subject_id}/calendar", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       **_document("The calendar from the actual randomization date: each visit's target date, "
                                   "window, status (scheduled, due, overdue, missed, done, cancelled, pending) "
                                   "and any deviation.")})
def calendar(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """A randomized subject's visit calendar on today's date."""
    found = visits.subject_calendar(context.uow(), actor, subject_id, today=today(context))
    return jsonable(found.to_dict())  # type: ignore[no-any-return]


@router.get("/subjects/{subject_id}/calendar.ics", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       200: {"description": "The calendar as an iCalendar file (RFC 5545); only the subject code "
                                            "appears in it.", "content": {"text/calendar": {}}}})
def calendar_ics(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> Response:
    """The subject's visit calendar as an iCalendar file for the site's calendar program."""
    text = visits.calendar_ics(context.uow(), actor, subject_id, today=today(context), generated_at=now(context))
    return Response(text.encode("utf-8"), media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="subject-{subject_id}.ics"'})


@router.get("/sites/{site_code}/visits-due", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 404, 422),
                       **_document("The site's visits due this week (window open now or within six days), "
                                   "overdue and missed.")})
def visits_due(site_code: SiteCode, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """A site's worklist for this week."""
    return jsonable(visits.visits_due(context.uow(), actor, site_code, today=today(context)).to_dict())  # type: ignore[no-any-return]


@router.post("/subjects/{subject_id}/visits/{visit}", response_model=VisitOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def record_visit(subject_id: SubjectId, visit: VisitLabel, body: VisitRecordIn, actor: ActorDep,
                 context: ContextDep) -> VisitOut:
    """Record a visit as done on a date, or as missed; changing what was recorded needs a reason."""
    view = visits.record_visit(context.uow(), actor, subject_id, visit, today=today(context), on_date=body.date,
                               missed=body.missed, reason=body.reason)
    return VisitOut.model_validate(view, from_attributes=True)


@router.get("/subjects/{subject_id}/visits/{visit}", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       **_document("The visit's status and date and each stored form with its values as they "
                                   "would be submitted again.")})
def visit_values(subject_id: SubjectId, visit: VisitLabel, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """What is stored for one visit."""
    return jsonable(visit_data.visit_values(context.uow(), actor, subject_id, visit))  # type: ignore[no-any-return]


@router.post("/subjects/{subject_id}/visits/{visit}/data", response_model=dict[str, Any],
             responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                        **_document("Per form the values created, changed and removed, each finding (soft limit or "
                                    "edit check, which opened a query), and what followed: deviations, signatures "
                                    "invalidated, lab-safety proposals, end of treatment.")})
def enter_data(subject_id: SubjectId, visit: VisitLabel, body: VisitDataIn, actor: ActorDep,
               context: ContextDep) -> Response:
    """Enter or correct the values of a visit's forms. Everything is checked first: a value outside its
    hard limits or in a unit the item does not take is refused (422, each item named) and nothing is stored."""
    complete = tuple(body.complete) if isinstance(body.complete, list) else body.complete
    entry = data_entry.enter_visit_data(context.uow(), actor, subject_id, visit, body.forms, today=today(context),
                                        visit_date=body.date, complete=complete, reason=body.reason)
    # The busiest write of a site (lab imports): the answer is plain JSON already, so it is sent as
    # it is rather than validated again against the open ``dict`` the schema documents.
    return JSONResponse(jsonable(entry.to_dict()))


@router.get("/subjects/{subject_id}/visits/{visit}/signatures", response_model=list[SignatureOut],
            responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def list_signatures(subject_id: SubjectId, visit: VisitLabel, actor: ActorDep, context: ContextDep) -> list[SignatureOut]:
    """A visit's signatures, each checked against the visit's data as they are now."""
    views = signatures.visit_signatures(context.uow(), actor, subject_id, visit)
    return [SignatureOut.model_validate(view.to_dict()) for view in views]


@router.post("/subjects/{subject_id}/visits/{visit}/signatures", status_code=201, response_model=SignatureOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def sign(subject_id: SubjectId, visit: VisitLabel, body: SignIn, actor: ActorDep, context: ContextDep) -> SignatureOut:
    """The investigator signs every form of a visit, giving their password again (a wrong one is 401 and
    is recorded). Refused while a form is incomplete, or when nothing changed since the last signature."""
    view = signatures.sign_visit(context.uow(), actor, subject_id, visit, password=body.password, meaning=body.meaning)
    return SignatureOut.model_validate(view.to_dict())


@router.get("/subjects/{subject_id}/labs", response_model=list[dict[str, Any]],
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       **_document("The latest value of every lab item with a LOINC code.")})
def latest_labs(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> list[dict[str, Any]]:
    """The subject's latest lab values."""
    return jsonable(visit_data.latest_labs(context.uow(), actor, subject_id))  # type: ignore[no-any-return]


@router.get("/subjects/{subject_id}/cmv-dna", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 404, 409, 422),
                       **_document("The CMV-DNA results in the assay's primary unit, each judged negative or not, "
                                   "with the limit of quantification and the end of treatment.")})
def cmv_dna(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """The subject's CMV-DNA results over time."""
    return jsonable(visit_data.cmv_series(context.uow(), actor, subject_id))  # type: ignore[no-any-return]
