"""Recording study-drug administrations and holds (DESIGN.md §3 step 4; issue 4 "Dosing").

Every dose given, held or missed is one row: drug, dose and unit, route, date and time, who gave it,
the reason for a hold or a change, and — when the dose was calculated here — the inputs it came
from. The rules are the core's (``core.administrations.check_administration``), applied to the subject's
*stored* facts: their arm (a drug the arm does not receive is refused, ``DrugNotInArm``), their
randomization date and their end of treatment (a dose after the first negative CMV-DNA is refused,
``OutsideTreatmentPeriod``), and the day they left the trial (a dose after a withdrawal is refused,
``AfterWithdrawal``; services/end_of_study.py). Soft departures — an IL-2 dose on an off day, a dose that differs from
the calculated one — are recorded with their findings.

When the record gives the dosing inputs (``"basis": {"weight_kg": ..., "crcl_ml_min": ...}``), the
weight-based dose is calculated (``core.dosing.weight_based_dose``) with the subject's most recent
blood counts on or before the day, so a hold the label requires and a dose that differs from the
calculated one both need a reason. A day holds as many records of a drug as its frequency allows
(one for a daily or less frequent drug); a second one is refused. The first dose given moves a
randomized subject to ``on_treatment``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cmvtrial.core.administrations import check_administration
from cmvtrial.core.dosing import HOURS_PER_DAY, find_regimen, weight_based_dose
from cmvtrial.core.schedule import parse_visit_label
from cmvtrial.errors import AlreadyExists, InvalidInput, NotFound
from cmvtrial.services import permissions, visits
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.services.visits import TreatmentContext
from cmvtrial.store.tables import DoseAdministration, FormInstance, ItemValue, StudyEvent, User

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.dosing import DoseDecision
    from cmvtrial.core.protocol import Regimen

FIELDS = ("drug", "status", "dose", "unit", "route", "date", "time", "given_by", "reason", "visit", "basis")
BASIS_FIELDS = ("weight_kg", "crcl_ml_min")


@dataclass(frozen=True)
class AdministrationView:
    id: int
    subject_id: int
    subject: str
    drug: str
    status: str
    dose: float | None
    unit: str | None
    planned_dose: float | None
    route: str | None
    date: date
    time: datetime | None
    study_day: int
    given_by: str | None
    reason: str | None
    findings: tuple[str, ...]
    visit: str | None
    recorded_by: str
    recorded_at: datetime

    def to_dict(self) -> dict[str, object]:
        from cmvtrial.core.audit_chain import to_jsonable

        return dict(to_jsonable({name: getattr(self, name) for name in self.__dataclass_fields__}))


@dataclass(frozen=True)
class AdministrationInput:
    drug: str
    status: str
    on_date: date
    dose: float | None = None
    unit: str | None = None
    route: str | None = None
    administered_at: datetime | None = None
    given_by: str | None = None
    reason: str | None = None
    visit: str | None = None
    basis: dict[str, float] | None = None


def parse_administration(data: object) -> AdministrationInput:
    """A record as JSON: ``{"drug", "status"?, "dose"?, "unit"?, "route"?, "date"? , "time"?,
    "given_by"?, "reason"?, "visit"?, "basis"?}``; ``time`` is an ISO date-time with its offset and
    gives the date when ``date`` is absent. Every problem is InvalidInput naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidInput("an administration record must be a JSON object", field="record")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown field(s) {', '.join(unknown)}; expected {', '.join(FIELDS)}", field=unknown[0])
    text = {name: _optional_text(data, name) for name in ("drug", "status", "unit", "route", "given_by", "reason",
                                                          "visit")}
    if not text["drug"]:
        raise InvalidInput("the drug is required", field="drug")
    dose = data.get("dose")
    if dose is not None and (isinstance(dose, bool) or not isinstance(dose, (int, float)) or not math.isfinite(dose)):
        raise InvalidInput(f"dose must be a number (got {dose!r})", field="dose", value=str(dose))
    moment = _moment(data.get("time"))
    on_date = _date(data.get("date")) if data.get("date") is not None else (moment.date() if moment else None)
    if on_date is None:
        raise InvalidInput('give the date ("date": YYYY-MM-DD) or the time ("time": YYYY-MM-DDTHH:MM+HH:MM)',
                           field="date")
    if moment is not None and moment.date() != on_date:
        raise InvalidInput(f"the time {moment.isoformat()} is not on the date {on_date.isoformat()}", field="time")
    return AdministrationInput(text["drug"], text["status"] or "given", on_date, dose, text["unit"],  # type: ignore[arg-type]
                               text["route"], moment, text["given_by"], text["reason"], text["visit"],
                               _basis(data.get("basis")))


