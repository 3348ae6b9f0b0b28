"""Randomization: allocate a subject (site staff), the balance (unblinded central roles), the list
export with its secret seed (admins only), the scheme and its verification, enrollment by site."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import Reason, SubjectId, jsonable
from cmvtrial.services import enrollment, randomization_audit, randomizing

router = APIRouter(tags=["randomization"])
_TIME = "2025-03-03T09:00:00Z"


class RandomizeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": None}]})

    reason: str | None = Reason


class AllocationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "subject_id": 7, "subject_number": "PKUPH-001", "screening_number": "S-001", "site_code": "PKUPH",
        "arm": "il2_gcv", "arm_label": "Low-dose IL-2 + ganciclovir", "stratum": "site=PKUPH", "sequence": 1,
        "method": "permuted_blocks", "allocated_at": _TIME, "allocated_by": "li.wei"}]})

    subject_id: int
    subject_number: str
    screening_number: str
    site_code: str
    arm: str
    arm_label: str
    stratum: str
    sequence: int | None = Field(description="Position in the stratum's list (null under minimization).")
    method: str
    allocated_at: datetime
    allocated_by: str


class ExportIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"strata": ["site=PKUPH"], "n": 100, "reason": "sealed copy for the trial master file"}]})

    strata: list[str] | None = Field(None, max_length=1000, description="Strata to export; default every one.")
    n: int | None = Field(None, ge=1, le=randomization_audit.MAX_EXPORT_POSITIONS,
                          description="Positions per stratum; default the target enrollment.")
    reason: str | None = Reason


class SchemeOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 1, "protocol_id": "sle-cmv-il2", "protocol_version": "1.0", "method": "permuted_blocks",
        "seed_sha256": "9f2c…", "created_at": _TIME, "created": True, "allocations": 0}]})

    id: int
    protocol_id: str
    protocol_version: str
    method: str
    seed_sha256: str
    created_at: datetime
    created: bool
    allocations: int


class VerificationOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "ok": True, "scheme_exists": True, "seed_sha256": "9f2c…", "commitment_sequence": 14,
        "allocations_checked": 12, "strata_checked": 2, "problems": []}]})

    ok: bool
    scheme_exists: bool
    seed_sha256: str | None
    commitment_sequence: int | None
    allocations_checked: int
    strata_checked: int
    problems: list[str]


class SiteEnrollmentOut(BaseModel):
    site: str
    name: str
    screened: int
    randomized: int
    by_arm: dict[str, int]


class EnrollmentOut(BaseModel):
    """``arms`` and ``by_arm`` are empty when arm counts may not be shown to you (a masked trial)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "target": 100, "randomized": 3, "arms": {"il2_gcv": "Low-dose IL-2 + ganciclovir", "gcv": "Ganciclovir alone"},
        "by_arm": {"il2_gcv": 2, "gcv": 1},
        "sites": [{"site": "PKUPH", "name": "Peking University People's Hospital", "screened": 5, "randomized": 3,
                   "by_arm": {"il2_gcv": 2, "gcv": 1}}]}]})

    target: int
    randomized: int
    arms: dict[str, str]
    by_arm: dict[str, int]
    sites: list[SiteEnrollmentOut]


_DOCUMENT = {"description": "A JSON document (see the CLI's --json output of the same command)."}


@router.post("/subjects/{subject_id}/randomization", status_code=201, response_model=AllocationOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def randomize(subject_id: SubjectId, body: RandomizeIn, actor: ActorDep, context: ContextDep) -> AllocationOut:
    """Randomize an eligible, consented subject of your site; never twice (a second call is 409)."""
    allocation = randomizing.randomize_subject(context.uow(), actor, subject_id, reason=body.reason)
    return AllocationOut.model_validate(allocation, from_attributes=True)


@router.get("/randomization/balance", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED), 200: _DOCUMENT})
def balance(actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """Allocations per arm per stratum and overall, with the imbalance (admin, data manager, statistician)."""
    return jsonable(randomizing.balance(context.uow(), actor).to_dict())  # type: ignore[no-any-return]


@router.post("/randomization/export", response_model=dict[str, Any],
             responses={**problem_responses(*AUTHENTICATED, 404, 409, 422), 200: _DOCUMENT})
def export(body: ExportIn, actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """The randomization lists with the secret seed (admins only; the export is audited)."""
    found = randomization_audit.export_list(context.uow(), actor, strata=body.strata, n=body.n, reason=body.reason)
    return jsonable(found.to_dict())  # type: ignore[no-any-return]


@router.post("/randomization/scheme", response_model=SchemeOut,
             responses=problem_responses(*AUTHENTICATED, 409, 422))
def setup_scheme(body: RandomizeIn, actor: ActorDep, context: ContextDep) -> SchemeOut:
    """Create the scheme and its secret seed (admins, at go-live; else it is made on first use).
    Running it again only shows the existing scheme; ``seed_sha256`` is the published commitment."""
    scheme = randomizing.setup_scheme(context.uow(), actor, reason=body.reason)
    return SchemeOut.model_validate(scheme, from_attributes=True)


@router.get("/randomization/verification", response_model=VerificationOut,
            responses=problem_responses(*AUTHENTICATED))
def verification(actor: ActorDep, context: ContextDep) -> VerificationOut:
    """Recompute every list position, allocation and minimization decision from the seed."""
    check = randomization_audit.verify_randomization(context.uow(), actor)
    return VerificationOut(ok=check.ok, scheme_exists=check.scheme_exists, seed_sha256=check.seed_sha256,
                           commitment_sequence=check.commitment_sequence,
                           allocations_checked=check.allocations_checked, strata_checked=check.strata_checked,
                           problems=list(check.problems))


@router.get("/enrollment", response_model=EnrollmentOut, responses=problem_responses(*AUTHENTICATED))
def enrollment_(actor: ActorDep, context: ContextDep) -> EnrollmentOut:
    """Randomized subjects against the target, by site (yours, or all) and, where arms may be shown, by arm."""
    return EnrollmentOut.model_validate(enrollment.enrollment(context.uow(), actor).to_dict())
