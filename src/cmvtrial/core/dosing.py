"""Dosing: the ganciclovir dose by weight, renal function and blood counts, and the holds that
withhold a dose.

Why everything comes from the regimen (DESIGN.md §3 step 4, "protocol as data"): the trial gives
ganciclovir 5 mg/kg/day by actual body weight, which is the label's *maintenance* dose, so the
label's maintenance renal table applies (reference/domain.md §1.1-§1.2); the label's hematologic
"do not administer" thresholds (§1.3) are the regimen's ``holds`` (expressions over the hematology
form); how a dose is rounded and when a weight change calls for a new dose are the regimen's
``dose_rounding`` and ``weight_recalculation``. This module holds the mechanism only — no
threshold, dose or band is written here.

- :func:`weight_based_dose` — the dose for one administration: the renal band for the creatinine
  clearance, mg/kg × weight, rounded, the interval, and the holds judged on the counts given. The
  result lists its reasons (the band chosen, the rounding, each hold and what it read).
- :func:`weight_change` — whether a new weight moves more than the protocol's tolerance away from
  the weight the current dose was computed with.

The days a regimen is given and the check of a recorded administration are in
:mod:`cmvtrial.core.administrations`.

Pure: values come in, nothing is read from a clock, a database or the environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from cmvtrial.core import units
from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.item_values import to_primary_unit
from cmvtrial.core.units import clean_number
from cmvtrial.errors import DrugNotInArm, InvalidInput, NotFound

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Dose, Frequency, Hold, Protocol, Regimen, RenalBand

#: A lab value for a hold: a number in the item's primary unit, or (number, unit).
LabValue = float | tuple[float, str]

HOURS_PER_DAY = 24
DAYS_PER_WEEK = 7


# ------------------------------------------------------------------------------------------------
# Finding the regimen


def _same_drug(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def find_regimen(protocol: Protocol, drug: str, arm_id: str | None = None) -> Regimen:
    """The regimen of ``drug`` in ``arm_id`` (or in the first arm that gives it).

    ``DrugNotInArm`` when the arm does not give it; ``NotFound`` when no arm of the protocol does."""
    arms = [protocol.arm(arm_id)] if arm_id is not None else list(protocol.arms)
    for arm in arms:
        for regimen in arm.regimens:
            if _same_drug(regimen.drug, drug):
                return regimen
    if arm_id is not None:
        arm = arms[0]
        given = ", ".join(regimen.drug for regimen in arm.regimens)
        raise DrugNotInArm(
            f"arm '{arm.id}' ({arm.label}) does not receive {drug}; it receives {given}",
            field="drug", value=drug, arm=arm.id,
        )
    known = sorted({regimen.drug for arm in protocol.arms for regimen in arm.regimens})
    raise NotFound(f"protocol {protocol.id} gives no {drug}; its drugs: {', '.join(known)}", field="drug", value=drug)


# ------------------------------------------------------------------------------------------------
# Frequencies and bands


def interval_hours(frequency: Frequency) -> float | None:
    """Hours between administrations; None for "n times a week" (no fixed interval)."""
    if frequency.every_hours is not None:
        return float(frequency.every_hours)
    if frequency.every_days is not None:
        return float(frequency.every_days * HOURS_PER_DAY)
    return None


def describe_frequency(frequency: Frequency) -> str:
    if frequency.every_hours is not None:
        return f"every {frequency.every_hours} h"
    if frequency.every_days is not None:
        return "every day" if frequency.every_days == 1 else f"every {frequency.every_days} days"
    return f"{frequency.times_per_week} times a week"


def _per_administration(dose: Dose, frequency: Frequency) -> float:
    """The amount of one administration (a ``per: day`` dose spread over the administrations)."""
    if dose.per == "administration":
        return dose.value
    hours = interval_hours(frequency)
    if hours is not None:
        return dose.value * hours / HOURS_PER_DAY
    return dose.value * DAYS_PER_WEEK / float(frequency.times_per_week or 1)


def renal_band(regimen: Regimen, crcl_ml_min: float) -> RenalBand | None:
    """The row of the regimen's renal table for this clearance (crcl_min <= CrCl < crcl_below);
    None when the regimen has no table. InvalidInput when the table leaves the clearance uncovered."""
    if not regimen.renal_adjustment:
        return None
    for band in regimen.renal_adjustment:
        if crcl_ml_min >= band.crcl_min and (band.crcl_below is None or crcl_ml_min < band.crcl_below):
            return band
    raise InvalidInput(f"no renal band of the {regimen.drug} regimen covers a creatinine clearance of "
                       f"{crcl_ml_min:g} mL/min", field="crcl", value=crcl_ml_min)


def _band_text(band: RenalBand) -> str:
    if band.crcl_below is None:
        return f"{band.crcl_min:g} mL/min and above"
    return f"{band.crcl_min:g} to below {band.crcl_below:g} mL/min"


def round_dose(regimen: Regimen, amount: float) -> float:
    """``amount`` (in the regimen's administered unit) rounded as the protocol says: to the nearest
    multiple of ``dose_rounding.nearest``, halves up. Unchanged when the protocol gives no rule."""
    rule = regimen.dose_rounding
    if rule is None:
        return clean_number(amount)
    step = units.convert(rule.nearest, rule.unit, regimen.administered_unit)
    steps = (Decimal(repr(amount)) / Decimal(repr(step))).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return clean_number(float(steps) * step)


# ------------------------------------------------------------------------------------------------
# Holds


@dataclass(frozen=True)
class HoldVerdict:
    """One hold rule judged: ``applies`` is None when a count it needs was not given."""

    id: str
    reason: str
    applies: bool | None
    used: dict[str, object]
    missing: tuple[str, ...]
    units: dict[str, str] = field(default_factory=dict)

    def shown(self) -> str:
        """The values read, with their units: ``anc = 0.4 10*9/L``."""
        return ", ".join(f"{name} = {value:g}{' ' + self.units[name] if name in self.units else ''}"
                         if isinstance(value, (int, float)) and not isinstance(value, bool) else f"{name} = {value}"
                         for name, value in self.used.items())

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "reason": self.reason, "applies": self.applies, "used": self.used,
                "units": self.units, "missing": list(self.missing)}


def judge_holds(protocol: Protocol, regimen: Regimen, labs: Mapping[str, LabValue]) -> tuple[HoldVerdict, ...]:
    """Each hold of the regimen over ``labs`` (item id -> value); values are converted to the
    hold form's item units first (500 /µL is 0.5 × 10⁹/L), so a site may give either."""
    verdicts = []
    for hold in regimen.holds:
        values = _hold_values(protocol, hold, labs)
        outcome = compile_expression(hold.expression).evaluate(values)
        applies = None if outcome.value is None else bool(outcome.value)
        items = protocol.form(hold.form).item_paths()
        item_units = {name: unit for name in outcome.used if (unit := getattr(items.get(name), "unit", None))}
        verdicts.append(HoldVerdict(hold.id, hold.reason, applies, dict(outcome.used), tuple(sorted(outcome.missing)),
                                    item_units))
    return tuple(verdicts)


def _hold_values(protocol: Protocol, hold: Hold, labs: Mapping[str, LabValue]) -> dict[str, object]:
    items = protocol.form(hold.form).item_paths()
    values: dict[str, object] = {}
    for name, given in labs.items():
        item = items.get(name)
        if item is None or given is None:
            continue
        number, unit = given if isinstance(given, tuple) else (given, None)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise InvalidInput(f"{name} must be a number", field=name, value=number)
        if number < 0:
            raise InvalidInput(f"{name} cannot be negative (got {number:g})", field=name, value=number)
        values[name] = to_primary_unit(item, float(number), unit, path=name)[0] if item.unit else number
    return values


def item_for_loinc(protocol: Protocol, form_id: str, loinc: str) -> str | None:
    """The id of the item of ``form_id`` coded with ``loinc`` (how an adapter maps a lab to an item
    without knowing the protocol's item ids); None when the form has none."""
    for path, item in protocol.form(form_id).item_paths().items():
        if item.loinc == loinc:
            return path
    return None


# ------------------------------------------------------------------------------------------------
# The dose


@dataclass(frozen=True)
class DoseDecision:
    """The dose for one administration, with its reasons and the inputs it used (``basis``)."""

    drug: str
    dose: float                  # rounded, in ``unit``
    unit: str                    # the administered unit (mg for a mg/kg regimen)
    dose_per_kg: float | None    # the protocol's mg/kg for one administration (None for a flat dose)
    calculated: float            # before rounding
    interval_h: float | None
    frequency: str
    route: str
    hold: bool
    holds: tuple[HoldVerdict, ...]
    reasons: tuple[str, ...]
    basis: dict[str, object] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """The five keys of ``cmvtrial dose gcv --json``."""
        return {"dose_mg": self.dose, "dose_mg_per_kg": self.dose_per_kg, "interval_h": self.interval_h,
                "hold": self.hold, "reasons": list(self.reasons)}


def _positive_number(value: object, name: str, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number of {unit}", field=name, value=value)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{name} must be a finite number", field=name, value=value)
    if number <= 0:
        raise InvalidInput(f"{name} must be greater than 0 {unit} (got {number:g})", field=name, value=number)
    return number


def weight_based_dose(
    protocol: Protocol,
    regimen: Regimen,
    *,
    weight_kg: float | None,
    crcl_ml_min: float | None,
    labs: Mapping[str, LabValue] | None = None,
) -> DoseDecision:
    """The dose of ``regimen`` for one administration (see the module docstring).

    ``weight_kg`` is needed for a body-weight-based regimen, ``crcl_ml_min`` (Cockcroft-Gault) for one
    with a renal table; missing or impossible values are InvalidInput. ``labs`` holds the counts the
    holds read (item id -> number in the item's unit, or (number, unit)); a hold whose count is not
    given is listed as not checked, and does not hold the dose.
    """
    reasons: list[str] = []
    basis: dict[str, object] = {}
    per_kg = regimen.dose_basis != "flat"
    if per_kg and regimen.dose_basis != "actual_body_weight":
        raise InvalidInput(f"dose basis {regimen.dose_basis} needs height and sex, which dosing does not take; "
                           "the protocol must dose by actual body weight", field="dose_basis")
    if per_kg:
        if weight_kg is None:
            raise InvalidInput(f"{regimen.drug} is dosed by body weight: the weight is required", field="weight_kg")
        weight = _positive_number(weight_kg, "weight_kg", "kg")
        basis["weight_kg"] = weight
    dose, frequency = regimen.dose, regimen.frequency
    if regimen.renal_adjustment:
        if crcl_ml_min is None:
            raise InvalidInput(f"{regimen.drug} is adjusted by creatinine clearance: CrCl (mL/min) is required",
                               field="crcl")
        numeric = isinstance(crcl_ml_min, (int, float)) and not isinstance(crcl_ml_min, bool)
        if not numeric or not math.isfinite(crcl_ml_min) or crcl_ml_min < 0:
            raise InvalidInput(f"the creatinine clearance must be a number of mL/min, 0 or more (got {crcl_ml_min})",
                               field="crcl", value=crcl_ml_min)
        basis["crcl_ml_min"] = float(crcl_ml_min)
        band = renal_band(regimen, float(crcl_ml_min))
        assert band is not None
        dose, frequency = band.dose, band.frequency
        reasons.append(f"CrCl {crcl_ml_min:g} mL/min: renal band {_band_text(band)} gives "
                       f"{band.dose.value:g} {band.dose.unit} {describe_frequency(band.frequency)}")
        reasons.extend(band.notes)
    amount_per_unit = _per_administration(dose, frequency)
    calculated = amount_per_unit * weight if per_kg else amount_per_unit
    rounded = round_dose(regimen, calculated)
    if per_kg:
        reasons.append(f"{amount_per_unit:g} {dose.unit} × {weight:g} kg = {clean_number(calculated):g} "
                       f"{regimen.administered_unit}")
    if regimen.dose_rounding is not None and rounded != clean_number(calculated):
        rule = regimen.dose_rounding
        reasons.append(f"rounded to the nearest {rule.nearest:g} {rule.unit}: {rounded:g} {regimen.administered_unit}")

    verdicts = judge_holds(protocol, regimen, labs or {})
    basis["labs"] = {name: list(value) if isinstance(value, tuple) else value for name, value in (labs or {}).items()}
    for verdict in verdicts:
        if verdict.applies:
            reasons.append(f"withhold ({verdict.id}): {verdict.reason} ({verdict.shown()})")
        elif verdict.applies is None:
            reasons.append(f"hold {verdict.id} not checked: {', '.join(verdict.missing)} not given")
    hold = any(verdict.applies for verdict in verdicts)
    return DoseDecision(
        drug=regimen.drug,
        dose=rounded,
        unit=regimen.administered_unit,
        dose_per_kg=clean_number(amount_per_unit) if per_kg else None,
        calculated=clean_number(calculated),
        interval_h=interval_hours(frequency),
        frequency=describe_frequency(frequency),
        route=regimen.route,
        hold=hold,
        holds=verdicts,
        reasons=tuple(reasons),
        basis=basis,
    )


@dataclass(frozen=True)
class WeightChange:
    recalculate: bool
    change_percent: float
    limit_percent: float | None
    reason: str


def weight_change(regimen: Regimen, dosed_weight_kg: float, current_weight_kg: float) -> WeightChange:
    """Whether ``current_weight_kg`` differs from the weight the current dose was computed with by
    more than the protocol's tolerance (strictly more: a change of exactly the tolerance keeps the dose)."""
    dosed = _positive_number(dosed_weight_kg, "dosed_weight_kg", "kg")
    current = _positive_number(current_weight_kg, "weight_kg", "kg")
    change = clean_number(abs(current - dosed) / dosed * 100)
    rule = regimen.weight_recalculation
    if rule is None:
        return WeightChange(False, change, None, f"the {regimen.drug} regimen sets no weight tolerance")
    recalculate = change > rule.change_above_percent
    verb = "recalculate the dose" if recalculate else "keep the dose"
    return WeightChange(recalculate, change, rule.change_above_percent,
                        f"weight {dosed:g} → {current:g} kg changes by {change:.3g}% "
                        f"({'more than' if recalculate else 'not more than'} {rule.change_above_percent:g}%): {verb}")
