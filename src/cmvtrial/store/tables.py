"""The trial database as SQLAlchemy 2 typed models; the Alembic migrations create exactly these.

Shape, following CDISC ODM (DESIGN.md §2 "Forms like CDISC ODM"): a subject has study events
(visits), a study event holds form instances, a form instance holds item values. Screening is a
study event like any other, so every value has the same path subject → event → form → item. An item
value keeps what was typed (value and unit) next to its normalized value and unit, who entered it,
when, and where it came from. Randomization, dosing, adverse events, queries and signatures hang off
the subject. Nothing here knows a trial's numbers: forms, items and visit codes are the protocol's ids.

Every time is stored in UTC (``UtcDateTime``) so the audit trail and the data say unambiguously when
(ICH E6(R3) §4.2.2(d)). Free-text statuses are listed in comments; the services own their meaning.

The audit trail (``audit_events`` + ``audit_chain_head``) has no foreign keys on purpose: it must be
readable on its own, never block a change it records, and outlive anything it mentions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: The roles of DESIGN.md §3 step 1; the services' permission table is keyed by these.
ROLES: tuple[str, ...] = ("admin", "investigator", "coordinator", "monitor", "data-manager", "statistician")

#: Column ``info`` marker: the value never goes into the audit trail (an Argon2 hash, a secret seed).
WITHHELD = {"audit": "withheld"}

# Explicit constraint names so migrations can drop what they create on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite has no time zones; it stores UTC naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("refusing a naive datetime: store times in UTC with a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    #: How the audit trail names this kind of entity (``entity_type``).
    __audit_entity__: str = ""


class Site(Base):
    __tablename__ = "sites"
    __audit_entity__ = "site"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class User(Base):
    """A person with one role, at one site or (site_id NULL) at all sites. Never deleted, only deactivated
    (an account is never re-assigned: 21 CFR 11.100(a), reference/standards.md P11-15)."""

    __tablename__ = "users"
    __audit_entity__ = "user"
    __table_args__ = (CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255), info=WITHHELD)
    role: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Sign-in refused until then after repeated failures (settings login_max_failures/login_lockout_minutes).
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProtocolVersion(Base):
    """A protocol file exactly as loaded: its text and SHA-256, so any later reading can be checked."""

    __tablename__ = "protocol_versions"
    __audit_entity__ = "protocol_version"
    __table_args__ = (UniqueConstraint("protocol_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    loaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Trial(Base):
    """The one trial this database runs (a single row) and the protocol version now in force."""

    __tablename__ = "trial"
    __audit_entity__ = "trial"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    initialised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    initialised_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Subject(Base):
    """A candidate from screening on; keeps the protocol version it was enrolled under (an amendment
    is a new version, DESIGN.md §2). status: screening | screen_failed | eligible | randomized |
    on_treatment | in_follow_up | completed | withdrawn | lost_to_follow_up | died.
    ``end_of_treatment_date`` is the date of the CMV-DNA result that met the protocol's stop rule
    (services/data_entry.py), with why. ``end_of_study_date`` is the day the subject left the trial
    (a withdrawal) or completed it (the final visit), ``end_of_study_reason`` the core/disposition.py
    code (``completed``, ``withdrew_consent``, …) and ``end_of_study_details`` the words that go with
    it (services/end_of_study.py)."""

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


class WebSession(Base):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored, so a copy
    of the database cannot be replayed as a session. A session ends at its absolute expiry, after a
    period without requests (checked against ``last_seen_at``), at logout, or when a new sign-in in
    the same browser rotates it (end_reason: logout | rotated | expired | deactivated)."""

    __tablename__ = "web_sessions"
    __audit_entity__ = "web_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, info=WITHHELD)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))


class ApiToken(Base):
    """A bearer token a user made for a script. Shown once at creation; stored as its SHA-256 (the
    token is 256 random bits, so a fast hash suffices) with a short prefix to tell tokens apart."""

    __tablename__ = "api_tokens"
    __audit_entity__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, info=WITHHELD)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class AuditEvent(Base):
    """One link of the hash chain (see core/audit_chain.py and docs/audit-trail.md).

    ``before``/``after`` are canonical JSON *text*, hashed as stored; ``username`` is copied so the
    trail reads on its own. Append-only: a trigger refuses UPDATE and DELETE.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_entity", "entity_type", "entity_id"),
        Index("ix_audit_events_occurred_at", "occurred_at"),
    )

    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    user_id: Mapped[int | None] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64))
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    previous_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditChainHead(Base):
    """The newest event's sequence and hash (a single row). Writers lock it to take the next number,
    so concurrent transactions cannot fork the chain; verification compares the trail's end to it."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
