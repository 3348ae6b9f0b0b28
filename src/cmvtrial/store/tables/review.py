"""Review of the data: queries on stored values and electronic signatures of visits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cmvtrial.store.tables.base import Base, UtcDateTime


class Query(Base):
    """A data query on a subject, a form or one item value, raised by an edit check or by a person.
    status: open | answered | closed."""

    __tablename__ = "queries"
    __audit_entity__ = "query"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    form_instance_id: Mapped[int | None] = mapped_column(ForeignKey("form_instances.id"))
    item_value_id: Mapped[int | None] = mapped_column(ForeignKey("form_data.id"))
    edit_check_id: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16))  # edit_check | manual
    status: Mapped[str] = mapped_column(String(16), default="open")
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime)
    opened_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    answered_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Signature(Base):
    """An electronic signature: who, when, what it means, and the SHA-256 of the record version
    signed, so a later change visibly invalidates it (21 CFR 11.50 and 11.70, reference/standards.md
    P11-13/P11-14). An investigator signs a whole visit (``study_event_id``) or one form."""

    __tablename__ = "signatures"
    __audit_entity__ = "signature"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    study_event_id: Mapped[int | None] = mapped_column(ForeignKey("study_events.id"))
    form_instance_id: Mapped[int | None] = mapped_column(ForeignKey("form_instances.id"))
    meaning: Mapped[str] = mapped_column(String(32))  # review | approval | responsibility | authorship
    record_sha256: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    signed_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    invalidated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    invalidated_reason: Mapped[str | None] = mapped_column(Text)
