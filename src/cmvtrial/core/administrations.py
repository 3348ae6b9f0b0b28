"""Recording an administration: the days a regimen is given, and whether a given dose, a hold or a
missed dose may be recorded for a subject at all.

Why apart from the dose calculation (:mod:`cmvtrial.core.dosing`): calculating a dose needs a
weight, a creatinine clearance and counts; recording one needs the subject's arm, randomization
date and end of treatment. :func:`check_administration` applies the rules a record obeys: the drug
must be one the subject's arm receives (else ``DrugNotInArm``), the date must fall within treatment
(else ``OutsideTreatmentPeriod``), the route is the regimen's, a hold or a changed dose has a
reason. Soft departures (an IL-2 dose on an off day) come back as findings. The regimen, its start,
stop rule and frequency are the protocol file's.

Pure: dates come in, nothing is read from a clock, a database or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Literal

from cmvtrial.core import units
from cmvtrial.core.dosing import HOURS_PER_DAY, DoseDecision, describe_frequency, find_regimen
from cmvtrial.core.units import clean_number
from cmvtrial.errors import InvalidInput, OutsideTreatmentPeriod, UnitError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol, Regimen


# ------------------------------------------------------------------------------------------------
# Dosing days


def treatment_start(regimen: Regimen, randomized_on: date) -> date:
    return randomized_on + timedelta(days=regimen.start.day)


def treatment_stop(regimen: Regimen, randomized_on: date, end_of_treatment: date | None) -> date | None:
    """The last day the regimen may be given: end of treatment (CMV negativity), or the fixed course."""
    if regimen.stop.rule == "fixed_days" and regimen.stop.days is not None:
        fixed = treatment_start(regimen, randomized_on) + timedelta(days=regimen.stop.days - 1)
        return fixed if end_of_treatment is None else min(fixed, end_of_treatment)
    return end_of_treatment


def is_dosing_day(regimen: Regimen, randomized_on: date, on_date: date) -> bool | None:
    """Whether the regimen's frequency falls on ``on_date`` (every n days from its start day);
    None for "n times a week", which fixes no days."""
    offset = (on_date - treatment_start(regimen, randomized_on)).days
    if offset < 0:
        return False
    frequency = regimen.frequency
    if frequency.every_days is not None:
        return offset % frequency.every_days == 0
    if frequency.every_hours is not None:
        return frequency.every_hours <= HOURS_PER_DAY or (offset * HOURS_PER_DAY) % frequency.every_hours == 0
    return None


def dosing_days(regimen: Regimen, randomized_on: date, *, through: date, end_of_treatment: date | None = None) -> tuple[date, ...]:
    """The days the regimen is given from its start to ``through`` (or to the end of treatment,
    whichever is first): day 0, 2, 4 … for every other day; every day for daily."""
    stop = treatment_stop(regimen, randomized_on, end_of_treatment)
    last = through if stop is None else min(through, stop)
    day = treatment_start(regimen, randomized_on)
    days = []
    while day <= last:
        if is_dosing_day(regimen, randomized_on, day) is not False:
            days.append(day)
        day += timedelta(days=1)
    return tuple(days)


# ------------------------------------------------------------------------------------------------
# Recording an administration


AdministrationStatus = Literal["given", "held", "missed"]


@dataclass(frozen=True)
class CheckedAdministration:
    """An administration (or hold, or missed dose) that may be recorded, and what to flag about it."""

    drug: str
    status: AdministrationStatus
    on_date: date
    study_day: int
    dose: float | None
    unit: str | None
    dose_in_regimen_unit: float | None
    route: str | None
    given_by: str | None
    administered_at: datetime | None
    reason: str | None
    planned_dose: float | None
    findings: tuple[str, ...]

    def storage(self) -> dict[str, object]:
        """The columns of the store's dose administration (``store.tables.DoseAdministration``)."""
        return {"drug": self.drug, "status": self.status, "planned_dose": self.planned_dose, "dose": self.dose,
                "dose_unit": self.unit or "", "route": self.route or "", "administered_on": self.on_date,
                "administered_at": self.administered_at, "reason": self.reason}


