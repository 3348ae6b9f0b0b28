"""A subject's data, shaped like CDISC ODM (subject → study event → form instance → item value), and
what randomization and dosing record for the subject."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cmvtrial.store.tables.base import BOOKKEEPING, WITHHELD, Base, UtcDateTime


class Subject(Base):
    """A candidate from screening on; keeps the protocol version it was enrolled under (an amendment
    is a new version, DESIGN.md §2). status: screening | screen_failed | eligible | randomized |
    on_treatment | in_follow_up | completed | withdrawn | lost_to_follow_up | died.
    ``end_of_treatment_date`` is the date of the CMV-DNA result that met the protocol's stop rule
    (services/data_entry.py), with why. ``end_of_study_date`` is the day the subject left the trial
    (a withdrawal) or completed it (the final visit), ``end_of_study_reason`` the core/disposition.py
    code (``completed``, ``withdrew_consent``, …) and ``end_of_study_details`` the words that go with
    it (services/end_of_study.py). ``row_version`` counts the write transactions that locked the
    subject (store/repositories.py ``SubjectRepository.locked``): every use case that changes a
    subject's data locks the subject first, so an unchanged count proves that nothing of the
    subject changed in between (services/data_entry.py plans an entry before it takes the write
    lock and checks the count when it has it)."""

    __tablename__ = "subjects"
    __audit_entity__ = "subject"
    __table_args__ = (UniqueConstraint("site_id", "screening_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    screening_number: Mapped[str] = mapped_column(String(32))
    subject_number: Mapped[str | None] = mapped_column(String(32), unique=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    status: Mapped[str] = mapped_column(String(32), default="screening")
    eligibility: Mapped[str | None] = mapped_column(String(16))  # eligible | not_eligible | undetermined
    screen_failure_reasons: Mapped[Any | None] = mapped_column(JSON)
    consent_date: Mapped[date | None] = mapped_column(Date)
    end_of_treatment_date: Mapped[date | None] = mapped_column(Date)
    end_of_treatment_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_of_study_date: Mapped[date | None] = mapped_column(Date)
    end_of_study_reason: Mapped[str | None] = mapped_column(String(32))
    end_of_study_details: Mapped[str | None] = mapped_column(Text)
    row_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0", info=BOOKKEEPING)


class StudyEvent(Base):
    """A visit of the protocol's plan for one subject (ODM StudyEventData); repeating visits such as
    the weekly treatment visit are told apart by ``repeat_index``. status: planned | done | missed |
    cancelled (a treatment visit after end of treatment) | not_applicable. ``deviation`` says why a
    visit done outside its window is a protocol deviation (kept and flagged, never refused)."""

    __tablename__ = "study_events"
    __audit_entity__ = "study_event"
    __table_args__ = (UniqueConstraint("subject_id", "visit_code", "repeat_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    visit_code: Mapped[str] = mapped_column(String(32))
    repeat_index: Mapped[int] = mapped_column(Integer, default=0)
    target_date: Mapped[date | None] = mapped_column(Date)
    window_start: Mapped[date | None] = mapped_column(Date)
    window_end: Mapped[date | None] = mapped_column(Date)
    actual_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="planned")
    deviation: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class FormInstance(Base):
    """One protocol form filled at one study event (ODM FormData). status: in_progress | complete |
    verified | signed | locked."""

    __tablename__ = "form_instances"
    __audit_entity__ = "form_instance"
    __table_args__ = (UniqueConstraint("study_event_id", "form_id", "form_repeat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_event_id: Mapped[int] = mapped_column(ForeignKey("study_events.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    form_id: Mapped[str] = mapped_column(String(64))
    form_repeat: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ItemValue(Base):
    """The current value of one item (ODM ItemData); its history is in the audit trail.

    ``item_id`` is the protocol's item id, dotted inside a group (``corticosteroid.drug``);
    ``entered_value``/``entered_unit`` are what the user or interface gave, ``normalized_number``
    (quantities, integers) or ``normalized_text`` (codes, dates, text; code lists as JSON) with
    ``normalized_unit`` are what rules use. A NULL entered value with ``missing_reason`` records
    "not done" explicitly. source: manual | fhir | import.
    """

    __tablename__ = "form_data"
    __audit_entity__ = "item_value"
    __table_args__ = (UniqueConstraint("form_instance_id", "item_id", "item_group_repeat"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    form_instance_id: Mapped[int] = mapped_column(ForeignKey("form_instances.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), index=True)
    item_id: Mapped[str] = mapped_column(String(128))
    item_group_repeat: Mapped[int] = mapped_column(Integer, default=0)
    value_type: Mapped[str] = mapped_column(String(16))
    entered_value: Mapped[str | None] = mapped_column(Text)
    entered_unit: Mapped[str | None] = mapped_column(String(32))
    normalized_number: Mapped[float | None] = mapped_column(Float)
    normalized_text: Mapped[str | None] = mapped_column(Text)
    normalized_unit: Mapped[str | None] = mapped_column(String(32))
    missing_reason: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="manual")
    version: Mapped[int] = mapped_column(Integer, default=1)
    entered_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RandomizationScheme(Base):
    """How one protocol version randomizes: the method and the secret seed its lists come from.
    The seed's SHA-256 is committed in the audit trail before the first allocation. The seed itself
    is stored only sealed (AES-256-GCM under CMVTRIAL_SECRET_KEY, services/sealing.py), so a copy of
    the database or of a backup does not reveal the lists."""

    __tablename__ = "randomization_schemes"
    __audit_entity__ = "randomization_scheme"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"), unique=True)
    method: Mapped[str] = mapped_column(String(32))
    sealed_seed: Mapped[str] = mapped_column(String(255), info=WITHHELD)
    seed_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


class RandomizationListEntry(Base):
    """One position of a stratum's list; the unique key means a position exists once."""

    __tablename__ = "randomization_list_entries"
    __audit_entity__ = "randomization_list_entry"
    __table_args__ = (UniqueConstraint("scheme_id", "stratum", "sequence"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheme_id: Mapped[int] = mapped_column(ForeignKey("randomization_schemes.id"))
    stratum: Mapped[str] = mapped_column(String(200))
    sequence: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(Integer)
    block_size: Mapped[int] = mapped_column(Integer)
    arm_id: Mapped[str] = mapped_column(String(64))


class Allocation(Base):
    """A subject's arm. Unique on the subject (never allocated twice) and on the list position
    (never used twice); minimization has no list position and keeps its draw in ``details``."""

    __tablename__ = "allocations"
    __audit_entity__ = "allocation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"), unique=True)
    scheme_id: Mapped[int] = mapped_column(ForeignKey("randomization_schemes.id"))
    list_entry_id: Mapped[int | None] = mapped_column(ForeignKey("randomization_list_entries.id"), unique=True)
    stratum: Mapped[str] = mapped_column(String(200))
    arm_id: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32))
    details: Mapped[Any | None] = mapped_column(JSON)
    allocated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    allocated_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


class DoseAdministration(Base):
    """A dose given, held or missed (drug, dose, unit, route, date, reason; DESIGN.md §3 step 4).
    ``basis`` keeps the inputs the dose was computed from (weight, creatinine clearance, counts);
    ``given_by`` names who gave it, ``findings`` what was flagged (an off-schedule day, a changed
    dose). status: given | held | missed."""

    __tablename__ = "dose_administrations"
    __audit_entity__ = "dose_administration"
    __table_args__ = (Index("ix_dose_administrations_subject_day", "subject_id", "administered_on"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subjects.id"))
    study_event_id: Mapped[int | None] = mapped_column(ForeignKey("study_events.id"))
    drug: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="given")
    planned_dose: Mapped[float | None] = mapped_column(Float)
    dose: Mapped[float | None] = mapped_column(Float)
    dose_unit: Mapped[str] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(32))
    administered_on: Mapped[date] = mapped_column(Date)
    administered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    basis: Mapped[Any | None] = mapped_column(JSON)
    given_by: Mapped[str | None] = mapped_column(String(200))
    findings: Mapped[Any | None] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
