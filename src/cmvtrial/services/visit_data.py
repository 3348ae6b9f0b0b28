"""The visit data as stored, read back: values as submissions, the CMV-DNA results, the latest labs.

Shared by the data-entry service (which re-checks a whole form from what is stored plus what is
submitted, and runs the stop rule over every stored CMV-DNA result), the subject summary and the
analysis snapshot. Where a protocol keeps CMV-DNA, a sample date or a ULN is found from the
protocol itself (its time-to-event endpoint, its codelists, its ``multiple_of_uln`` derived
values), never from item ids written here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cmvtrial.core.schedule import DETECTED_BELOW_LLOQ, NOT_DETECTED, QUANTIFIED, CmvResult
from cmvtrial.errors import CmvtrialError
from cmvtrial.services import visits
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import protocol_of_version
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import FormInstance, ItemValue, StudyEvent

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Form, Protocol

_INTEGER_TEXT = re.compile(r"[-+]?\d+")


def stored_submission_value(row: ItemValue) -> object:
    """What to submit again to reproduce a stored item value (so a merged form re-checks exactly)."""
    if row.entered_value is None:
        return {"missing_reason": row.missing_reason} if row.missing_reason else None
    text = row.entered_value
    if row.value_type == "quantity":
        number: object = int(text) if _INTEGER_TEXT.fullmatch(text) else float(text)
        return {"value": number, "unit": row.entered_unit}
    if row.value_type == "integer":
        return int(text)
    if row.value_type == "boolean":
        return text == "true"
    if row.value_type == "code_list":
        return json.loads(text)
    return text


@dataclass(frozen=True)
class CmvItems:
    """Where a protocol records CMV-DNA: the form, the load item, the result category and the sample date."""

    form: str
    load: str
    category: str | None
    sample_date: str | None


#: cmv_items per protocol object (a parsed protocol is immutable and kept for the process's life);
#: the protocol is kept beside its answer so a recycled ``id`` can never match another protocol.
_CMV_ITEMS: dict[int, tuple[Protocol, CmvItems | None]] = {}
_CMV_ITEMS_KEPT = 32


def cmv_items(protocol: Protocol) -> CmvItems | None:
    """The CMV-DNA form and items: the time-to-event endpoint's measure (as the analyses read it),
    else the first visit-form item in the assay's unit; the category is the code item whose
    codelist holds the stop rule's result categories. Worked out once per protocol (every visit
    write asks)."""
    known = _CMV_ITEMS.get(id(protocol))
    if known is not None and known[0] is protocol:
        return known[1]
    found = _find_cmv_items(protocol)
    if len(_CMV_ITEMS) >= _CMV_ITEMS_KEPT:
        _CMV_ITEMS.clear()  # a process that parses many protocols (the tests) keeps only the recent ones
    _CMV_ITEMS[id(protocol)] = (protocol, found)
    return found


def _find_cmv_items(protocol: Protocol) -> CmvItems | None:
    measures = [m for e in protocol.endpoints if e.analysis == "kaplan_meier_logrank_cox" for m in e.measures]
    candidates = [tuple(m.split(".", 1)) for m in measures if "." in m]
    primary = protocol.assay.cmv_dna.primary_unit
    candidates += [(f.id, path) for f in protocol.forms if f.id != protocol.screening_form
                   for path, item in f.item_paths().items() if item.unit == primary]
    for form_id, load in candidates:
        try:
            form = protocol.form(form_id)
        except CmvtrialError:
            continue
        if form_id == protocol.screening_form or load not in form.item_paths():
            continue
        wanted = {QUANTIFIED, DETECTED_BELOW_LLOQ, NOT_DETECTED}
        category = next((path for path, item in form.item_paths().items() if item.type == "code" and item.codelist
                         and wanted <= set(protocol.codelist(item.codelist).codes)), None)
        return CmvItems(form_id, load, category, sample_date_item(form))
    return None


def sample_date_item(form: Form) -> str | None:
    """A non-repeating form's first date item is when its sample was taken (or its assessment made)."""
    if form.repeating:
        return None
    return next((path for path, item in form.item_paths().items() if item.type == "date"), None)


