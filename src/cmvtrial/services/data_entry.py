"""Data capture at a visit: the values of a visit's forms, checked, stored as entered and normalized.

One use case, ``enter_visit_data`` (DESIGN.md §3 step 6, issue 4 "Data capture"), in one transaction:

1. **Check everything first** (services/visit_entry_plan.py). Each submitted form is merged with
   what is stored (a key replaces a value, ``null`` removes it) and the whole form is checked by
   ``core.form_entry.validate_form`` — types, codelists, units, hard limits, edit checks — so a
   cross-item check always sees the full form. Any refusal (every problem of every form listed)
   raises before anything is written: bad input changes nothing, not even the audit trail. Marking
   a form complete is refused while a required item is missing. Changing or removing a stored
   value, or the visit's date, needs a reason; the audit trail keeps the old and the new value
   (21 CFR 11.10(e)).
2. **Store** the visit's study event (its date; a date outside the window is kept and flagged as
   a protocol deviation, as is a sample date outside it), each form instance and each item value:
   entered value and unit, normalized value and unit, who and when (core's ``storage()``).
3. **Follow-ups, in the same transaction:** every soft-limit or edit-check finding opens a query
   (once; an edit-check query whose check passes after a correction is closed by the system); a
   changed visit invalidates its signature and says so (signatures.py); a lab value with a LOINC
   code goes to the lab-safety review (services/lab_safety.py) with the form's ULN item, when the
   protocol pairs one with it, and the baseline value; and the CMV-DNA results are run through the
   protocol's stop rule — the first result below the assay's limit ends treatment, cancels later
   treatment visits and schedules the follow-up (services/end_of_treatment.py).

Screening data are not entered here: the screening visit belongs to services/screening.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import select

from cmvtrial.core.form_entry import Finding
from cmvtrial.core.schedule import ScheduledVisit, end_of_treatment_date, parse_visit_label
from cmvtrial.errors import InvalidInput
from cmvtrial.services import visits
from cmvtrial.services.audit import snapshot
from cmvtrial.services.end_of_treatment import EndOfTreatmentChange, sync_end_of_treatment
from cmvtrial.services.permissions import Actor
from cmvtrial.services.queries import live_edit_check_queries, sync_edit_check_queries
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import baseline_visit, cmv_items, cmv_results, sample_date_item, uln_items
from cmvtrial.services.visit_entry_plan import (
    FormPlan,
    VisitSubmission,
    parse_visit_submission,
    plan_forms,
    sample_deviations,
)
from cmvtrial.services.visits import TreatmentContext
from cmvtrial.store.tables import FormInstance, ItemValue, StudyEvent

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

#: Checking and planning a submission is services/visit_entry_plan.py; callers parse it here.
__all__ = ["FormResult", "VisitEntry", "VisitSubmission", "enter_visit_data", "parse_visit_submission"]


@dataclass(frozen=True)
class FormResult:
    form_id: str
    form_repeat: int
    status: str
    created: tuple[str, ...]
    updated: tuple[str, ...]
    removed: tuple[str, ...]
    findings: tuple[Finding, ...]
    missing_required: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"form": self.form_id, "repeat": self.form_repeat, "status": self.status, "created": list(self.created),
                "updated": list(self.updated), "removed": list(self.removed),
                "findings": [finding.to_dict() for finding in self.findings],
                "missing_required": list(self.missing_required)}


@dataclass(frozen=True)
class VisitEntry:
    """What one entry did: per form the values created, changed and removed, and what followed."""

    subject_id: int
    subject: str
    site_code: str
    visit: str
    visit_date: date
    forms: tuple[FormResult, ...]
    deviation: str | None = None
    queries_opened: tuple[int, ...] = ()
    queries_closed: tuple[int, ...] = ()
    signatures_invalidated: tuple[str, ...] = ()
    lab_reviews: tuple[str, ...] = ()
    labs_not_graded: tuple[str, ...] = ()
    end_of_treatment: EndOfTreatmentChange | None = None
    changed: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"subject_id": self.subject_id, "subject": self.subject, "site": self.site_code, "visit": self.visit,
                "visit_date": self.visit_date.isoformat(), "changed": self.changed, "deviation": self.deviation,
                "forms": [form.to_dict() for form in self.forms], "queries_opened": list(self.queries_opened),
                "queries_closed": list(self.queries_closed),
                "signatures_invalidated": list(self.signatures_invalidated), "lab_reviews": list(self.lab_reviews),
                "labs_not_graded": list(self.labs_not_graded),
                "end_of_treatment": self.end_of_treatment.to_dict() if self.end_of_treatment else None}


# ------------------------------------------------------------------------------------------------
# The use case


def enter_visit_data(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    visit: str,
    forms: Mapping[str, object],
    *,
    today: date,
    visit_date: date | None = None,
    complete: bool | Sequence[str] = False,
    reason: str | None = None,
    source: str = "manual",
) -> VisitEntry:
    """Enter or correct the values of one visit's forms (see the module docstring). ``visit_date``
    defaults to the date already recorded for the visit, else ``today``; ``complete`` marks every
    submitted form (True) or the listed ones complete. ``source`` says where the values came from
    (``manual``, or ``fhir`` for a hospital's lab results imported by services/lab_import.py).

    On SQLite, which lets one transaction write at a time, the checking and planning run in a
    reading transaction and the writing in a second one, so writers hold the database's write lock
    only while they write (benchmarks/bench_api_load.py). The write transaction locks the subject
    and proceeds only when the subject's ``row_version`` shows that nothing of the subject changed
    in between; otherwise the entry is planned again, the last time under the lock from the start.
    PostgreSQL locks rows, not the database: there the entry plans under the subject's lock in one
    transaction (one round trip of BEGIN and COMMIT less)."""
    visits.require_date(today, "today")
    if visit_date is not None:
        visits.require_date(visit_date, "visit_date")
    note = visits.clean_reason(reason)
    first = 1 if uow.one_writer_at_a_time else PLANNING_ATTEMPTS
    for attempt in range(first, PLANNING_ATTEMPTS + 1):
        try:
            return _enter(uow, actor, subject_id, visit, forms, today=today, visit_date=visit_date,
                          complete=complete, note=note, source=source, locked=attempt == PLANNING_ATTEMPTS)
        except _SubjectChanged:
            continue
    raise AssertionError("the last attempt plans under the lock and cannot find the subject changed")


#: How many times an entry is planned in all: before the write lock, and again only when another
#: write for the same subject committed in between; the last time under the lock from the start.
PLANNING_ATTEMPTS = 3


class _SubjectChanged(Exception):
    """Another use case changed the subject between planning and writing: plan again."""


def _enter(uow: UnitOfWork, actor: Actor, subject_id: int, visit: str, forms: Mapping[str, object], *, today: date,
           visit_date: date | None, complete: bool | Sequence[str], note: str | None, source: str,
           locked: bool) -> VisitEntry:
    from cmvtrial.services import signatures

    with uow:
        if not locked:
            uow.read_first()
        subject = visits.subject_in_scope(uow, actor, "form.enter", subject_id, lock=locked)
        planned_version = subject.row_version
        ctx = visits.treatment_context(uow, subject)
        protocol = ctx.protocol
        key = parse_visit_label(protocol, visit)
        if protocol.visit(key[0]).anchor == "screening":
            raise InvalidInput(f"{key[0]} is the screening visit: enter screening data with `cmvtrial screening "
                               "enter`", field="visit", value=visit)
        events = visits.stored_events(uow, subject.id)
        event = events.get(key)
        on_date = visit_date or (event.actual_date if event is not None else None) or today
        if on_date > today:
            raise InvalidInput(f"the visit date {on_date.isoformat()} is after today ({today.isoformat()})",
                               field="date", value=on_date.isoformat())
        if on_date < ctx.randomized_on:
            raise InvalidInput(f"the visit date {on_date.isoformat()} is before randomization "
                               f"({ctx.randomized_on.isoformat()})", field="date", value=on_date.isoformat())
        visits.refuse_after_leaving(ctx, on_date, visits.visit_label(*key))
        calendar = visits.calendar_of(ctx, events, today=today, through=on_date)
        scheduled = visits.scheduled_visit(ctx, calendar, key)
        visits.refuse_unavailable(ctx, scheduled, on_date)
        if event is not None and event.status == "missed":
            raise InvalidInput(f"{scheduled.label} is recorded as missed; record its date first (`cmvtrial visits "
                               "record`, with a reason)", field="visit", value=scheduled.label)

        plans = plan_forms(uow, protocol, scheduled, event, forms, complete)
        date_changes = event is not None and event.actual_date is not None and event.actual_date != on_date
        if date_changes or any(plan.updates or plan.deletes for plan in plans):
            note = visits.require_reason(note, f"this entry changes data already recorded for {scheduled.label}")
        extra = sample_deviations(plans, scheduled, today)
        if not any(plan.changed for plan in plans) and not date_changes and event is not None and (
                event.status == "done" and (event.deviation or None) == (_combined(scheduled, on_date, extra))):
            return _result(ctx, scheduled, on_date, plans, event.deviation, changed=False)

        # Read now, while planning: the subject's row version covers them (queries and signatures
        # change only under the subject's lock), and the write transaction stays short.
        live_queries = {index: live_edit_check_queries(uow, plan.instance.id)
                        for index, plan in enumerate(plans) if plan.instance is not None}
        signed = signatures.valid_signatures(uow, event) if event is not None else []
        if not locked:
            uow.start_writing()
            if not uow.subjects.locked_if_unchanged(subject, planned_version):
                raise _SubjectChanged
        event = visits.ensure_event(uow, actor, ctx, events, scheduled, reason=note)
        visits.set_visit_date(uow, actor, ctx, event, scheduled, on_date, reason=note, extra_deviation=extra)
        opened: list[int] = []
        closed: list[int] = []
        reviews: list[str] = []
        not_graded: list[str] = []
        for index, plan in enumerate(plans):
            instance = _write_form(uow, actor, ctx, event, plan, note)
            written = _write_items(uow, actor, ctx, instance, plan, note, source)
            o, c = sync_edit_check_queries(uow, actor, ctx.subject, instance, plan.entry.findings, written,
                                           data_changed=plan.data_changed, live=live_queries.get(index, []))
            opened += o
            closed += c
            proposed, ungraded = _review_labs(uow, actor, ctx, plan, written, on_date, today, events, event)
            reviews += proposed
            not_graded += ungraded
        invalidated: list[str] = []
        if any(plan.data_changed for plan in plans) or date_changes:
            changed_items = [f"{plan.form.id}.{path}" for plan in plans for path in _changed_paths(plan)]
            invalidated = signatures.invalidate_visit_signatures(
                uow, actor, ctx, event, what=", ".join(changed_items) or f"the date of {scheduled.label}", valid=signed)
        eot = _apply_stop_rule(uow, actor, ctx, events, note, today) if _stop_rule_inputs_changed(
            protocol, plans, date_changes) else None
        result = _result(ctx, scheduled, on_date, plans, event.deviation, changed=True, opened=opened, closed=closed,
                         invalidated=invalidated, reviews=reviews, not_graded=not_graded,
                         eot=eot)
        uow.commit()
    return result


def _combined(scheduled: ScheduledVisit, on_date: date, extra: str | None) -> str | None:
    return "; ".join(text for text in (visits.deviation_text(scheduled, on_date), extra) if text) or None


def _write_form(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, event: StudyEvent, plan: FormPlan,
                reason: str | None) -> FormInstance:
    now = uow.clock()
    instance = plan.instance
    if instance is None:
        instance = FormInstance(study_event_id=event.id, subject_id=ctx.subject.id, form_id=plan.form.id,
                                form_repeat=plan.repeat, status=plan.status, created_at=now,
                                created_by_user_id=actor.user_id)
        uow.session.add(instance)
        uow.session.flush()
        uow.audit.record(actor, "form_instance.create", instance, after=instance, reason=reason,
                         site_id=ctx.subject.site_id)
    elif instance.status != plan.status:
        before = snapshot(instance)
        instance.status, instance.updated_at = plan.status, now
        uow.session.flush()
        uow.audit.record(actor, "form_instance.update", instance, before=before, after=instance, reason=reason,
                         site_id=ctx.subject.site_id)
    return instance


def _write_items(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, instance: FormInstance, plan: FormPlan,
                 reason: str | None, source: str = "manual") -> dict[str, ItemValue]:
    """Write the plan's values; the form's rows by item path afterwards."""
    now, site_id = uow.clock(), ctx.subject.site_id
    rows = dict(plan.rows)
    # New rows go in with one flush (the audit trail needs their ids); changed rows are flushed
    # together later (one multi-row UPDATE), their audit events need no id they do not have.
    created = [ItemValue(form_instance_id=instance.id, subject_id=ctx.subject.id, item_group_repeat=0, source=source,
                         version=1, entered_by_user_id=actor.user_id, entered_at=now, **columns)
               for columns in plan.creates]
    if created:
        uow.session.add_all(created)
        uow.session.flush()
    for row in created:
        uow.audit.record(actor, "item_value.create", row, after=row, reason=reason, site_id=site_id)
        rows[row.item_id] = row
    for row, columns in plan.updates:
        before = snapshot(row)
        for name, value in columns.items():
            setattr(row, name, value)
        row.version += 1
        row.entered_by_user_id, row.entered_at, row.source = actor.user_id, now, source
        uow.audit.record(actor, "item_value.update", row, before=before, after=row, reason=reason, site_id=site_id)
    for row in plan.deletes:
        uow.audit.record(actor, "item_value.delete", row, before=row, reason=reason, site_id=site_id)
        _detach_queries(uow, actor, row, reason, site_id)
        uow.session.delete(row)
        uow.session.flush()
        rows.pop(row.item_id, None)
    return rows


def _detach_queries(uow: UnitOfWork, actor: Actor, row: ItemValue, reason: str | None, site_id: int) -> None:
    """A query or lab proposal on a removed value stays (on its form, naming the item); the audit
    trail keeps the value it was about."""
    from cmvtrial.store.tables import LabSafetyProposal, Query

    linked = [*uow.session.scalars(select(Query).where(Query.item_value_id == row.id)),
              *uow.session.scalars(select(LabSafetyProposal).where(LabSafetyProposal.item_value_id == row.id))]
    for linked_row in linked:
        before = snapshot(linked_row)
        linked_row.item_value_id = None
        uow.session.flush()
        uow.audit.record(actor, f"{linked_row.__audit_entity__}.detach", linked_row, before=before, after=linked_row,
                         reason=reason or "the value it was about was removed", site_id=site_id)


def _changed_paths(plan: FormPlan) -> list[str]:
    return ([str(columns["item_id"]) for columns in plan.creates] + [row.item_id for row, _ in plan.updates]
            + [row.item_id for row in plan.deletes])


def _review_labs(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, plan: FormPlan, rows: Mapping[str, ItemValue],
                 on_date: date, today: date, events: Mapping[tuple[str, int], StudyEvent],
                 current: StudyEvent) -> tuple[list[str], list[str]]:
    """Send each new or changed lab value with a LOINC code to the lab-safety review (issue 5):
    what it proposed, and what could not be graded (a term graded against a normal limit the form
    does not record)."""
    from cmvtrial.services.lab_safety import stage_lab_review

    changed = {str(columns["item_id"]) for columns in plan.creates} | {row.item_id for row, _ in plan.updates}
    items = plan.form.item_paths()
    ulns = uln_items(ctx.protocol)
    sample = plan.entry.values.get(sample_date_item(plan.form) or "")
    observed_on = sample.value if sample is not None and isinstance(sample.value, date) else on_date
    notes: list[str] = []
    not_graded: list[str] = []
    for path in sorted(changed):
        item, row = items.get(path), rows.get(path)
        if item is None or row is None or item.loinc is None or row.normalized_number is None:
            continue
        uln_row = rows.get(ulns.get(path, ""))
        try:
            review = stage_lab_review(
                uow, actor, ctx.subject.id, item.loinc, row.normalized_number, row.normalized_unit or "",
                observed_on=observed_on, uln=uln_row.normalized_number if uln_row is not None else None,
                baseline=_baseline_value(uow, ctx, plan.form.id, path, events, current), item_value_id=row.id, today=today)
        except InvalidInput as error:
            not_graded.append(f"{plan.form.id}.{path}: {error.message}")
            continue
        if review.outcome in ("proposed", "already_pending"):
            notes.append(f"{plan.form.id}.{path}: {review.reason}" if review.proposal is None else
                         f"{plan.form.id}.{path}: grade {review.proposal.grade} {review.proposal.term} proposed "
                         f"(proposal {review.proposal.id}) for the investigator")
    return notes, not_graded


def _baseline_value(uow: UnitOfWork, ctx: TreatmentContext, form_id: str, path: str,
                    events: Mapping[tuple[str, int], StudyEvent], current: StudyEvent) -> float | None:
    """The value at the baseline visit (none while entering the baseline itself)."""
    code = baseline_visit(ctx.protocol)
    event = events.get((code, 0)) if code else None
    if event is None or event.id == current.id:
        return None
    return uow.session.scalar(
        select(ItemValue.normalized_number).join(FormInstance, FormInstance.id == ItemValue.form_instance_id)
        .where(FormInstance.study_event_id == event.id, FormInstance.form_id == form_id, ItemValue.item_id == path)
        .limit(1))


def _stop_rule_inputs_changed(protocol: Protocol, plans: list[FormPlan], date_changes: bool) -> bool:
    """Whether this entry can move the end of treatment: the stop rule reads only the CMV-DNA
    results and the dates of their visits, and it ran after every earlier change of either, so an
    entry that touches neither (a blood count, say) leaves the end of treatment as it is."""
    spec = cmv_items(protocol)
    return spec is not None and (date_changes or any(plan.form.id == spec.form and plan.data_changed
                                                     for plan in plans))


def _apply_stop_rule(uow: UnitOfWork, actor: Actor, ctx: TreatmentContext, events: dict[tuple[str, int], StudyEvent],
                     reason: str | None, today: date) -> EndOfTreatmentChange | None:
    """The first CMV-DNA below the assay's limit (the protocol's negativity rule) ends treatment."""
    results = cmv_results(uow, ctx.subject.id, ctx.protocol, since=ctx.randomized_on)
    assay = ctx.protocol.assay.cmv_dna
    eot = end_of_treatment_date(assay, results)
    why = None
    if eot is not None:
        lloq = f"{assay.lloq.value:g} {assay.lloq.unit}"
        why = (f"CMV-DNA of {eot.isoformat()} below the assay's limit of quantification ({lloq}) or not detected: "
               f"the protocol's stop rule ({assay.negativity.consecutive_below_lloq} consecutive negative result(s))")
    return sync_end_of_treatment(uow, actor, ctx, events, eot, why=why, reason=reason, today=today)


def _result(ctx: TreatmentContext, scheduled: ScheduledVisit, on_date: date, plans: list[FormPlan],
            deviation: str | None, *, changed: bool, opened: Sequence[int] = (), closed: Sequence[int] = (),
            invalidated: Sequence[str] = (), reviews: Sequence[str] = (), not_graded: Sequence[str] = (),
            eot: EndOfTreatmentChange | None = None) -> VisitEntry:
    forms = tuple(FormResult(plan.form.id, plan.repeat, plan.status, tuple(str(c["item_id"]) for c in plan.creates),
                             tuple(row.item_id for row, _ in plan.updates), tuple(row.item_id for row in plan.deletes),
                             plan.entry.findings, plan.entry.missing_required) for plan in plans)
    return VisitEntry(ctx.subject.id, ctx.label, ctx.site_code, scheduled.label, on_date, forms, deviation,
                      tuple(opened), tuple(closed), tuple(invalidated), tuple(reviews), tuple(not_graded), eot,
                      changed)
