"""Writing the audit trail: one hash-chained event per change, in the same transaction as the change.

Because the event is written in the change's own transaction, a change without its event (or an
event without its change) can never be committed: both commit or both roll back. The next sequence
number and the previous hash are taken from the chain head row *under a lock*, so two concurrent
transactions cannot both extend the chain from the same event (which would fork it): on PostgreSQL
the head is read with SELECT … FOR UPDATE, on SQLite the write transaction began with BEGIN
IMMEDIATE and already holds the database's only write lock.

What goes in: who (user id and name), when (UTC), what (action, entity type and id, the site), the
values before and after as canonical JSON (secrets such as password hashes withheld), and the
reason (21 CFR 11.10(e); ICH E6(R3) §4.2.2; reference/standards.md P11-05, E6-05, A11-07).

Why events are written at commit and not one by one: a use case such as entering a visit records
several events; each is numbered and hashed when it is recorded (the chain head is locked and read
once per transaction), and all of them go to the database in one multi-row INSERT with one update of
the head just before the commit (``write_pending``), which is what makes a busy site's writes cheap
(docs/benchmarks.md, "Lab values through the API"). A query on the audit tables inside the same
transaction writes the pending events first, so the transaction always reads its own events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import ORMExecuteState, Session

from cmvtrial.core.audit_chain import canonical_json, event_hash
from cmvtrial.services.permissions import Actor
from cmvtrial.store.tables import AuditChainHead, AuditEvent, Base, Site

Entity = Base | tuple[str, object]
#: The name recorded when nobody is signed in (e.g. a sign-in attempt with an unknown name).
ANONYMOUS = "(anonymous)"
_FROM_ENTITY = object()
#: Key in a session's ``info``: the audit recorder of the unit of work that opened it.
_RECORDER = "cmvtrial_audit_recorder"


def snapshot(value: Any) -> dict[str, Any] | None:
    """The audit view of a value: a mapped row's columns (minus withheld ones), a mapping, a
    dataclass or a pydantic model, as plain data."""
    if value is None:
        return None
    if isinstance(value, Base):
        return {key: getattr(value, key) for key in _audited_columns(type(value))}
    if isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot audit a {type(value).__name__}; pass a row, a mapping, a dataclass or a model")


@cache
def _audited_columns(table: type[Base]) -> tuple[str, ...]:
    """A mapped class's column attributes the trail shows (all but the withheld ones), in order."""
    return tuple(column.key for column in sa_inspect(table).column_attrs
                 if column.columns[0].info.get("audit") != "withheld")


_CHAIN_HEAD = AuditChainHead.__table__
_LOCK_CHAIN_HEAD = (select(_CHAIN_HEAD.c.last_sequence, _CHAIN_HEAD.c.last_hash).where(_CHAIN_HEAD.c.id == 1)
                    .with_for_update())
_MOVE_CHAIN_HEAD = (update(_CHAIN_HEAD).where(_CHAIN_HEAD.c.id == 1)
                    .values(last_sequence=bindparam("sequence"), last_hash=bindparam("hash")))


class AuditRecorder:
    """``uow.audit``: records events in the unit of work's transaction."""

    def __init__(self, session: Session, clock: Callable[[], datetime]) -> None:
        self.session = session
        self.clock = clock
        #: The chain's newest (sequence, hash), as this transaction has extended it.
        self._head: tuple[int, str] | None = None
        self._pending: list[dict[str, Any]] = []
        self.read_only = False
        session.info[_RECORDER] = self

    def record(
        self,
        actor: Actor | None,
        action: str,
        entity: Entity,
        *,
        before: Any = None,
        after: Any = None,
        reason: str | None = None,
        site_id: Any = _FROM_ENTITY,
    ) -> None:
        """Append one event for ``action`` on ``entity`` (a mapped row, or ``(type, id)``).

        ``actor`` None records an anonymous event (only sign-in attempts have no actor).

        ``site_id`` defaults to the entity's site (a site's own id, or its ``site_id`` column), so
        audit review can be filtered per site.
        """
        if self.read_only:
            raise RuntimeError("a read-only unit of work cannot write audit events")
        entity_type, entity_id = self._identify(entity)
        if site_id is _FROM_ENTITY:
            site_id = self._site_of(entity)
        last_sequence, last_hash = self._lock_head()
        moment = self.clock()
        fields: dict[str, Any] = {
            "sequence": last_sequence + 1,
            "occurred_at": moment,
            "user_id": actor.user_id if actor is not None else None,
            "username": actor.username if actor is not None else ANONYMOUS,
            "site_id": site_id,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "before": _json_or_none(snapshot(before)),
            "after": _json_or_none(snapshot(after)),
            "reason": reason,
        }
        digest = event_hash(last_hash, fields)
        self._pending.append({**fields, "previous_hash": last_hash, "hash": digest})
        self._head = (fields["sequence"], digest)

    def write_pending(self) -> None:
        """Write the events recorded since the last call and move the chain head to the newest."""
        if not self._pending or self._head is None:
            return
        rows, self._pending = self._pending, []
        connection = self.session.connection()
        connection.execute(AuditEvent.__table__.insert(), rows)
        connection.execute(_MOVE_CHAIN_HEAD, {"sequence": self._head[0], "hash": self._head[1]})

    def has_pending(self) -> bool:
        """Whether this transaction recorded events or read the chain head (both belong to the
        transaction that writes them)."""
        return bool(self._pending) or self._head is not None

    def discard(self) -> None:
        """Forget the events not yet written (the transaction is being rolled back)."""
        self._pending, self._head = [], None

    def _lock_head(self) -> tuple[int, str]:
        """The head, read once per transaction under a lock (SELECT … FOR UPDATE on PostgreSQL; on
        SQLite the write transaction's BEGIN IMMEDIATE already holds the only write lock)."""
        if self._head is None:
            # Through the connection: a Core read needs no autoflush of the caller's pending changes.
            row = self.session.connection().execute(_LOCK_CHAIN_HEAD).one_or_none()
            if row is None:
                raise RuntimeError("the audit chain head row is missing; the database was not migrated by cmvtrial")
            self._head = (int(row[0]), str(row[1]))
        return self._head


    def _identify(self, entity: Entity) -> tuple[str, str]:
        if isinstance(entity, tuple):
            entity_type, entity_id = entity
            return str(entity_type), str(entity_id)
        identity = sa_inspect(entity).identity
        if identity is None:
            self.session.flush()
            identity = sa_inspect(entity).identity
        if identity is None:
            raise RuntimeError(f"{entity!r} has no primary key; add it to the session first")
        kind = entity.__audit_entity__ or type(entity).__tablename__
        return kind, "/".join(str(part) for part in identity)

    @staticmethod
    def _site_of(entity: Entity) -> int | None:
        if isinstance(entity, Site):
            return entity.id
        site_id = getattr(entity, "site_id", None)
        return site_id if isinstance(site_id, int) else None


@sa_event.listens_for(Session, "do_orm_execute")
def _before_reading_the_trail(state: ORMExecuteState) -> None:
    """A query of the audit tables inside a transaction first writes the events it has recorded."""
    recorder = state.session.info.get(_RECORDER)
    if recorder is not None and recorder._pending and any(
            mapper.class_ in (AuditEvent, AuditChainHead) for mapper in state.all_mappers):
        recorder.write_pending()


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return None if value is None else canonical_json(value)
