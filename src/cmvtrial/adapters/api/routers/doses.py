"""Study-drug administrations: record a dose given, held or missed, and list a subject's doses."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import SubjectId, today
from cmvtrial.services import dosing_records

router = APIRouter(tags=["doses"])


class DoseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"drug": "ganciclovir", "status": "given", "dose": 290, "unit": "mg", "route": "intravenous",
         "date": "2025-03-10", "given_by": "nurse Liu", "basis": {"weight_kg": 58.5, "crcl_ml_min": 96}},
        {"drug": "ganciclovir", "status": "held", "date": "2025-03-11", "reason": "ANC 0.4 x 10^9/L"}]})

    drug: str = Field(max_length=100, description="The protocol's drug name (ganciclovir, interleukin-2).")
    status: Literal["given", "held", "missed"] = "given"
    dose: float | None = Field(None, allow_inf_nan=False)
    unit: str | None = Field(None, max_length=32)
    route: str | None = Field(None, max_length=64)
    date: dt.date | None = Field(None, description="Give the date, or the time with its zone.")
    time: dt.datetime | None = None
    given_by: str | None = Field(None, max_length=200)
    reason: str | None = Field(None, max_length=2000, description="Why it was held or missed (required then).")
    visit: str | None = Field(None, max_length=16, description="The visit it belongs to, if any (TW3).")
    basis: dict[str, float] | None = Field(None, description="weight_kg and crcl_ml_min the dose was computed from.")


class DoseOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 12, "subject_id": 7, "subject": "PKUPH-001", "drug": "ganciclovir", "status": "given", "dose": 290.0,
        "unit": "mg", "planned_dose": 290.0, "route": "intravenous", "date": "2025-03-10", "time": None,
        "study_day": 7, "given_by": "nurse Liu", "reason": None, "findings": [], "visit": None,
        "recorded_by": "li.wei", "recorded_at": "2025-03-10T09:30:00Z"}]})

    id: int
    subject_id: int
    subject: str
    drug: str
    status: str
    dose: float | None
    unit: str | None
    planned_dose: float | None = Field(description="The protocol's dose on the recorded basis.")
    route: str | None
    date: dt.date
    time: dt.datetime | None
    study_day: int
    given_by: str | None
    reason: str | None
    findings: list[str] = Field(description="What was flagged (a dose far from the protocol's, a route it does not use).")
    visit: str | None
    recorded_by: str
    recorded_at: dt.datetime


def _out(view: dosing_records.AdministrationView) -> DoseOut:
    return DoseOut.model_validate(view.to_dict())


@router.post("/subjects/{subject_id}/doses", status_code=201, response_model=DoseOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def record_dose(subject_id: SubjectId, body: DoseIn, actor: ActorDep, context: ContextDep) -> DoseOut:
    """Record a dose given, held or missed; a drug the subject's arm does not get, a dose after the end
    of treatment, or a second record of a once-daily dose on the same day is refused."""
    data = body.model_dump(mode="json", exclude_none=True)
    record = dosing_records.parse_administration(data)
    return _out(dosing_records.record_administration(context.uow(), actor, subject_id, record, today=today(context)))


@router.get("/subjects/{subject_id}/doses", response_model=list[DoseOut],
            responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def list_doses(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> list[DoseOut]:
    """A subject's administrations, holds and missed doses, in date order."""
    return [_out(view) for view in dosing_records.list_administrations(context.uow(), actor, subject_id)]
