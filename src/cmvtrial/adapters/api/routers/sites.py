"""Trial sites: list and register."""

from __future__ import annotations

from fastapi import APIRouter

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import SiteIn, SiteOut
from cmvtrial.services import trial_setup

router = APIRouter(tags=["sites"])


@router.get("/sites", response_model=list[SiteOut], responses=problem_responses(*AUTHENTICATED))
def list_sites(actor: ActorDep, context: ContextDep) -> list[SiteOut]:
    """The sites you work for (all of them for sponsor staff)."""
    return [SiteOut.model_validate(site, from_attributes=True) for site in trial_setup.list_sites(context.uow(), actor)]


@router.post(
    "/sites", status_code=201, response_model=SiteOut, responses=problem_responses(*AUTHENTICATED, 409, 422)
)
def add_site(body: SiteIn, actor: ActorDep, context: ContextDep) -> SiteOut:
    """Register a site (admins)."""
    site = trial_setup.add_site(context.uow(), actor, body.code, body.name, reason=body.reason)
    return SiteOut.model_validate(site, from_attributes=True)
