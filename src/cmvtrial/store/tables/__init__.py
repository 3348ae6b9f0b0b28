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

One module per part (``base``, ``trial``, ``subject_data``, ``safety``, ``review``, ``access``,
``audit``); every model is re-exported here, so importers and the migrations name
``cmvtrial.store.tables`` only.
"""

from __future__ import annotations

from cmvtrial.store.tables.base import NAMING_CONVENTION, ROLES, WITHHELD, Base, UtcDateTime
from cmvtrial.store.tables.trial import ProtocolVersion, Site, Trial, User
from cmvtrial.store.tables.subject_data import (
    Allocation,
    DoseAdministration,
    FormInstance,
    ItemValue,
    RandomizationListEntry,
    RandomizationScheme,
    StudyEvent,
    Subject,
)
from cmvtrial.store.tables.safety import AdverseEvent, LabSafetyProposal
from cmvtrial.store.tables.review import Query, Signature
from cmvtrial.store.tables.access import ApiToken, WebSession
from cmvtrial.store.tables.audit import AuditChainHead, AuditEvent

__all__ = [
    "NAMING_CONVENTION", "ROLES", "WITHHELD", "AdverseEvent", "Allocation", "ApiToken", "AuditChainHead", "AuditEvent",
    "Base", "DoseAdministration", "FormInstance", "ItemValue", "LabSafetyProposal", "ProtocolVersion", "Query",
    "RandomizationListEntry", "RandomizationScheme", "Signature", "Site", "StudyEvent", "Subject", "Trial", "User",
    "UtcDateTime", "WebSession",
]
