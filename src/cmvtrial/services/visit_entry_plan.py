"""A visit's submission checked and planned before anything is written: the first step of data entry.

Why a step of its own (services/data_entry.py stores what this returns): every form of a submission
is merged with what the visit already holds (a key replaces a value, ``null`` removes it, a
computed item whose inputs are all there is computed again) and checked whole by
``core.form_entry.validate_form``, so a cross-item check always sees the full form; the result is a
``FormPlan`` per form — the rows to create, change and delete and the form's new status. Planning
only reads: every problem of every form is raised at once, before the data-entry service writes
anything, so bad input changes nothing, not even the audit trail. A sample date after ``today`` is
refused here too; one outside the visit's window only becomes part of the deviation text.

``parse_visit_submission`` reads the JSON a user submits (CLI file, API body) into a
``VisitSubmission``; services/data_entry.py re-exports both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, select

from cmvtrial.core.form_entry import FormEntry, computed_inputs, validate_form
from cmvtrial.core.schedule import ScheduledVisit
from cmvtrial.errors import CmvtrialError, InvalidInput
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import sample_date_item, stored_submission_value
from cmvtrial.store.tables import FormInstance, ItemValue, StudyEvent

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Form, Protocol

#: The columns of an item value that hold the value itself (``EnteredValue.storage()``).
VALUE_COLUMNS = ("item_id", "value_type", "entered_value", "entered_unit", "normalized_number", "normalized_text",
                 "normalized_unit", "missing_reason")


@dataclass(frozen=True)
class VisitSubmission:
    """The JSON a user submits for one visit (docs/treatment-and-visits.md "Entering visit data")."""

    forms: dict[str, Any]
    visit: str | None = None
    visit_date: date | None = None
    complete: bool | tuple[str, ...] = False


def parse_visit_submission(data: object) -> VisitSubmission:
    """``{"visit"?, "date"?, "forms": {form_id: {item: value} | [ {...}, ... ]}, "complete"?}``."""
    if not isinstance(data, Mapping):
        raise InvalidInput('visit data must be a JSON object with "forms"', field="forms")
    unknown = sorted(set(data) - {"visit", "date", "forms", "complete", "day", "repeat"})
    if unknown:
        raise InvalidInput(f"unknown key(s) {', '.join(unknown)}; expected visit, date, forms, complete",
                           field=unknown[0])
    forms = data.get("forms")
    if not isinstance(forms, Mapping) or not forms:
        raise InvalidInput('"forms" must be an object of form ids to item values', field="forms")
    on = data.get("date")
    visit_date = None
    if on is not None:
        try:
            visit_date = date.fromisoformat(on) if isinstance(on, str) and len(on) == 10 else None
        except ValueError:
            visit_date = None
        if visit_date is None:
            raise InvalidInput(f'"date" must be a date YYYY-MM-DD (got {on!r})', field="date", value=str(on))
    complete = data.get("complete", False)
    if isinstance(complete, list) and all(isinstance(form_id, str) for form_id in complete):
        complete = tuple(complete)
    elif not isinstance(complete, bool):
        raise InvalidInput('"complete" must be true, false or a list of form ids', field="complete")
    visit = data.get("visit")
    if visit is not None and not isinstance(visit, str):
        raise InvalidInput('"visit" must be a visit label such as BL or TW3', field="visit")
    return VisitSubmission(dict(forms), visit, visit_date, complete)


# ------------------------------------------------------------------------------------------------
# Stored values <-> submissions


def _is_missing_answer(value: object) -> bool:
    return isinstance(value, Mapping) and set(value) == {"missing_reason"}


def _merge(form: Form, rows: Mapping[str, ItemValue], submission: Mapping[str, object]) -> dict[str, object]:
    """Stored values (by dotted path) overlaid with the submission; ``null`` removes a value."""
    merged: dict[str, object] = {path: stored_submission_value(row) for path, row in rows.items()}
    groups = {item.id for item in form.items if item.type == "group"}
    for key, value in submission.items():
        if key in groups and isinstance(value, Mapping) and not _is_missing_answer(value):
            merged.pop(key, None)  # answering a group's items replaces a "not done" for the group
            for child, child_value in value.items():
                path = f"{key}.{child}"
                if child_value is None:
                    merged.pop(path, None)
                else:
                    merged[path] = child_value
            continue
        if key in groups:
            for path in [path for path in merged if path.startswith(f"{key}.")]:
                merged.pop(path)
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    for path, names in computed_inputs(form).items():
        if path not in submission and all(name in merged and not _is_missing_answer(merged[name]) for name in names):
            merged.pop(path, None)  # its inputs are all there: computed again, never carried over
    nested: dict[str, object] = {}
    for path, value in merged.items():
        head, _, tail = path.partition(".")
        if tail and head in groups:
            group = nested.setdefault(head, {})
            if isinstance(group, dict):
                group[tail] = value
        else:
            nested[path] = value
    return nested


# ------------------------------------------------------------------------------------------------
# Planning one form's changes (no writes)


@dataclass
class FormPlan:
    """What entering one form will write: the rows to create, change and delete, and its status."""

    form: Form
    repeat: int
    instance: FormInstance | None
    rows: dict[str, ItemValue]
    entry: FormEntry
    status: str
    creates: list[dict[str, object]] = field(default_factory=list)
    updates: list[tuple[ItemValue, dict[str, object]]] = field(default_factory=list)
    deletes: list[ItemValue] = field(default_factory=list)

    @property
    def data_changed(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    @property
    def changed(self) -> bool:
        return self.data_changed or self.instance is None or self.instance.status != self.status


def _plan_form(protocol: Protocol, form_id: str, repeat: int, submission: object, instance: FormInstance | None,
               rows: dict[str, ItemValue], complete: bool) -> FormPlan:
    form = protocol.form(form_id)
    if not isinstance(submission, Mapping):
        raise InvalidInput(f"form '{form_id}' must be an object of item ids to values", field=form_id)
    entry = validate_form(protocol, form_id, _merge(form, rows, submission))
    if complete:
        entry.require_complete()
    was_complete = instance is not None and instance.status == "complete"
    status = "complete" if complete or (was_complete and entry.complete) else "in_progress"
    plan = FormPlan(form, repeat, instance, rows, entry, status)
    new = {path: value.storage() for path, value in entry.values.items()}
    for path, columns in new.items():
        row = rows.get(path)
        if row is None:
            plan.creates.append(columns)
        elif any(getattr(row, name) != columns[name] for name in VALUE_COLUMNS):
            plan.updates.append((row, columns))
    plan.deletes = [row for path, row in rows.items() if path not in new]
    return plan


def _submissions(scheduled: ScheduledVisit, protocol: Protocol, forms: Mapping[str, object]) -> list[tuple[str, int, object]]:
    if not isinstance(forms, Mapping) or not forms:
        raise InvalidInput("give the values of at least one form", field="forms")
    listed: list[tuple[str, int, object]] = []
    for form_id, value in forms.items():
        if form_id not in scheduled.forms:
            raise InvalidInput(f"form '{form_id}' is not collected at {scheduled.label} (its forms: "
                               f"{', '.join(scheduled.forms)})", field=str(form_id), value=str(form_id))
        if protocol.form(form_id).repeating and isinstance(value, Sequence) and not isinstance(value, str):
            listed.extend((form_id, index, each) for index, each in enumerate(value))
        else:
            listed.append((form_id, 0, value))
    return listed


def _raise_all(errors: list[tuple[str, CmvtrialError]]) -> None:
    first = errors[0][1]
    if len(errors) == 1:
        raise first
    problems: list[dict[str, Any]] = []
    for form_id, error in errors:
        problems.extend(error.details.get("problems") or [{"location": form_id, "message": error.message}])
    details = {key: value for key, value in first.details.items() if key != "problems"}
    raise type(first)(f"{first.message} (and problems in {len(errors) - 1} more form(s))", problems=problems,
                      **details)


# ------------------------------------------------------------------------------------------------
# Planning a visit's forms (reads only)


#: A visit's stored instances of some forms, each with its values (none for an empty instance).
_STORED_FORMS = (
    select(FormInstance, ItemValue)
    .outerjoin(ItemValue, and_(ItemValue.form_instance_id == FormInstance.id, ItemValue.item_group_repeat == 0))
    .where(FormInstance.study_event_id == bindparam("event"), FormInstance.form_id.in_(bindparam("forms", expanding=True)))
)


def plan_forms(uow: UnitOfWork, protocol: Protocol, scheduled: ScheduledVisit, event: StudyEvent | None,
               forms: Mapping[str, object], complete: bool | Sequence[str]) -> list[FormPlan]:
    """One plan per submitted form (a repeating form's list gives one per instance), or one error
    listing every problem of every form: nothing is written until all of them pass."""
    submissions = _submissions(scheduled, protocol, forms)
    if not isinstance(complete, bool):
        unknown = [form_id for form_id in complete if form_id not in forms]
        if unknown:
            raise InvalidInput(f"cannot mark {', '.join(unknown)} complete: not submitted", field="complete")
    instances: dict[tuple[str, int], FormInstance] = {}
    rows: dict[int, dict[str, ItemValue]] = {}
    if event is not None:
        # The submitted forms' instances with their values, in one round trip.
        found = uow.session.execute(_STORED_FORMS, {"event": event.id, "forms": sorted({form for form, _, _ in submissions})})
        for instance, row in found:
            instances[(instance.form_id, instance.form_repeat)] = instance
            values = rows.setdefault(instance.id, {})
            if row is not None:
                values[row.item_id] = row
    plans: list[FormPlan] = []
    errors: list[tuple[str, CmvtrialError]] = []
    for form_id, repeat, submission in submissions:
        instance = instances.get((form_id, repeat))
        wanted = complete if isinstance(complete, bool) else form_id in complete
        try:
            plans.append(_plan_form(protocol, form_id, repeat, submission, instance,
                                    rows.get(instance.id, {}) if instance else {}, wanted))
        except InvalidInput as error:
            errors.append((form_id, error))
    if errors:
        _raise_all(errors)
    return plans


def sample_deviations(plans: list[FormPlan], scheduled: ScheduledVisit, today: date) -> str | None:
    """A sample dated outside the visit's window, as deviation text; a sample dated after ``today``
    is refused (before anything is written, like every other problem)."""
    texts = []
    for plan in plans:
        path = sample_date_item(plan.form)
        value = plan.entry.values.get(path) if path else None
        sample = value.value if value is not None else None
        if not isinstance(sample, date):
            continue
        if sample > today:
            raise InvalidInput(f"{plan.form.id}.{path} {sample.isoformat()} is after today ({today.isoformat()})",
                               field=f"{plan.form.id}.{path}", value=sample.isoformat())
        days = scheduled.window_deviation_days(sample)
        if days:
            texts.append(f"{plan.form.id}.{path} {sample.isoformat()} is outside the window of {scheduled.label}")
    return "; ".join(texts) or None
