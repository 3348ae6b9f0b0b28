"""The trial as a whole: health, status, and the protocol in force."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import HealthOut, SiteOut, TrialStatusOut
from cmvtrial.services import trial_setup
from cmvtrial.services.protocol_in_force import protocol_in_force

router = APIRouter(tags=["trial"])


@router.get("/health", response_model=HealthOut)
def health() -> HealthOut:
    """Whether the server answers (no sign-in needed; says nothing about the trial)."""
    return HealthOut(status="ok")


@router.get("/trial", response_model=TrialStatusOut, responses=problem_responses(*AUTHENTICATED))
def status(actor: ActorDep, context: ContextDep) -> TrialStatusOut:
    """The protocol in force and counts of sites, users, subjects (your site's) and audit events."""
    info = trial_setup.trial_status(context.uow(), actor)
    return TrialStatusOut(
        protocol_id=info.protocol_id,
        protocol_version=info.protocol_version,
        title=info.title,
        sha256=info.sha256,
        initialised_at=info.initialised_at,
        sites=[SiteOut.model_validate(site, from_attributes=True) for site in info.sites],
        users_by_role=info.users_by_role,
        subjects_by_status=info.subjects_by_status,
        audit_events=info.audit_events,
    )


@router.get(
    "/protocol",
    response_model=dict[str, Any],
    responses={
        **problem_responses(*AUTHENTICATED),
        200: {"description": "The protocol in force, in the shape of docs/protocol-format.md (JSON)."},
    },
)
def protocol(actor: ActorDep, context: ContextDep) -> dict[str, Any]:
    """The protocol this trial runs under, as stored at `cmvtrial init` (arms, criteria, visits,
    forms, endpoints; units as UCUM codes)."""
    current = protocol_in_force(context.uow(), actor)
    return {"sha256": current.sha256, **current.protocol.model_dump(mode="json")}