def uln_items(protocol: Protocol) -> dict[str, str]:
    """item -> the item holding its upper limit of normal, as the protocol pairs them (the
    ``multiple_of_uln`` derived values: inputs [value, uln])."""
    return {spec.inputs[0]: spec.inputs[1] for spec in protocol.derived_values
            if spec.method == "multiple_of_uln" and len(spec.inputs) == 2}


def baseline_visit(protocol: Protocol) -> str | None:
    for visit in protocol.visits:
        if visit.anchor == "randomization" and visit.repeat is None and visit.day == 0:
            return visit.code
    return None


def cmv_results(uow: UnitOfWork, subject_id: int, protocol: Protocol, *, since: date | None = None) -> list[CmvResult]:
    """The subject's stored CMV-DNA results from visit forms (sample date, category, load)."""
    spec = cmv_items(protocol)
    if spec is None:
        return []
    unit = protocol.item(spec.form, spec.load).unit
    query = (select(FormInstance.id, StudyEvent.actual_date, ItemValue.item_id, ItemValue.normalized_number,
                    ItemValue.normalized_text)
             .join(StudyEvent, StudyEvent.id == FormInstance.study_event_id)
             .join(ItemValue, ItemValue.form_instance_id == FormInstance.id)
             .where(FormInstance.subject_id == subject_id, FormInstance.form_id == spec.form))
    found: dict[int, dict[str, Any]] = {}
    for instance_id, visit_day, item_id, number, text in uow.session.execute(query):
        entry = found.setdefault(instance_id, {"date": visit_day})
        entry[item_id] = number if item_id == spec.load else text
    results = []
    for entry in found.values():
        sample = entry.get(spec.sample_date or "")
        on = date.fromisoformat(sample) if isinstance(sample, str) else entry["date"]
        category = entry.get(spec.category or "")
        load = entry.get(spec.load)
        if on is None or (since is not None and on < since) or (category is None and load is None):
            continue
        if category in (None, QUANTIFIED) and load is None:
            continue  # a category without its load is not a result yet
        results.append(CmvResult(on, category, load, unit if load is not None else None))
    return results


@dataclass(frozen=True)
class LabValue:
    """One lab value; a CMV-DNA result below the limit carries its category in ``result``."""

    form: str
    item: str
    label: str
    visit: str
    date: date | None
    value: float | None
    unit: str | None
    entered: str | None
    entered_unit: str | None
    result: str | None = None


def latest_labs(uow: UnitOfWork, actor: Actor, subject_id: int) -> list[LabValue]:
    """The most recent value of every numeric visit item with a LOINC code (`cmvtrial subject show`)."""
    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "subject.view", subject_id)
        protocol = protocol_of_version(uow, subject.protocol_version_id)
        cmv = cmv_items(protocol)
        query = (select(FormInstance.form_id, StudyEvent.visit_code, StudyEvent.repeat_index, StudyEvent.actual_date,
                        ItemValue)
                 .join(StudyEvent, StudyEvent.id == FormInstance.study_event_id)
                 .join(ItemValue, ItemValue.form_instance_id == FormInstance.id)
                 .where(FormInstance.subject_id == subject.id, FormInstance.form_id != protocol.screening_form)
                 .order_by(StudyEvent.actual_date, StudyEvent.id, ItemValue.id))
        latest: dict[tuple[str, str], tuple[int, LabValue]] = {}
        categories: dict[int, str | None] = {}
        for form_id, code, index, on, row in uow.session.execute(query):
            if cmv is not None and form_id == cmv.form and row.item_id == cmv.category:
                categories[row.form_instance_id] = row.normalized_text
            if row.normalized_number is None:
                continue
            try:
                item = protocol.item(form_id, row.item_id)
            except CmvtrialError:
                continue
            if item.loinc is not None:
                latest[(form_id, row.item_id)] = (row.form_instance_id, LabValue(
                    form_id, row.item_id, item.display_label, visits.visit_label(code, index), on,
                    row.normalized_number, row.normalized_unit, row.entered_value, row.entered_unit))
        found = []
        for instance_id, value in latest.values():
            category = categories.get(instance_id)
            if category in (DETECTED_BELOW_LLOQ, NOT_DETECTED):
                value = replace(value, value=None, result=str(category).replace("_", " "))
            found.append(value)
        return sorted(found, key=lambda value: (value.form, value.item))


