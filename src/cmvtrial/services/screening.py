"""Screening data, screen failures and consent: from a registered candidate to one ready to randomize.

The use cases of DESIGN.md §3 step 2 and the first half of step 3 (issue 3); registering is in
subjects.py, the CONSORT log in screening_log.py:

- ``enter_screening_data``: the public screening JSON (docs/screening-record.md), merged into what
  is stored, kept as item values of the protocol's screening form under the screening visit
  (core/screening_items.py). Every created, changed or removed value is an audit event; a change or
  removal of a stored value needs a reason (21 CFR 11.10(e), ICH E6(R3) §4.2.2). Eligibility is
  judged again on every change and its verdict stored: not eligible makes a screen failure whose
  reasons are the excluding criteria; a correction that makes the candidate eligible again undoes
  it. Bad input of any kind (malformed record, unknown unit, a value outside hard limits) changes
  nothing;
- ``record_screen_failure``: the other CONSORT exclusions ("declined to participate", "other");
- ``record_consent``: the informed consent date, which randomization requires;
- ``subject_detail``: a subject with its screening data, the verdict judged afresh and the allocation.

Subject statuses: screening → eligible or screen_failed → randomized (randomizing.py) → later ones
(visits, withdrawal) owned by other services. Once randomized a subject stays randomized whatever a
later correction of screening data says (intention to treat); the new verdict is still stored, so a
monitor sees an ineligible randomized subject as the protocol deviation it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select

from cmvtrial.core.eligibility import EligibilityResult, evaluate_eligibility
from cmvtrial.core.protocol import Protocol
from cmvtrial.core.screening_items import CORTICOSTEROID, StoredItem, is_blank, owns, record_data, screening_items
from cmvtrial.core.screening_record import ScreeningRecord, screening_record_from_data
from cmvtrial.errors import InvalidInput, NotFound, Refused
from cmvtrial.services import permissions
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import protocol_of_version
from cmvtrial.services.screening_log import ConsortCounts, ScreeningLog, screening_log  # noqa: F401 (re-exported)
from cmvtrial.services.subjects import (  # noqa: F401 (registering and finding, re-exported for callers of issue 3)
    SubjectView,
    clean_reason,
    list_subjects,
    lock_subject,
    register_subject,
    resolve_subject,
    screening_visit_code,
    site_code_of,
    subject_view,
)
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Allocation, FormInstance, ItemValue, StudyEvent, Subject

#: Statuses before allocation, which a new eligibility verdict may change.
PRE_ALLOCATION = ("screening", "eligible", "screen_failed")
VERDICT = {True: "eligible", False: "not_eligible", None: "undetermined"}
#: Manual screen-failure categories (CONSORT "declined to participate", "other reasons").
FAILURE_CATEGORIES = ("declined", "other")
#: Consent may be dated up to one day after today's UTC date: a site east of Greenwich is ahead.
CONSENT_DATE_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class AllocationSummary:
    arm: str
    stratum: str
    sequence: int | None
    method: str
    allocated_at: datetime


@dataclass(frozen=True)
class SubjectDetail:
    """`cmvtrial subject show`: the subject, its screening data and verdict, consent and allocation."""

    subject: SubjectView
    screening_data: dict[str, object]
    eligibility: EligibilityResult | None
    missing_required: tuple[str, ...]
    allocation: AllocationSummary | None


@dataclass(frozen=True)
class ScreeningEntry:
    """What one entry of screening data did: the values created, changed and removed, and the verdict."""

    subject: SubjectView
    eligibility: EligibilityResult
    created: tuple[str, ...]
    updated: tuple[str, ...]
    removed: tuple[str, ...]
    missing_required: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


# ------------------------------------------------------------------------------------------------
# Stored screening data (randomizing.py reads them too)


def _screening_rows(uow: UnitOfWork, subject: Subject, protocol: Protocol) -> tuple[FormInstance | None, dict[str, ItemValue]]:
    form = uow.session.scalar(
        select(FormInstance).where(FormInstance.subject_id == subject.id, FormInstance.form_id == protocol.screening_form)
    )
    if form is None:
        return None, {}
    rows = uow.session.scalars(select(ItemValue).where(ItemValue.form_instance_id == form.id))
    return form, {row.item_id: row for row in rows}


def stored_screening_data(uow: UnitOfWork, subject: Subject, protocol: Protocol) -> dict[str, object]:
    """The subject's screening record as stored (public JSON data; absent keys are unknown)."""
    _form, rows = _screening_rows(uow, subject, protocol)
    return record_data(rows.values())


