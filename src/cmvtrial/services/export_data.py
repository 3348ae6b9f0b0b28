"""The trial database as the interchange exports read it: one plain, pseudonymized snapshot.

Why a snapshot of its own (and not the analysis snapshot of services/analysis_data.py): SDTM, ODM
and FHIR carry what was *collected*, not what the analyses derive — every screened candidate (screen
failures belong in SDTM DM), every visit done or missed, each value as entered next to its
normalized value and unit, who entered it and from which source, every dose given or held, every
adverse event with its per-drug assessments and, for ODM, the audit trail of each value. The
adapters in ``cmvtrial.adapters.interop`` turn it into files; none of them touches the database.

Pseudonyms (issue 8: "pseudonymized subject identifiers in every export"): a subject is named in an
export only by a keyed HMAC of its site and screening number (services/pseudonyms.py), the same in
every dataset and every export made under the same CMVTRIAL_SECRET_KEY, and revealing nothing
without it. Dates of birth and free-text names never leave; the age does.

Only data managers and statisticians may export (``data.export``, sponsor-side roles that see every
site); the read is one read-only transaction, and the export itself is then written to the audit
trail (who exported what, and in which format) by ``record_export``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cmvtrial.errors import DatabaseNotInitialised, NotFound
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed
from cmvtrial.services.pseudonyms import pseudonymizer
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import sample_date_item
from cmvtrial.store.tables import (
    AdverseEvent,
    Allocation,
    AuditEvent,
    DoseAdministration,
    FormInstance,
    ItemValue,
    Site,
    StudyEvent,
    Subject,
    User,
)

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

#: Audit entity types whose events belong to a value's history in ODM.
VALUE_ENTITY = ItemValue.__audit_entity__


@dataclass(frozen=True)
class ExportSite:
    code: str
    name: str


@dataclass(frozen=True)
class ExportUser:
    user_id: int
    username: str
    role: str
    site: str | None


@dataclass(frozen=True)
class ExportSubject:
    """One screened candidate. ``key`` is the database id: used to join, never written out."""

    key: int
    subject_id: str
    site: str
    status: str
    eligibility: str | None
    screen_failure_reasons: tuple[Mapping[str, Any], ...]
    consent_date: date | None
    screening_date: date | None
    randomization_date: date | None
    arm: str | None
    arm_received: str | None
    strata: Mapping[str, str]
    end_of_treatment_date: date | None
    end_of_treatment_reason: str | None
    status_changed_on: date | None
    registered_on: date
    #: The analysis snapshot's name for the subject (subject number, else ``SITE:screening number``),
    #: so ADaM rows can be joined to SDTM; never written into an export.
    label: str = ""
    #: The end of study (services/end_of_study.py): the day the subject left or completed, the
    #: core/disposition.py reason code and the words that go with it.
    end_of_study_date: date | None = None
    end_of_study_reason: str | None = None
    end_of_study_details: str | None = None


@dataclass(frozen=True)
class ExportVisit:
    subject_key: int
    code: str
    index: int
    label: str
    status: str
    actual_date: date | None
    target_date: date | None
    window_start: date | None
    window_end: date | None
    deviation: str | None
    event_id: int


@dataclass(frozen=True)
class ExportValue:
    """One stored item value with its form, visit and dates (``sample_date`` is the form's own
    sample-date item when it has one, else the visit's date)."""

    value_id: int
    subject_key: int
    form: str
    form_repeat: int
    form_status: str
    instance_id: int
    item: str
    group_repeat: int
    visit_code: str
    visit_index: int
    visit_date: date | None
    sample_date: date | None
    value_type: str
    entered_value: str | None
    entered_unit: str | None
    number: float | None
    text: str | None
    unit: str | None
    missing_reason: str | None
    source: str
    version: int
    entered_by: str
    entered_at: datetime


@dataclass(frozen=True)
class ExportDose:
    dose_id: int
    subject_key: int
    drug: str
    status: str
    dose: float | None
    unit: str | None
    route: str | None
    administered_on: date
    administered_at: datetime | None
    reason: str | None
    planned_dose: float | None
    visit: tuple[str, int] | None


@dataclass(frozen=True)
class ExportAdverseEvent:
    event_id: int
    subject_key: int
    number: int
    term: str
    verbatim_term: str
    ctcae_term: str | None
    meddra_code: str | None
    ctcae_version: str | None
    grade: int | None
    serious: bool
    seriousness_criteria: tuple[str, ...]
    drug_assessments: tuple[Mapping[str, Any], ...]
    outcome: str | None
    onset_date: date
    resolution_date: date | None
    source: str
    recorded_at: datetime


@dataclass(frozen=True)
class ExportAuditEvent:
    sequence: int
    occurred_at: datetime
    username: str
    user_id: int | None
    site: str | None
    action: str
    entity_type: str
    entity_id: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str | None


@dataclass(frozen=True, eq=False)
class ExportData:
    """Everything an interchange export writes, at ``generated_at``; subjects by pseudonym."""

    protocol: Protocol
    protocol_version: str
    protocol_sha256: str
    generated_at: datetime
    sites: tuple[ExportSite, ...]
    users: tuple[ExportUser, ...]
    subjects: tuple[ExportSubject, ...]
    visits: tuple[ExportVisit, ...]
    values: tuple[ExportValue, ...]
    doses: tuple[ExportDose, ...]
    adverse_events: tuple[ExportAdverseEvent, ...]
    audit: tuple[ExportAuditEvent, ...] = ()
    source_system: str = "cmvtrial"
    _index: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def study_id(self) -> str:
        """STUDYID: the protocol id in capitals (``SLE-CMV-IL2``)."""
        return self.protocol.id.upper()

    def subject(self, key: int) -> ExportSubject:
        by_key = self._index.setdefault("subjects", {s.key: s for s in self.subjects})
        return by_key[key]

    def usubjid(self, key: int) -> str:
        """USUBJID: unique across studies — study, site and pseudonym (SDTMIG 3.4 §4.1.2.2 pattern)."""
        subject = self.subject(key)
        return f"{self.study_id}-{subject.site}-{subject.subject_id}"

    def values_of(self, key: int) -> list[ExportValue]:
        grouped = self._index.setdefault("values", _group(self.values))
        return grouped.get(key, [])

    def visits_of(self, key: int) -> list[ExportVisit]:
        grouped = self._index.setdefault("visits", _group(self.visits))
        return grouped.get(key, [])

    def doses_of(self, key: int) -> list[ExportDose]:
        grouped = self._index.setdefault("doses", _group(self.doses))
        return grouped.get(key, [])

    def adverse_events_of(self, key: int) -> list[ExportAdverseEvent]:
        grouped = self._index.setdefault("adverse_events", _group(self.adverse_events))
        return grouped.get(key, [])


def _group(rows: tuple[Any, ...]) -> dict[int, list[Any]]:
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.subject_key].append(row)
    return dict(grouped)


