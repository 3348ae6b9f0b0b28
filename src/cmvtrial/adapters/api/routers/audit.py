"""The audit trail: the newest events and a verification of the whole hash chain."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import AuditEventOut, VerificationOut
from cmvtrial.services.audit_verification import recent_events, verify_audit

router = APIRouter(tags=["audit"])


@router.get("/audit/events", response_model=list[AuditEventOut], responses=problem_responses(*AUTHENTICATED, 422))
def events(
    actor: ActorDep,
    context: ContextDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="How many of the newest events.")] = 20,
) -> list[AuditEventOut]:
    """The newest events, newest first (site users: their site's)."""
    return [
        AuditEventOut(
            sequence=event.sequence, occurred_at=event.occurred_at, username=event.username, action=event.action,
            entity_type=event.entity_type, entity_id=event.entity_id, site_id=event.site_id,
            before=json.loads(event.before) if event.before else None,
            after=json.loads(event.after) if event.after else None,
            reason=event.reason, hash=event.hash,
        )
        for event in recent_events(context.uow(), actor, limit)
    ]


@router.get("/audit/verification", response_model=VerificationOut, responses=problem_responses(*AUTHENTICATED))
def verification(actor: ActorDep, context: ContextDep) -> VerificationOut:
    """Recompute the hash chain: ``ok`` false names the first broken event."""
    result = verify_audit(context.uow(), actor)
    return VerificationOut(
        ok=result.ok, count=result.count, first_broken_sequence=result.first_broken_sequence,
        reason=result.reason, last_hash=result.last_hash,
    )
