"""The audit trail page: the newest events, and verification of the whole chain on request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.web.rendering import render
from cmvtrial.adapters.web.routes.deps import PageActor
from cmvtrial.services.audit_verification import recent_events, verify_audit

router = APIRouter(include_in_schema=False)


@router.get("/audit")
def audit_page(
    request: Request,
    actor: PageActor,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    verify: bool = False,
) -> Response:
    events = recent_events(context.uow(), actor, limit)
    verification = verify_audit(context.uow(), actor) if verify else None
    return render(
        request, "audit.html", actor=actor, title="Audit trail", events=events, limit=limit,
        verification=verification,
    )