def missing_required(protocol: Protocol, data: Mapping[str, object]) -> tuple[str, ...]:
    """Required top-level items of the screening form the data do not give yet."""
    return tuple(item.id for item in protocol.screening.items if item.required and item.id not in data)


def _require_reason(reason: str | None, what: str) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise InvalidInput(f"{what} changes data already recorded: give a reason (--reason)", field="reason")
    return text


# ------------------------------------------------------------------------------------------------
# A subject in full


def subject_detail(uow: UnitOfWork, actor: Actor, subject_id: int) -> SubjectDetail:
    """One subject with its screening data, the verdict judged afresh, consent and allocation."""
    permissions.require(actor, "subject.view")
    with uow.reading():
        subject = uow.subjects.get(subject_id)
        if subject is None:
            raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
        permissions.require(actor, "subject.view", site=subject.site_id)
        protocol = protocol_of_version(uow, subject.protocol_version_id)
        data = stored_screening_data(uow, subject, protocol)
        verdict = evaluate_eligibility(protocol, data) if data else None
        allocation = uow.session.scalar(select(Allocation).where(Allocation.subject_id == subject.id))
        summary = None
        if allocation is not None:
            sequence = (allocation.details or {}).get("sequence")
            summary = AllocationSummary(allocation.arm_id, allocation.stratum, sequence, allocation.method,
                                        allocation.allocated_at)
        return SubjectDetail(
            subject=subject_view(subject, site_code_of(uow, subject.site_id)),
            screening_data=data,
            eligibility=verdict,
            missing_required=missing_required(protocol, data),
            allocation=summary,
        )


# ------------------------------------------------------------------------------------------------
# Screening data


def enter_screening_data(
    uow: UnitOfWork, actor: Actor, subject_id: int, data: Mapping[str, object], *, reason: str | None = None
) -> ScreeningEntry:
    """Merge ``data`` (keys of the screening record; ``null`` removes a stored value, except
    ``corticosteroid`` where it means none) into the subject's screening form, judge eligibility
    again and store the verdict. Re-submitting what is stored changes nothing and records nothing."""
    permissions.require(actor, "screening.enter")
    if not isinstance(data, Mapping):
        raise InvalidInput("screening data must be a JSON object of record keys", field="record")
    with uow:
        subject = lock_subject(uow, subject_id)
        permissions.require(actor, "screening.enter", site=subject.site_id)
        protocol = protocol_of_version(uow, subject.protocol_version_id)
        form, rows = _screening_rows(uow, subject, protocol)
        merged: dict[str, object] = dict(record_data(rows.values()))
        for key, value in data.items():
            if value is None and key != CORTICOSTEROID:
                merged.pop(key, None)
            else:
                merged[key] = value
        record = screening_record_from_data(merged)
        verdict = evaluate_eligibility(protocol, record)  # refuses values outside hard limits
        submitted = {key: value for key, value in data.items() if value is not None or key == CORTICOSTEROID}
        new_items = screening_items(protocol, record, submitted)

        changes = _diff(data, rows, new_items)
        if changes.updates or changes.clears:
            reason = _require_reason(reason, "this entry")
        else:
            reason = clean_reason(reason)
        if changes.any:
            now = uow.clock()
            form = _write_form(uow, actor, subject, protocol, form, merged, now, reason)
            _write_items(uow, actor, subject, form, changes, now, reason)
            _write_event(uow, actor, subject, protocol, record, now)
            _apply_verdict(uow, actor, subject, verdict, now, reason)
        view = subject_view(subject, site_code_of(uow, subject.site_id))
        uow.commit()
    return ScreeningEntry(
        subject=view,
        eligibility=verdict,
        created=tuple(sorted([item.item_id for item in changes.creates] + [row.item_id for row, _ in changes.fills])),
        updated=tuple(row.item_id for row, _ in changes.updates),
        removed=tuple(row.item_id for row in changes.clears),
        missing_required=missing_required(protocol, merged),
    )


@dataclass
class _Changes:
    """What an entry does to the stored item values: new rows, values put into cleared rows
    (``fills``, no reason needed: nothing recorded is changed), changed values, cleared values."""

    creates: list[StoredItem] = field(default_factory=list)
    fills: list[tuple[ItemValue, StoredItem]] = field(default_factory=list)
    updates: list[tuple[ItemValue, StoredItem]] = field(default_factory=list)
    clears: list[ItemValue] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.creates or self.fills or self.updates or self.clears)