# ------------------------------------------------------------------------------------------------
# The use cases


def build_export_data(
    uow: UnitOfWork, actor: Actor, *, include_audit: bool = False, subject_id: int | None = None
) -> ExportData:
    """The whole trial (or one subject, by database id) as the exports see it; read-only."""
    permissions.require(actor, "data.export")
    with uow.reading():
        trial = uow.trial.current()
        if trial is None:
            raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
        version = uow.protocols.require(trial.protocol_version_id)
        protocol = parsed(version)
        reader = _Reader(uow, protocol, subject_id)
        return ExportData(
            protocol=protocol, protocol_version=version.version, protocol_sha256=version.sha256,
            generated_at=uow.clock(), sites=reader.export_sites(), users=reader.export_users(),
            subjects=reader.export_subjects(), visits=reader.export_visits(), values=reader.export_values(),
            doses=reader.export_doses(), adverse_events=reader.export_adverse_events(),
            audit=reader.export_audit() if include_audit else (),
        )


def record_export(uow: UnitOfWork, actor: Actor, what: str, details: Mapping[str, Any]) -> None:
    """Write one audit event saying ``actor`` exported ``what`` (format, counts, destination)."""
    permissions.require(actor, "data.export")
    with uow:
        uow.audit.record(actor, "data.export", ("export", what), after=dict(details))
        uow.commit()


def randomized_pseudonyms(uow: UnitOfWork, actor: Actor) -> list[tuple[str, str]]:
    """(pseudonym, site code) of every randomized subject, sorted: what a statistician chooses from
    to export one subject (the exports never name a subject otherwise)."""
    permissions.require(actor, "data.export")
    with uow.reading():
        name = pseudonymizer(uow)
        rows = uow.session.execute(select(Site.code, Subject.screening_number).join(Site, Site.id == Subject.site_id)
                                   .where(Subject.subject_number.is_not(None)))
        return sorted((name(code, number), code) for code, number in rows)


def subject_by_pseudonym(uow: UnitOfWork, actor: Actor, reference: str) -> int:
    """The database id of the subject an export names ``reference`` (its pseudonym, or USUBJID)."""
    permissions.require(actor, "data.export")
    wanted = reference.strip().rsplit("-", 1)[-1]
    with uow.reading():
        name = pseudonymizer(uow)
        sites = {site.id: site.code for site in uow.session.scalars(select(Site))}
        for subject in uow.session.scalars(select(Subject).order_by(Subject.id)):
            if name(sites.get(subject.site_id, "?"), subject.screening_number) == wanted:
                return subject.id
    raise NotFound(f"no subject has the pseudonym {reference!r}", field="subject", value=reference)