# ------------------------------------------------------------------------------------------------
# One visit's stored values, and the CMV-DNA series (the subject and visit pages)


@dataclass(frozen=True)
class FormValues:
    """One stored form of a visit: its status and each value as it would be submitted again."""

    form_id: str
    repeat: int
    status: str
    values: dict[str, object]


@dataclass(frozen=True)
class VisitValues:
    subject_id: int
    subject: str
    site_id: int
    visit: str
    status: str | None
    actual_date: date | None
    deviation: str | None
    forms: tuple[FormValues, ...]

    def form(self, form_id: str) -> list[FormValues]:
        """The stored copies of one form, first copy first."""
        return sorted((found for found in self.forms if found.form_id == form_id), key=lambda found: found.repeat)


def visit_values(uow: UnitOfWork, actor: Actor, subject_id: int, visit: str) -> VisitValues:
    """What is stored for one visit of a randomized subject (the visit page fills its forms with
    it): each form's status and values, as ``enter_visit_data`` would take them again."""
    from cmvtrial.core.schedule import parse_visit_label

    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "subject.view", subject_id)
        ctx = visits.treatment_context(uow, subject)
        key = parse_visit_label(ctx.protocol, visit)
        event = visits.stored_events(uow, subject.id).get(key)
        forms: list[FormValues] = []
        if event is not None:
            instances = uow.session.scalars(select(FormInstance).where(FormInstance.study_event_id == event.id)
                                            .order_by(FormInstance.form_id, FormInstance.form_repeat))
            for instance in instances:
                rows = uow.session.scalars(select(ItemValue).where(ItemValue.form_instance_id == instance.id,
                                                                   ItemValue.item_group_repeat == 0))
                forms.append(FormValues(instance.form_id, instance.form_repeat, instance.status,
                                        {row.item_id: stored_submission_value(row) for row in rows}))
        return VisitValues(subject.id, ctx.label, subject.site_id, visits.visit_label(*key), event.status if event else None,
                           event.actual_date if event else None, event.deviation if event else None, tuple(forms))


@dataclass(frozen=True)
class CmvPoint:
    sample_date: date
    study_day: int
    load: float | None  # in ``CmvSeries.unit``; None below the limit or not detected
    category: str | None
    negative: bool


@dataclass(frozen=True)
class CmvSeries:
    """A randomized subject's CMV-DNA results over time, in the assay's primary unit, with the
    limit of quantification in that unit (the line a plot draws) and the end of treatment."""

    subject_id: int
    subject: str
    unit: str
    lloq: float
    randomized_on: date
    end_of_treatment: date | None
    points: tuple[CmvPoint, ...]


def cmv_series(uow: UnitOfWork, actor: Actor, subject_id: int) -> CmvSeries:
    """The subject's CMV-DNA results (sample date order), each judged negative or not by the
    protocol's assay rule, for the subject page's plot."""
    from cmvtrial.core.form_entry import clean_number
    from cmvtrial.core.protocol import Quantity
    from cmvtrial.core.schedule import is_cmv_negative

    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "subject.view", subject_id)
        ctx = visits.treatment_context(uow, subject)
        assay = ctx.protocol.assay.cmv_dna
        points = []
        for result in sorted(cmv_results(uow, subject.id, ctx.protocol), key=lambda r: r.sample_date):
            load = None
            if result.load is not None and result.unit is not None:
                load = clean_number(assay.in_primary_unit(Quantity(value=result.load, unit=result.unit)))
            points.append(CmvPoint(result.sample_date, (result.sample_date - ctx.randomized_on).days, load,
                                   result.category, is_cmv_negative(assay, result)))
        return CmvSeries(subject.id, ctx.label, assay.primary_unit, clean_number(assay.in_primary_unit(assay.lloq)),
                         ctx.randomized_on, subject.end_of_treatment_date, tuple(points))