def _optional_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text", field=name, value=str(value))
    return value.strip() or None


def _date(value: object) -> date:
    try:
        if isinstance(value, str) and len(value.strip()) == 10:
            return date.fromisoformat(value.strip())
    except ValueError:
        pass
    raise InvalidInput(f"date must be YYYY-MM-DD (got {value!r})", field="date", value=str(value))


def _moment(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip()) if isinstance(value, str) and "T" in value else None
    except ValueError:
        moment = None
    if moment is None or moment.utcoffset() is None:
        raise InvalidInput(f"time must be YYYY-MM-DDTHH:MM with its offset, e.g. +08:00 (got {value!r})",
                           field="time", value=str(value))
    return moment


def _basis(value: object) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - set(BASIS_FIELDS):
        raise InvalidInput(f"basis must be an object of {', '.join(BASIS_FIELDS)}", field="basis")
    basis = {}
    for name, number in value.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise InvalidInput(f"basis.{name} must be a number", field=f"basis.{name}", value=str(number))
        basis[str(name)] = float(number)
    return basis


# ------------------------------------------------------------------------------------------------
# Use cases


def _hold_labs(uow: UnitOfWork, ctx: TreatmentContext, regimen: Regimen, on_date: date) -> dict[str, float]:
    """The most recent value of each item the regimen's holds read, on or before ``on_date``."""
    labs: dict[str, float] = {}
    for form_id in sorted({hold.form for hold in regimen.holds}):
        rows = uow.session.execute(
            select(ItemValue.item_id, ItemValue.normalized_number)
            .join(FormInstance, FormInstance.id == ItemValue.form_instance_id)
            .join(StudyEvent, StudyEvent.id == FormInstance.study_event_id)
            .where(FormInstance.subject_id == ctx.subject.id, FormInstance.form_id == form_id,
                   StudyEvent.actual_date <= on_date, ItemValue.normalized_number.is_not(None))
            .order_by(StudyEvent.actual_date, StudyEvent.id))
        for item_id, number in rows:
            labs[item_id] = number  # later rows win
    return labs


def _planned(uow: UnitOfWork, ctx: TreatmentContext, record: AdministrationInput) -> DoseDecision | None:
    if record.basis is None:
        return None
    regimen = find_regimen(ctx.protocol, record.drug, ctx.arm_id)
    return weight_based_dose(ctx.protocol, regimen, weight_kg=record.basis.get("weight_kg"),
                             crcl_ml_min=record.basis.get("crcl_ml_min"),
                             labs=_hold_labs(uow, ctx, regimen, record.on_date))


def _per_day(regimen: Regimen) -> int:
    hours = regimen.frequency.every_hours
    return max(1, math.floor(HOURS_PER_DAY / hours)) if hours else 1


