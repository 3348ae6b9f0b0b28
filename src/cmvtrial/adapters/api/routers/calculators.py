"""Calculators on the protocol in force: eligibility of a screening record, CTCAE grade of a lab
value. They store nothing; registering and screening a subject is the screening service's job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import SCREENING_RECORD_EXAMPLE, EligibilityOut, GradeIn, GradeOut
from cmvtrial.services.protocol_in_force import check_eligibility, grade_lab_value

router = APIRouter(tags=["calculators"])


@router.post("/eligibility/check", response_model=EligibilityOut, responses=problem_responses(*AUTHENTICATED, 422))
def eligibility_check(
    record: Annotated[
        dict[str, Any],
        Body(description="A screening record (docs/screening-record.md); absent keys are unknown.",
             examples=[SCREENING_RECORD_EXAMPLE]),
    ],
    actor: ActorDep,
    context: ContextDep,
) -> dict[str, object]:
    """Every criterion met, not met or unknown, and the verdict: eligible, not eligible, or
    undetermined (null). Units must be explicit; a bad value is refused naming its field."""
    return check_eligibility(context.uow(), actor, record).to_dict()


@router.post("/ctcae/grade", response_model=GradeOut, responses=problem_responses(*AUTHENTICATED, 422))
def ctcae_grade(body: GradeIn, actor: ActorDep) -> dict[str, Any]:
    """The CTCAE v5.0 grade of one lab value, with the wording that decided it."""
    result = grade_lab_value(
        actor, body.term, body.value, body.unit, lln=body.lln, uln=body.uln, baseline=body.baseline
    )
    return result.to_dict()
