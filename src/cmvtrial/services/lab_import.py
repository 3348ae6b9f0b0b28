"""Lab results from a hospital system (FHIR Observations) entered as a site would enter them.

Why through data entry and not into the tables: an imported result must pass the same checks,
open the same queries, go to the same lab-safety review, run the same stop rule and leave the same
audit trail as a typed one (issue 8) — so the import only decides *where* each result goes and
then calls ``data_entry.enter_visit_data`` with ``source="fhir"`` and a reason naming the bundle
and the Observation ids.

Where a result goes (``plan``), for one randomized subject:

1. **Item** — by LOINC code: a visit-form item carrying the code, or one whose code the shipped
   table ``reference_data/loinc_equivalents.yaml`` names as the same analyte in another property
   (CMV DNA in IU/mL for an item in copies/mL). No item: "unknown code", not imported.
2. **Visit** — the subject's visit whose window holds the result's effective date and which
   collects the item's form (one done that very day first, then one not yet done, then any);
   none: "outside every visit window", not imported.
3. **Value** — converted to the item's unit as typed entry converts it (its own unit, one of its
   alternative units, or a unit of the same dimension); anything else: "unit cannot be converted",
   not imported. A CMV-DNA result reported below a limit (comparator ``<``) is entered as
   "detected below the limit of quantification", one coded "not detected" as not detected, with the
   sample date as the form's sample date.
4. **Already there** — the same value already stored: "unchanged" (so importing a bundle twice
   creates nothing new); a different value stored: not imported, for a person to correct with a
   reason.

Each visit's results are then entered in one transaction; a visit the data-entry service refuses
(a hard limit, say) is reported with its message and the other visits still go in. ``dry_run``
runs every step, validation included, inside transactions that are rolled back.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cmvtrial.core.form_entry import to_primary_unit
from cmvtrial.core.schedule import DETECTED_BELOW_LLOQ, NOT_DETECTED, QUANTIFIED, ScheduledVisit, VisitStatus
from cmvtrial.errors import CmvtrialError, InvalidInput, Refused
from cmvtrial.services import visits
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visit_data import cmv_items, sample_date_item
from cmvtrial.store.tables import FormInstance, ItemValue

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Item, Protocol

SOURCE = "fhir"
IMPORTED, UNCHANGED, WOULD_IMPORT, NOT_IMPORTED = "imported", "unchanged", "would import", "not imported"
#: Relative tolerance within which an imported value equals the stored one (unit arithmetic noise).
SAME_VALUE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class LabResult:
    """One result as the hospital sent it (parsed from FHIR by adapters/interop/fhir_import.py)."""

    source_id: str                 # "Observation/cmv-1"
    codes: tuple[str, ...]         # LOINC codes of the result
    display: str
    effective: date
    value: float | None = None
    unit: str | None = None        # UCUM code or unit text
    comparator: str | None = None  # "<", "<=", ">=", ">"
    not_detected: bool = False


@dataclass(frozen=True)
class ImportLine:
    source_id: str
    code: str
    effective: date
    value: str
    outcome: str
    visit: str | None = None
    item: str | None = None
    message: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"observation": self.source_id, "code": self.code, "date": self.effective.isoformat(),
                "value": self.value, "outcome": self.outcome, "visit": self.visit, "item": self.item,
                "message": self.message}


@dataclass(frozen=True)
class ImportReport:
    subject: str
    source: str
    dry_run: bool
    lines: tuple[ImportLine, ...]
    visits_entered: tuple[str, ...] = ()
    queries_opened: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for line in self.lines if line.outcome == outcome)

    def to_dict(self) -> dict[str, object]:
        return {"subject": self.subject, "source": self.source, "dry_run": self.dry_run,
                "imported": self.count(IMPORTED), "would_import": self.count(WOULD_IMPORT),
                "unchanged": self.count(UNCHANGED), "not_imported": self.count(NOT_IMPORTED),
                "visits_entered": list(self.visits_entered), "queries_opened": self.queries_opened,
                "results": [line.to_dict() for line in self.lines]}


@dataclass
class _Target:
    result: LabResult
    visit: ScheduledVisit
    form: str
    path: str
    item: Item
    submitted: object
    normalized: float | None
    extra: dict[str, object] = field(default_factory=dict)

    def line(self, outcome: str, message: str = "") -> ImportLine:
        return ImportLine(self.result.source_id, self.result.codes[0] if self.result.codes else "", self.result.effective,
                          _shown(self.result), outcome, self.visit.label, f"{self.form}.{self.path}", message)


class _RolledBack(UnitOfWork):
    """A unit of work whose commit does nothing: leaving the block rolls everything back (dry run)."""

    def commit(self) -> None:
        self.session.flush()


def _shown(result: LabResult) -> str:
    if result.not_detected:
        return "not detected"
    if result.value is None:
        return ""
    return f"{result.comparator or ''}{result.value:g} {result.unit or ''}".strip()


@functools.lru_cache(maxsize=1)
def loinc_equivalents() -> dict[str, str]:
    """code -> the code of the same analyte it stands for (reference_data/loinc_equivalents.yaml)."""
    from cmvtrial.reference_data import load_mapping

    table = load_mapping("loinc_equivalents.yaml")
    return {str(entry["code"]): str(entry["same_as"]) for entry in table.get("equivalents", [])
            if isinstance(entry, dict) and entry.get("code") and entry.get("same_as")}


def items_by_loinc(protocol: Protocol) -> dict[str, list[tuple[str, str, Item]]]:
    """LOINC code -> every (form, item path, item) of a visit form carrying it (or an equivalent)."""
    found: dict[str, list[tuple[str, str, Item]]] = defaultdict(list)
    for form in protocol.forms:
        if form.id == protocol.screening_form:
            continue
        for path, item in form.item_paths().items():
            if item.loinc:
                found[item.loinc].append((form.id, path, item))
    for code, same_as in loinc_equivalents().items():
        if code not in found and same_as in found:
            found[code] = list(found[same_as])
    return dict(found)


def _choose_visit(calendar: Any, on: date, form_id: str) -> ScheduledVisit | None:
    candidates = [v for v in calendar.visits if v.status != VisitStatus.CANCELLED and form_id in v.forms
                  and v.window_deviation_days(on) == 0]
    for wanted in (lambda v: v.actual_date == on, lambda v: v.status != VisitStatus.DONE, lambda v: True):
        chosen = [v for v in candidates if wanted(v)]
        if chosen:
            return chosen[0]
    return None


def plan(uow: UnitOfWork, actor: Actor, subject_id: int, results: Sequence[LabResult], *,
         today: date) -> tuple[str, list[_Target], list[ImportLine]]:
    """Where each result would go (read only): the subject's label, the targets, and the lines of
    results that go nowhere (unknown code, no window, unit, duplicate, conflict, unchanged)."""
    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "form.enter", subject_id)
        ctx = visits.treatment_context(uow, subject)
        protocol = ctx.protocol
        events = visits.stored_events(uow, subject.id)
        latest = max([today, *(r.effective for r in results if r.effective <= today)])
        calendar = visits.calendar_of(ctx, events, today=today, through=latest)
        by_code = items_by_loinc(protocol)
        cmv = cmv_items(protocol)
        targets: list[_Target] = []
        skipped: list[ImportLine] = []
        seen: set[tuple[str, str, str]] = set()
        for result in results:
            line = functools.partial(ImportLine, result.source_id, result.codes[0] if result.codes else "",
                                     result.effective, _shown(result), NOT_IMPORTED)
            matches = [m for code in result.codes for m in by_code.get(code, [])]
            if not matches:
                skipped.append(line(message=f"unknown code: no item of protocol {protocol.id} has LOINC "
                                            f"{', '.join(result.codes)}" if result.codes else
                                            f"unknown code: '{result.display}' carries no LOINC code"))
                continue
            if result.effective > today:
                skipped.append(line(message=f"dated {result.effective.isoformat()}, after today ({today.isoformat()})"))
                continue
            chosen = None
            for form_id, path, item in matches:
                visit = _choose_visit(calendar, result.effective, form_id)
                if visit is not None:
                    chosen = (visit, form_id, path, item)
                    break
            if chosen is None:
                skipped.append(line(message=f"{result.effective.isoformat()} is outside every visit window of subject "
                                            f"{ctx.label} that collects {matches[0][0]}"))
                continue
            visit, form_id, path, item = chosen
            target = _target(result, visit, form_id, path, item, cmv, protocol)
            if isinstance(target, str):
                skipped.append(line(visit=visit.label, item=f"{form_id}.{path}", message=target))
                continue
            key = (visit.label, form_id, path)
            if key in seen:
                skipped.append(target.line(NOT_IMPORTED, "another result of this bundle goes to the same visit and "
                                                         "item (first one kept)"))
                continue
            seen.add(key)
            targets.append(target)
        kept = []
        for target in targets:
            stored = _stored(uow, events, target)
            if stored is None:
                kept.append(target)
            elif stored is True:
                skipped.append(target.line(UNCHANGED, "the same value is already recorded"))
            else:
                skipped.append(target.line(NOT_IMPORTED, f"a different value is already recorded ({stored}); "
                                                         "correct it by hand, with a reason"))
        return ctx.label, kept, skipped


def _target(result: LabResult, visit: ScheduledVisit, form_id: str, path: str, item: Item, cmv: Any,
            protocol: Protocol) -> _Target | str:
    is_cmv = cmv is not None and cmv.form == form_id and cmv.load == path
    form = protocol.form(form_id)
    extra: dict[str, object] = {}
    sample = sample_date_item(form)
    if sample and sample != path:
        extra[sample] = result.effective.isoformat()
    if result.not_detected or (result.comparator in ("<", "<=") and is_cmv):
        if not is_cmv or cmv.category is None:
            return "a result below a limit can only be entered for the CMV-DNA load"
        extra[cmv.category] = NOT_DETECTED if result.not_detected else DETECTED_BELOW_LLOQ
        return _Target(result, visit, form_id, path, item, {"value": 0, "unit": item.unit}, 0.0, extra)
    if result.comparator is not None:
        return f"a value given as '{result.comparator}{result.value:g}' is not a number the item can take"
    if result.value is None:
        return "the result has no value"
    try:
        normalized, _code = to_primary_unit(item, result.value, result.unit, path=f"{form_id}.{path}")
    except CmvtrialError as error:
        return f"unit cannot be converted: {error.message}"
    if is_cmv and cmv.category is not None:
        extra[cmv.category] = QUANTIFIED
    if item.type == "integer":
        return _Target(result, visit, form_id, path, item, int(result.value), normalized, extra)
    number = int(result.value) if float(result.value).is_integer() else result.value
    return _Target(result, visit, form_id, path, item, {"value": number, "unit": result.unit or item.unit},
                   normalized, extra)


def _stored(uow: UnitOfWork, events: dict[Any, Any], target: _Target) -> bool | str | None:
    """None: nothing stored for the item at that visit; True: the same value; else the stored value."""
    event = events.get(target.visit.key)
    if event is None:
        return None
    rows = {row.item_id: row for row in uow.session.scalars(
        select(ItemValue).join(FormInstance, FormInstance.id == ItemValue.form_instance_id)
        .where(FormInstance.study_event_id == event.id, FormInstance.form_id == target.form,
               FormInstance.form_repeat == 0))}
    row = rows.get(target.path)
    if row is None:
        return None
    same = row.normalized_number is not None and target.normalized is not None and \
        abs(row.normalized_number - target.normalized) <= SAME_VALUE_TOLERANCE * max(1.0, abs(target.normalized))
    for name, wanted in target.extra.items():
        other = rows.get(name)
        if other is None or other.normalized_text != str(wanted):
            same = False
    if same:
        return True
    return f"{row.entered_value} {row.entered_unit or ''}".strip()


def import_lab_results(uow: UnitOfWork, actor: Actor, subject_id: int, results: Sequence[LabResult], *,
                       today: date, source: str, dry_run: bool = False) -> ImportReport:
    """Plan, then enter each visit's results through data entry (see the module docstring)."""
    from cmvtrial.services.data_entry import enter_visit_data

    if not results:
        raise InvalidInput("the bundle holds no lab result to import", field="bundle")
    label, targets, lines = plan(uow, actor, subject_id, results, today=today)
    grouped: dict[str, list[_Target]] = defaultdict(list)
    for target in targets:
        grouped[target.visit.label].append(target)
    entered, opened = [], 0
    writer = _RolledBack(uow.session_factory, clock=uow.clock) if dry_run else uow
    for visit_label, group in grouped.items():
        forms: dict[str, dict[str, object]] = defaultdict(dict)
        for target in group:
            forms[target.form].update(target.extra)
            forms[target.form][target.path] = target.submitted
        visit = group[0].visit
        ids = ", ".join(target.result.source_id for target in group)
        reason = f"imported from FHIR ({source}): {ids}"
        try:
            result = enter_visit_data(writer, actor, subject_id, visit_label, dict(forms), today=today,
                                      visit_date=None if visit.actual_date else group[0].result.effective,
                                      reason=reason, source=SOURCE)
        except (InvalidInput, Refused) as error:
            lines += [target.line(NOT_IMPORTED, f"refused by data entry: {error.message}") for target in group]
            continue
        entered.append(visit_label)
        opened += len(result.queries_opened)
        lines += [target.line(WOULD_IMPORT if dry_run else IMPORTED) for target in group]
    order = {result.source_id: position for position, result in enumerate(results)}
    lines.sort(key=lambda line: order.get(line.source_id, len(order)))
    return ImportReport(label, source, dry_run, tuple(lines), tuple(entered), opened)