class _Reader:
    def __init__(self, uow: UnitOfWork, protocol: Protocol, subject_id: int | None) -> None:
        self.session = uow.session
        self.protocol = protocol
        self.name = pseudonymizer(uow)
        self.sites = {site.id: site for site in self.session.scalars(select(Site).order_by(Site.code))}
        self.users = {user.id: user for user in self.session.scalars(select(User).order_by(User.id))}
        query = select(Subject).order_by(Subject.id)
        if subject_id is not None:
            query = query.where(Subject.id == subject_id)
        self.subjects = list(self.session.scalars(query))
        if subject_id is not None and not self.subjects:
            raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
        self.keys = [subject.id for subject in self.subjects]
        self.allocations = {row.subject_id: row for row in self._rows(Allocation)}
        self.events = {row.id: row for row in self._rows(StudyEvent)}
        self.instances = {row.id: row for row in self._rows(FormInstance)}
        self.dose_rows = sorted(self._rows(DoseAdministration), key=lambda r: (r.subject_id, r.administered_on, r.id))

    def _rows(self, model: Any) -> list[Any]:
        return list(self.session.scalars(select(model).where(model.subject_id.in_(self.keys or [-1]))))

    def _site(self, site_id: int | None) -> str | None:
        return self.sites[site_id].code if site_id in self.sites else None

    def export_sites(self) -> tuple[ExportSite, ...]:
        return tuple(ExportSite(site.code, site.name) for site in self.sites.values())

    def export_users(self) -> tuple[ExportUser, ...]:
        return tuple(ExportUser(user.id, user.username, user.role, self._site(user.site_id))
                     for user in self.users.values())

    def export_subjects(self) -> tuple[ExportSubject, ...]:
        screened = self._screening_dates()
        received = self._arms_received()
        found = []
        for subject in self.subjects:
            site = self._site(subject.site_id) or "?"
            allocation = self.allocations.get(subject.id)
            levels = allocation.details.get("levels") if allocation and isinstance(allocation.details, Mapping) else None
            reasons = subject.screen_failure_reasons if isinstance(subject.screen_failure_reasons, list) else []
            found.append(ExportSubject(
                key=subject.id, subject_id=self.name(site, subject.screening_number), site=site,
                status=subject.status, eligibility=subject.eligibility,
                screen_failure_reasons=tuple(r for r in reasons if isinstance(r, Mapping)),
                consent_date=subject.consent_date, screening_date=screened.get(subject.id),
                randomization_date=allocation.allocated_at.date() if allocation else None,
                arm=allocation.arm_id if allocation else None,
                arm_received=received.get(subject.id) if allocation else None,
                strata={str(k): str(v) for k, v in levels.items()} if isinstance(levels, Mapping) else {},
                end_of_treatment_date=subject.end_of_treatment_date,
                end_of_treatment_reason=subject.end_of_treatment_reason,
                status_changed_on=subject.updated_at.date() if subject.updated_at else None,
                registered_on=subject.created_at.date(),
                label=subject.subject_number or f"{site}:{subject.screening_number}",
                end_of_study_date=subject.end_of_study_date, end_of_study_reason=subject.end_of_study_reason,
                end_of_study_details=subject.end_of_study_details,
            ))
        return tuple(found)

    def _screening_dates(self) -> dict[int, date]:
        form = self.protocol.screening
        path = sample_date_item(form)
        found: dict[int, date] = {}
        for row in self.session.scalars(select(ItemValue).where(ItemValue.subject_id.in_(self.keys or [-1]),
                                                                ItemValue.item_id == (path or ""))):
            instance = self.instances.get(row.form_instance_id)
            if instance is not None and instance.form_id == form.id and row.normalized_text:
                try:
                    found[row.subject_id] = date.fromisoformat(row.normalized_text)
                except ValueError:
                    continue
        for event in self.events.values():
            if event.subject_id not in found and self.protocol.visit(event.visit_code).anchor == "screening" \
                    and event.actual_date is not None:
                found[event.subject_id] = event.actual_date
        return found

    def _arms_received(self) -> dict[int, str]:
        """The arm whose drugs the given doses match exactly (as treated); the randomized arm when
        the doses are a subset of it."""
        given: dict[int, set[str]] = defaultdict(set)
        for row in self.dose_rows:
            if row.status == "given":
                given[row.subject_id].add(row.drug.casefold())
        arms = {arm.id: {regimen.drug.casefold() for regimen in arm.regimens} for arm in self.protocol.arms}
        found = {}
        for key, drugs in given.items():
            allocation = self.allocations.get(key)
            exact = [arm_id for arm_id, names in arms.items() if names == drugs]
            if allocation is not None and (arms.get(allocation.arm_id) == drugs or
                                           (not exact and drugs <= arms.get(allocation.arm_id, set()))):
                found[key] = allocation.arm_id
            elif exact:
                found[key] = exact[0]
        return found

    def export_visits(self) -> tuple[ExportVisit, ...]:
        rows = sorted(self.events.values(), key=lambda e: (e.subject_id, e.actual_date or e.target_date or date.max, e.id))
        return tuple(ExportVisit(
            subject_key=e.subject_id, code=e.visit_code, index=e.repeat_index,
            label=f"{e.visit_code}{e.repeat_index}" if e.repeat_index else e.visit_code, status=e.status,
            actual_date=e.actual_date, target_date=e.target_date, window_start=e.window_start, window_end=e.window_end,
            deviation=e.deviation, event_id=e.id) for e in rows)

    def export_values(self) -> tuple[ExportValue, ...]:
        forms = {form.id: form for form in self.protocol.forms}
        rows = sorted(self._rows(ItemValue), key=lambda r: (r.subject_id, r.form_instance_id, r.item_group_repeat, r.id))
        samples: dict[int, date] = {}
        for row in rows:
            instance = self.instances[row.form_instance_id]
            form = forms.get(instance.form_id)
            path = sample_date_item(form) if form is not None else None
            if path and row.item_id == path and row.normalized_text:
                try:
                    samples[instance.id] = date.fromisoformat(row.normalized_text)
                except ValueError:
                    pass
        found = []
        for row in rows:
            instance = self.instances[row.form_instance_id]
            event = self.events[instance.study_event_id]
            user = self.users.get(row.entered_by_user_id)
            found.append(ExportValue(
                value_id=row.id, subject_key=row.subject_id, form=instance.form_id, form_repeat=instance.form_repeat,
                form_status=instance.status, instance_id=instance.id, item=row.item_id,
                group_repeat=row.item_group_repeat, visit_code=event.visit_code, visit_index=event.repeat_index,
                visit_date=event.actual_date, sample_date=samples.get(instance.id, event.actual_date),
                value_type=row.value_type, entered_value=row.entered_value, entered_unit=row.entered_unit,
                number=row.normalized_number, text=row.normalized_text, unit=row.normalized_unit,
                missing_reason=row.missing_reason, source=row.source, version=row.version,
                entered_by=user.username if user else str(row.entered_by_user_id), entered_at=row.entered_at))
        return tuple(found)

    def export_doses(self) -> tuple[ExportDose, ...]:
        found = []
        for row in self.dose_rows:
            event = self.events.get(row.study_event_id) if row.study_event_id else None
            found.append(ExportDose(
                dose_id=row.id, subject_key=row.subject_id, drug=row.drug, status=row.status, dose=row.dose,
                unit=row.dose_unit or None, route=row.route or None, administered_on=row.administered_on,
                administered_at=row.administered_at, reason=row.reason, planned_dose=row.planned_dose,
                visit=(event.visit_code, event.repeat_index) if event else None))
        return tuple(found)

    def export_adverse_events(self) -> tuple[ExportAdverseEvent, ...]:
        rows = sorted(self._rows(AdverseEvent), key=lambda r: (r.subject_id, r.ae_number))
        return tuple(ExportAdverseEvent(
            event_id=row.id, subject_key=row.subject_id, number=row.ae_number, term=row.term,
            verbatim_term=row.verbatim_term, ctcae_term=row.ctcae_term, meddra_code=row.meddra_code,
            ctcae_version=row.ctcae_version, grade=row.ctcae_grade, serious=bool(row.serious),
            seriousness_criteria=tuple(str(c) for c in row.seriousness_criteria or [] if c),
            drug_assessments=tuple(a for a in row.drug_assessments or [] if isinstance(a, Mapping)),
            outcome=row.outcome, onset_date=row.onset_date, resolution_date=row.resolution_date, source=row.source,
            recorded_at=row.recorded_at) for row in rows)

    def export_audit(self) -> tuple[ExportAuditEvent, ...]:
        """The audit events of the exported values (created, changed, removed), in chain order."""
        value_ids = {str(row.id) for row in self._rows(ItemValue)}
        instance_ids = set(self.instances)
        query = select(AuditEvent).where(AuditEvent.entity_type == VALUE_ENTITY).order_by(AuditEvent.sequence)
        found = []
        for event in self.session.scalars(query):
            before, after = _loads(event.before), _loads(event.after)
            state = after or before or {}
            if event.entity_id not in value_ids and state.get("form_instance_id") not in instance_ids:
                continue
            found.append(ExportAuditEvent(
                sequence=event.sequence, occurred_at=event.occurred_at, username=event.username,
                user_id=event.user_id, site=self._site(event.site_id), action=event.action,
                entity_type=event.entity_type, entity_id=event.entity_id, before=before, after=after,
                reason=event.reason))
        return tuple(found)


def _loads(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