def record_administration(
    uow: UnitOfWork, actor: Actor, subject_id: int, record: AdministrationInput | Mapping[str, object], *, today: date
) -> AdministrationView:
    """Record one administration, hold or missed dose of a study drug (see the module docstring)."""
    permissions.require(actor, "dose.record")
    visits.require_date(today, "today")
    entry = record if isinstance(record, AdministrationInput) else parse_administration(record)
    if entry.on_date > today:
        raise InvalidInput(f"the administration date {entry.on_date.isoformat()} is after today ({today.isoformat()})",
                           field="date", value=entry.on_date.isoformat())
    with uow:
        subject = visits.subject_in_scope(uow, actor, "dose.record", subject_id, lock=True)
        ctx = visits.treatment_context(uow, subject)
        visits.refuse_after_leaving(ctx, entry.on_date, f"a dose of {entry.drug}")
        planned = _planned(uow, ctx, entry)
        checked = check_administration(
            ctx.protocol, arm_id=ctx.arm_id, drug=entry.drug, status=entry.status, on_date=entry.on_date,
            randomized_on=ctx.randomized_on, end_of_treatment=subject.end_of_treatment_date, dose=entry.dose,
            unit=entry.unit, route=entry.route, given_by=entry.given_by, administered_at=entry.administered_at,
            reason=entry.reason, planned=planned)
        regimen = find_regimen(ctx.protocol, checked.drug, ctx.arm_id)
        same_day = list(uow.session.scalars(select(DoseAdministration).where(
            DoseAdministration.subject_id == subject.id, DoseAdministration.drug == checked.drug,
            DoseAdministration.administered_on == checked.on_date)))
        if len(same_day) >= _per_day(regimen):
            first = same_day[0]
            raise AlreadyExists(f"{checked.drug} of {checked.on_date.isoformat()} is already recorded "
                                f"({first.status}{f' {first.dose:g} {first.dose_unit}' if first.dose else ''})",
                                field="date", value=checked.on_date.isoformat())
        event_id = None
        if entry.visit is not None:
            event = visits.stored_events(uow, subject.id).get(parse_visit_label(ctx.protocol, entry.visit))
            if event is None:
                raise NotFound(f"subject {ctx.label} has no recorded visit {entry.visit}", field="visit",
                               value=entry.visit)
            event_id = event.id
        now = uow.clock()
        row = DoseAdministration(subject_id=subject.id, study_event_id=event_id, **checked.storage(),
                                 given_by=checked.given_by, findings=list(checked.findings) or None,
                                 basis=planned.basis if planned else None, recorded_at=now,
                                 recorded_by_user_id=actor.user_id)
        uow.session.add(row)
        uow.session.flush()
        uow.audit.record(actor, f"dose.{checked.status}", row, after=row, reason=checked.reason,
                         site_id=subject.site_id)
        if checked.status == "given" and subject.status == "randomized":
            before = snapshot(subject)
            subject.status, subject.updated_at = "on_treatment", now
            uow.session.flush()
            uow.audit.record(actor, "subject.start_treatment", subject, before=before, after=subject,
                             reason=f"first dose of {checked.drug} on {checked.on_date.isoformat()}")
        view = _view(uow, ctx, row)
        uow.commit()
    return view


def list_administrations(uow: UnitOfWork, actor: Actor, subject_id: int) -> list[AdministrationView]:
    """The subject's administrations, holds and missed doses, in date order."""
    with uow.reading():
        subject = visits.subject_in_scope(uow, actor, "subject.view", subject_id)
        ctx = visits.treatment_context(uow, subject)
        rows = uow.session.scalars(select(DoseAdministration).where(DoseAdministration.subject_id == subject.id)
                                   .order_by(DoseAdministration.administered_on, DoseAdministration.id))
        return [_view(uow, ctx, row) for row in rows]


def _view(uow: UnitOfWork, ctx: TreatmentContext, row: DoseAdministration) -> AdministrationView:
    recorder = uow.session.get(User, row.recorded_by_user_id)
    event = uow.session.get(StudyEvent, row.study_event_id) if row.study_event_id else None
    return AdministrationView(
        id=row.id, subject_id=ctx.subject.id, subject=ctx.label, drug=row.drug, status=row.status, dose=row.dose,
        unit=row.dose_unit or None, planned_dose=row.planned_dose, route=row.route or None,
        date=row.administered_on, time=row.administered_at, study_day=(row.administered_on - ctx.randomized_on).days,
        given_by=row.given_by, reason=row.reason, findings=tuple(row.findings or ()),
        visit=visits.visit_label(event.visit_code, event.repeat_index) if event else None,
        recorded_by=recorder.username if recorder else str(row.recorded_by_user_id), recorded_at=row.recorded_at)