def _diff(data: Mapping[str, object], rows: Mapping[str, ItemValue], new_items: Mapping[str, StoredItem]) -> _Changes:
    changes = _Changes()
    for key in data:
        old = {item_id: row for item_id, row in rows.items() if owns(key, item_id)}
        new = {item_id: item for item_id, item in new_items.items() if owns(key, item_id)}
        for item_id, item in sorted(new.items()):
            row = old.get(item_id)
            if row is None:
                changes.creates.append(item)
            elif is_blank(row):
                changes.fills.append((row, item))
            elif any(getattr(row, column) != value for column, value in item.columns().items()):
                changes.updates.append((row, item))
        changes.clears.extend(row for item_id, row in sorted(old.items()) if item_id not in new and not is_blank(row))
    return changes


def _write_form(
    uow: UnitOfWork,
    actor: Actor,
    subject: Subject,
    protocol: Protocol,
    form: FormInstance | None,
    merged: Mapping[str, object],
    now: datetime,
    reason: str | None,
) -> FormInstance:
    status = "in_progress" if missing_required(protocol, merged) else "complete"
    if form is None:
        event = uow.session.scalar(
            select(StudyEvent).where(
                StudyEvent.subject_id == subject.id,
                StudyEvent.visit_code == screening_visit_code(protocol),
                StudyEvent.repeat_index == 0,
            )
        )
        if event is None:
            raise Refused(f"subject {subject.id} has no screening visit", field="subject", value=subject.id)
        form = FormInstance(
            study_event_id=event.id,
            subject_id=subject.id,
            form_id=protocol.screening_form,
            form_repeat=0,
            status=status,
            created_at=now,
            created_by_user_id=actor.user_id,
        )
        uow.session.add(form)
        uow.session.flush()
        uow.audit.record(actor, "form_instance.create", form, after=form, reason=reason, site_id=subject.site_id)
    elif form.status != status:
        before = snapshot(form)
        form.status, form.updated_at = status, now
        uow.audit.record(actor, "form_instance.update", form, before=before, after=form, reason=reason,
                         site_id=subject.site_id)
    return form


def _write_items(
    uow: UnitOfWork,
    actor: Actor,
    subject: Subject,
    form: FormInstance,
    changes: _Changes,
    now: datetime,
    reason: str | None,
) -> None:
    """Rows are never deleted: a removed value is cleared (ODM keeps ItemData with its audit
    trail, and queries or signatures may point at the row)."""
    site_id = subject.site_id
    for item in changes.creates:
        row = ItemValue(
            form_instance_id=form.id,
            subject_id=subject.id,
            item_group_repeat=0,
            source="manual",
            version=1,
            entered_by_user_id=actor.user_id,
            entered_at=now,
            **item.columns(),
        )
        uow.session.add(row)
        uow.session.flush()
        uow.audit.record(actor, "item_value.create", row, after=row, reason=reason, site_id=site_id)
    cleared = [(row, StoredItem(row.item_id, row.value_type, None)) for row in changes.clears]
    for row, item in [*changes.fills, *changes.updates, *cleared]:
        before = snapshot(row)
        for column, value in item.columns().items():
            setattr(row, column, value)
        row.version += 1
        row.entered_by_user_id, row.entered_at = actor.user_id, now
        uow.session.flush()
        action = "item_value.clear" if item.entered_value is None else "item_value.update"
        uow.audit.record(actor, action, row, before=before, after=row, reason=reason, site_id=site_id)


def _write_event(
    uow: UnitOfWork, actor: Actor, subject: Subject, protocol: Protocol, record: ScreeningRecord, now: datetime
) -> None:
    event = uow.session.scalar(
        select(StudyEvent).where(
            StudyEvent.subject_id == subject.id,
            StudyEvent.visit_code == screening_visit_code(protocol),
            StudyEvent.repeat_index == 0,
        )
    )
    if event is None:
        return
    actual = record.screening_date
    status = "done" if actual is not None else "planned"
    if (event.actual_date, event.status) == (actual, status):
        return
    before = snapshot(event)
    event.actual_date, event.status, event.updated_at = actual, status, now
    uow.audit.record(actor, "study_event.update", event, before=before, after=event, site_id=subject.site_id)


def _manual_failure(subject: Subject) -> bool:
    reasons = subject.screen_failure_reasons or []
    return any(reason.get("category") in FAILURE_CATEGORIES for reason in reasons)


