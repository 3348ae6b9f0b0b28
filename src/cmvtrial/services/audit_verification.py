"""Checking and reading the audit trail: `cmvtrial audit verify` and `cmvtrial audit log`.

Verification re-reads every stored event in sequence order (streamed, so a long trail does not fill
memory), recomputes the hash chain in core/audit_chain.py and compares its end with the chain head
the application last wrote. It answers whether the trail is intact and, if not, the first event
where it stops matching (21 CFR 11.10(a): "ability to discern invalid or altered records").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cmvtrial.core.audit_chain import ChainedEvent, ChainHead, VerificationResult, verify_chain
from cmvtrial.errors import InvalidInput
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AuditEvent


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event as the audit log shows it."""

    sequence: int
    occurred_at: datetime
    username: str
    action: str
    entity_type: str
    entity_id: str
    site_id: int | None
    before: str | None
    after: str | None
    reason: str | None
    hash: str


def verify_audit(uow: UnitOfWork, actor: Actor | None = None) -> VerificationResult:
    """Verify the whole trail. ``actor`` None is the operator holding the database (the CLI)."""
    if actor is not None:
        permissions.require(actor, "audit.verify")
    with uow.reading():
        head = uow.audit_events.head()
        result = verify_chain(
            (_chained(event) for event in uow.audit_events.in_order()),
            ChainHead(head.last_sequence, head.last_hash) if head is not None else None,
        )
    if head is None and result.ok:
        return VerificationResult(
            ok=False,
            count=result.count,
            first_broken_sequence=result.count or None,
            reason="the audit chain head row was removed, so the end of the trail cannot be checked",
        )
    return result


def recent_events(uow: UnitOfWork, actor: Actor, limit: int = 20) -> list[AuditEntry]:
    """The newest ``limit`` events, newest first; site users see their own site's events only."""
    permissions.require(actor, "audit.read")
    if limit < 1:
        raise InvalidInput("limit must be at least 1", field="limit", value=limit)
    with uow.reading():
        events = uow.audit_events.latest(limit, site_id=actor.site_id)
        return [_entry(event) for event in events]


def _chained(event: AuditEvent) -> ChainedEvent:
    return ChainedEvent(
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        user_id=event.user_id,
        username=event.username,
        site_id=event.site_id,
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        before=event.before,
        after=event.after,
        reason=event.reason,
        previous_hash=event.previous_hash,
        hash=event.hash,
    )


def _entry(event: AuditEvent) -> AuditEntry:
    return AuditEntry(
        sequence=event.sequence,
        occurred_at=event.occurred_at,
        username=event.username,
        action=event.action,
        entity_type=event.entity_type,
        entity_id=event.entity_id,
        site_id=event.site_id,
        before=event.before,
        after=event.after,
        reason=event.reason,
        hash=event.hash,
    )
