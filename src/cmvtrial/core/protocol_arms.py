"""Treatment arms and their regimens in a protocol: doses, frequencies, renal bands, holds, rounding.

Why data: the dose a subject gets is the protocol's decision (a label's renal table, a trial's hold
rule on a blood count, how finely a weight-based dose is drawn up), so it is written in the protocol
file and the dosing engine (:mod:`cmvtrial.core.dosing`) only applies it. Checks on one regimen
(bands that overlap, a per-kg dose with a flat basis) live on the models; checks across the file
are in :mod:`cmvtrial.core.protocol_checks`. Re-exported by :mod:`cmvtrial.core.protocol`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from cmvtrial.core import units
from cmvtrial.core.protocol_fields import Code, ExpressionText, Identifier, Notes, StopRuleName, Text, Unit, _Model

__all__ = [
    "Arm", "Dose", "DoseRounding", "Frequency", "Hold", "Regimen", "RenalBand", "Start", "Stop", "WeightRecalculation",
]



class Dose(_Model):
    value: PositiveFloat
    unit: Unit
    per: Literal["administration", "day"] = "administration"


class Frequency(_Model):
    every_days: PositiveInt | None = None
    every_hours: PositiveInt | None = None
    times_per_week: PositiveInt | None = None
    cdisc: str | None = Field(None, description="SDTM EXDOSFRQ term, e.g. QD, QOD.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Frequency:
        given = [n for n in ("every_days", "every_hours", "times_per_week") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of every_days, every_hours, times_per_week")
        return self


class Start(_Model):
    anchor: Literal["randomization"]
    day: NonNegativeInt = 0


class Stop(_Model):
    rule: StopRuleName
    days: PositiveInt | None = None

    @model_validator(mode="after")
    def _days_for_fixed(self) -> Stop:
        if (self.rule == "fixed_days") != (self.days is not None):
            raise ValueError("rule fixed_days needs days; other rules take none")
        return self


class RenalBand(_Model):
    """One row of a label's renal table: applies when crcl_min <= CrCl < crcl_below (mL/min)."""

    crcl_min: NonNegativeFloat = 0
    crcl_below: PositiveFloat | None = None
    dose: Dose
    frequency: Frequency
    notes: Notes = ()

    @model_validator(mode="after")
    def _ordered(self) -> RenalBand:
        if self.crcl_below is not None and self.crcl_below <= self.crcl_min:
            raise ValueError(f"crcl_below {self.crcl_below} must be above crcl_min {self.crcl_min}")
        return self


class DoseRounding(_Model):
    """Round a computed dose to the nearest multiple of ``nearest`` ``unit`` (half up).

    Why in the protocol: how finely a weight-based dose is drawn up is a trial decision (vial
    sizes, pharmacy practice), not a fact about the drug; the label gives none.
    """

    nearest: PositiveFloat
    unit: Unit


class WeightRecalculation(_Model):
    """Recalculate a body-weight-based dose when the weight has changed by more than
    ``change_above_percent`` of the weight the current dose was computed from."""

    change_above_percent: float = Field(gt=0, le=100)


class Hold(_Model):
    """Withhold a dose while the expression (over the items of ``form``) is true."""

    id: Code
    form: Identifier
    expression: ExpressionText
    reason: Text
    notes: Notes = ()


class Regimen(_Model):
    drug: Text
    dose: Dose
    dose_basis: Literal["flat", "actual_body_weight", "ideal_body_weight", "adjusted_body_weight"] = "flat"
    route: Literal["subcutaneous", "intravenous", "oral", "intramuscular"]
    frequency: Frequency
    infusion_minutes: PositiveInt | None = None
    start: Start
    stop: Stop
    renal_adjustment: tuple[RenalBand, ...] = ()
    holds: tuple[Hold, ...] = ()
    dose_rounding: DoseRounding | None = None
    weight_recalculation: WeightRecalculation | None = None
    notes: Notes = ()

    @property
    def administered_unit(self) -> str:
        """The unit one administration is measured in: ``mg`` for a ``mg/kg`` dose, else the dose's."""
        unit = self.dose.unit
        return units.canonical_unit(unit.removesuffix("/kg")) if unit.endswith("/kg") else unit

    @model_validator(mode="after")
    def _consistent(self) -> Regimen:
        per_kg = self.dose.unit.endswith("/kg")
        if per_kg != (self.dose_basis != "flat"):
            raise ValueError(
                f"dose unit {self.dose.unit} and dose_basis {self.dose_basis} disagree: "
                "a per-kg dose needs a body-weight basis and a flat dose needs 'flat'"
            )
        if self.infusion_minutes is not None and self.route != "intravenous":
            raise ValueError("infusion_minutes applies to intravenous regimens only")
        bands = sorted(self.renal_adjustment, key=lambda band: band.crcl_min)
        for lower, upper in zip(bands, bands[1:], strict=False):
            if lower.crcl_below is None or lower.crcl_below > upper.crcl_min:
                raise ValueError(f"renal bands starting at {lower.crcl_min} and {upper.crcl_min} overlap")
        for band in self.renal_adjustment:
            if band.dose.unit != self.dose.unit:
                raise ValueError(f"renal band dose unit {band.dose.unit} differs from the regimen's {self.dose.unit}")
        if self.dose_rounding is not None and not units.are_compatible(self.dose_rounding.unit, self.administered_unit):
            raise ValueError(
                f"dose_rounding unit {self.dose_rounding.unit} does not measure a dose in {self.administered_unit}"
            )
        if self.weight_recalculation is not None and self.dose_basis == "flat":
            raise ValueError("weight_recalculation applies to body-weight-based doses only")
        return self


class Arm(_Model):
    id: Identifier
    label: Text
    role: Literal["experimental", "active_comparator", "placebo_comparator", "no_intervention", "other"]
    description: str | None = None
    registry_group_type: str | None = Field(None, description="What the registry record calls this arm.")
    regimens: tuple[Regimen, ...] = Field(min_length=1)
    notes: Notes = ()