def _apply_verdict(
    uow: UnitOfWork, actor: Actor, subject: Subject, verdict: EligibilityResult, now: datetime, reason: str | None
) -> None:
    eligibility = VERDICT[verdict.eligible]
    status, reasons = subject.status, subject.screen_failure_reasons
    if subject.status in PRE_ALLOCATION and not _manual_failure(subject):
        if verdict.eligible is False:
            status = "screen_failed"
            reasons = [
                {"category": "eligibility", "criterion": v.id, "kind": v.kind, "text": v.text,
                 "values": v.to_dict()["values"]}
                for v in verdict.reasons_not_eligible
            ]
        else:
            status, reasons = ("eligible" if verdict.eligible else "screening"), None
    if (subject.eligibility, subject.status, subject.screen_failure_reasons) == (eligibility, status, reasons):
        return
    before = snapshot(subject)
    subject.eligibility, subject.status, subject.screen_failure_reasons = eligibility, status, reasons
    subject.updated_at = now
    uow.audit.record(actor, "subject.eligibility", subject, before=before, after=subject, reason=reason)


def record_screen_failure(
    uow: UnitOfWork, actor: Actor, subject_id: int, category: str, detail: str, *, reason: str | None = None
) -> SubjectView:
    """A screen failure for a reason eligibility cannot see: ``declined`` (the candidate declined to
    participate) or ``other`` (with ``detail``). Refused once the subject is randomized."""
    permissions.require(actor, "screening.enter")
    if category not in FAILURE_CATEGORIES:
        raise InvalidInput(
            f"screen-failure category must be one of {', '.join(FAILURE_CATEGORIES)}", field="category", value=category
        )
    text = " ".join((detail or "").split()) if isinstance(detail, str) else ""
    if not text:
        raise InvalidInput("describe the screen failure (--detail)", field="detail")
    with uow:
        subject = lock_subject(uow, subject_id)
        permissions.require(actor, "screening.enter", site=subject.site_id)
        if subject.status not in PRE_ALLOCATION:
            raise Refused(
                f"subject {subject.id} is {subject.status}; only a candidate can be a screen failure",
                field="subject",
                value=subject.id,
            )
        before = snapshot(subject)
        entry = {"category": category, "detail": text}
        subject.screen_failure_reasons = [*(subject.screen_failure_reasons or []), entry]
        subject.status, subject.updated_at = "screen_failed", uow.clock()
        uow.audit.record(actor, "subject.screen_failure", subject, before=before, after=subject,
                         reason=clean_reason(reason) or text)
        view = subject_view(subject, site_code_of(uow, subject.site_id))
        uow.commit()
    return view


# ------------------------------------------------------------------------------------------------
# Consent


def record_consent(
    uow: UnitOfWork, actor: Actor, subject_id: int, consent_date: date, *, reason: str | None = None
) -> SubjectView:
    """Record the informed consent date; changing a recorded date needs a reason. The date cannot
    be later than today (UTC, plus one day for sites ahead of UTC) nor before the birth date."""
    permissions.require(actor, "consent.record")
    if isinstance(consent_date, datetime) or not isinstance(consent_date, date):
        raise InvalidInput("the consent date must be a date YYYY-MM-DD", field="date", value=str(consent_date))
    with uow:
        subject = lock_subject(uow, subject_id)
        permissions.require(actor, "consent.record", site=subject.site_id)
        latest = uow.clock().date() + CONSENT_DATE_SLACK
        if consent_date > latest:
            raise InvalidInput(
                f"consent date {consent_date.isoformat()} is in the future", field="date", value=consent_date.isoformat()
            )
        protocol = protocol_of_version(uow, subject.protocol_version_id)
        birth = stored_screening_data(uow, subject, protocol).get("birth_date")
        if isinstance(birth, str) and consent_date.isoformat() < birth:
            raise InvalidInput(
                f"consent date {consent_date.isoformat()} is before the birth date {birth}",
                field="date",
                value=consent_date.isoformat(),
            )
        if subject.consent_date == consent_date:
            view = subject_view(subject, site_code_of(uow, subject.site_id))
            return view  # the same date again: nothing to record
        action = "consent.record"
        if subject.consent_date is not None:
            reason = _require_reason(reason, "a new consent date")
            action = "consent.update"
        before = snapshot(subject)
        subject.consent_date, subject.updated_at = consent_date, uow.clock()
        uow.audit.record(actor, action, subject, before=before, after=subject, reason=clean_reason(reason))
        view = subject_view(subject, site_code_of(uow, subject.site_id))
        uow.commit()
    return view