def check_administration(
    protocol: Protocol,
    *,
    arm_id: str,
    drug: str,
    status: str,
    on_date: date,
    randomized_on: date,
    end_of_treatment: date | None = None,
    dose: float | None = None,
    unit: str | None = None,
    route: str | None = None,
    given_by: str | None = None,
    administered_at: datetime | None = None,
    reason: str | None = None,
    planned: DoseDecision | None = None,
) -> CheckedAdministration:
    """Check one administration record against the subject's arm and treatment period (see the
    module docstring). Refusals: ``DrugNotInArm``, ``OutsideTreatmentPeriod``; bad fields: InvalidInput."""
    if status not in ("given", "held", "missed"):
        raise InvalidInput(f"status must be given, held or missed (got {status!r})", field="status", value=status)
    if not isinstance(on_date, date) or isinstance(on_date, datetime):
        raise InvalidInput("the administration date must be a date", field="on_date", value=on_date)
    regimen = find_regimen(protocol, drug, arm_id)
    start = treatment_start(regimen, randomized_on)
    if on_date < start:
        raise OutsideTreatmentPeriod(
            f"{regimen.drug} starts on {start.isoformat()} (day {regimen.start.day} after randomization); "
            f"nothing can be recorded for {on_date.isoformat()}", field="on_date", value=on_date.isoformat())
    stop = treatment_stop(regimen, randomized_on, end_of_treatment)
    if stop is not None and on_date > stop:
        why = "treatment ended" if stop == end_of_treatment else "the fixed course ended"
        raise OutsideTreatmentPeriod(
            f"{why} on {stop.isoformat()}: no dose of {regimen.drug} may be recorded for {on_date.isoformat()}",
            field="on_date", value=on_date.isoformat(), end_of_treatment=stop.isoformat())
    if administered_at is not None and (not isinstance(administered_at, datetime) or administered_at.utcoffset() is None):
        raise InvalidInput("the administration time must carry its time zone", field="administered_at")
    reason = reason.strip() if isinstance(reason, str) and reason.strip() else None
    findings: list[str] = []
    if status != "given":
        if reason is None:
            raise InvalidInput(f"a {status} dose of {regimen.drug} needs a reason", field="reason")
        if dose not in (None, 0):
            raise InvalidInput(f"a {status} dose records no amount (got {dose})", field="dose", value=dose)
        return CheckedAdministration(regimen.drug, status, on_date, (on_date - randomized_on).days, None, None, None,
                                     None, given_by, administered_at, reason,
                                     planned.dose if planned else None, ())  # type: ignore[arg-type]
    converted = _given_dose(regimen, dose, unit)
    if route is None or route != regimen.route:
        raise InvalidInput(f"{regimen.drug} is given {regimen.route} in this protocol, not {route or 'without a route'}",
                           field="route", value=route)
    if not isinstance(given_by, str) or not given_by.strip():
        raise InvalidInput("who gave the dose is required", field="given_by")
    if planned is not None:
        if planned.hold:
            if reason is None:
                raise InvalidInput(f"{regimen.drug} is on hold ({'; '.join(v.id for v in planned.holds if v.applies)}): "
                                   "giving it needs a reason", field="reason")
            findings.append(f"given although a hold applies: {', '.join(v.id for v in planned.holds if v.applies)}")
        if abs(converted - planned.dose) > 1e-9 * max(1.0, planned.dose):
            if reason is None:
                raise InvalidInput(f"the dose {converted:g} {regimen.administered_unit} differs from the calculated "
                                   f"{planned.dose:g} {planned.unit}: a reason for the change is required", field="reason")
            findings.append(f"dose {converted:g} {regimen.administered_unit} differs from the calculated {planned.dose:g}")
    if is_dosing_day(regimen, randomized_on, on_date) is False:
        findings.append(f"{on_date.isoformat()} is not a scheduled day for {regimen.drug} "
                        f"({describe_frequency(regimen.frequency)} from day {regimen.start.day})")
    return CheckedAdministration(
        drug=regimen.drug, status="given", on_date=on_date, study_day=(on_date - randomized_on).days,
        dose=float(dose), unit=units.canonical_unit(unit or ""), dose_in_regimen_unit=converted, route=route,  # type: ignore[arg-type]
        given_by=given_by.strip(), administered_at=administered_at, reason=reason,
        planned_dose=planned.dose if planned else None, findings=tuple(findings),
    )


def _given_dose(regimen: Regimen, dose: float | None, unit: str | None) -> float:
    if dose is None or isinstance(dose, bool) or not isinstance(dose, (int, float)) or dose != dose:
        raise InvalidInput(f"a given dose of {regimen.drug} needs its amount", field="dose", value=dose)
    if dose <= 0:
        raise InvalidInput(f"a given dose must be greater than 0 (got {dose:g})", field="dose", value=dose)
    if not unit:
        raise UnitError(f"the dose unit is required ({regimen.administered_unit} for {regimen.drug})", field="unit")
    try:
        code = units.canonical_unit(unit)
    except UnitError:
        raise UnitError(f"unknown dose unit '{unit}'", field="unit", value=unit) from None
    if not units.are_compatible(code, regimen.administered_unit):
        raise UnitError(f"{regimen.drug} is dosed in {regimen.administered_unit}, not {code}", field="unit", value=unit)
    return clean_number(units.convert(float(dose), code, regimen.administered_unit))

