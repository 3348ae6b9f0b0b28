"""Adverse events and the lab-grade proposals the investigator confirms or dismisses."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Date, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cmvtrial.store.tables.base import Base, UtcDateTime


class AdverseEvent(Base):
    """An adverse event with its CTCAE v5 term and grade, seriousness, relatedness and outcome.

    ``term`` is the event's name (the CTCAE term, or free text); ``ctcae_term`` repeats it only when
    it is a CTCAE term (NULL for free text awaiting coding). ``drug_assessments`` holds, per study
    drug, ``{drug, relatedness, action_taken}`` (issue 5: IL-2 and ganciclovir separately).
    ``findings`` are the soft edit-check findings of the current version. The ``sae_report_*``
    columns record the expedited report of a serious event (one initial report per event).
    """

    __tablename__ = "adverse_events"
    __audit_entity__ = "adverse_event"
    __table_args__ = (
        UniqueConstraint("subject_id", "ae_number"),
        CheckConstraint("ctcae_grade IS NULL OR (ctcae_grade BETWEEN 1 AND 5)", name="ctcae_grade"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    ae_number: Mapped[int] = mapped_column(Integer)
    term: Mapped[str] = mapped_column(String(200))
    verbatim_term: Mapped[str] = mapped_column(Text)
    ctcae_term: Mapped[str | None] = mapped_column(String(200))
    meddra_code: Mapped[str | None] = mapped_column(String(8))
    ctcae_version: Mapped[str | None] = mapped_column(String(8))
    ctcae_grade: Mapped[int | None] = mapped_column(Integer)
    grade_text: Mapped[str | None] = mapped_column(Text)
    serious: Mapped[bool] = mapped_column(Boolean, default=False)
    seriousness_criteria: Mapped[Any | None] = mapped_column(JSON)
    awareness_time: Mapped[datetime | None] = mapped_column(UtcDateTime)
    drug_assessments: Mapped[Any | None] = mapped_column(JSON)
    outcome: Mapped[str | None] = mapped_column(String(32))
    onset_date: Mapped[date] = mapped_column(Date)
    resolution_date: Mapped[date | None] = mapped_column(Date)
    narrative: Mapped[str | None] = mapped_column(Text)
    findings: Mapped[Any | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | lab_grading
    sae_report_submitted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sae_report_submitted_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    sae_report_reference: Mapped[str | None] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class LabSafetyProposal(Base):
    """What a graded lab value proposes (a new AE, or a higher worst grade of an open one), waiting
    for the investigator to confirm or dismiss it: issue 5 says nothing is created silently.
    status: pending | confirmed | dismissed | superseded. ``grading`` keeps the grader's criterion
    and reasons, so the decision can be reviewed against what the investigator saw."""

    __tablename__ = "lab_safety_proposals"
    __audit_entity__ = "lab_safety_proposal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    item_value_id: Mapped[int | None] = mapped_column(ForeignKey("form_data.id"))
    action: Mapped[str] = mapped_column(String(16))  # new_event | raise_grade
    term: Mapped[str] = mapped_column(String(200))
    meddra_code: Mapped[str] = mapped_column(String(8))
    grade: Mapped[int] = mapped_column(Integer)
    grade_text: Mapped[str] = mapped_column(Text)
    current_grade: Mapped[int | None] = mapped_column(Integer)
    adverse_event_id: Mapped[int | None] = mapped_column(ForeignKey("adverse_events.id"))
    observed_on: Mapped[date] = mapped_column(Date)
    start_date: Mapped[date | None] = mapped_column(Date)
    loinc: Mapped[str | None] = mapped_column(String(16))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32))
    grading: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decision_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
