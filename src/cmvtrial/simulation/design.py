"""What the in-silico trial takes from the protocol: arms, IL-2 dosing interval, visits, assay limit.

Why a separate, flat object: the simulator runs the trial the protocol describes, so the numbers that
define the trial (planned size and ratio, IL-2 every other day or daily, weekly visits and their
window, the week-12 visit, the assay's LLOQ and what "negative" means) are read from the protocol
once, here, and checked against the scenario's names for arms and visits. The kinetics and the
statistics then work on plain numbers. Nothing here is a trial-specific constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.scenario import Scenario, check_against_protocol

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol, Regimen, Visit

HOURS_PER_DAY = 24


@dataclass(frozen=True)
class Window:
    day: int
    before: int
    after: int


@dataclass(frozen=True)
class Hold:
    """Withhold the regimen while ``expression`` (over the items of ``form``) is true."""

    id: str
    form: str
    expression: str
    reason: str


@dataclass(frozen=True)
class RegimenSummary:
    """A regimen as the simulator records it (the dose itself is computed by the dosing rules)."""

    drug: str
    dose_value: float
    dose_unit: str
    dose_per: str
    route: str
    interval_days: int
    start_day: int
    holds: tuple[Hold, ...]


@dataclass(frozen=True)
class CreatinineClearance:
    """Cockcroft-Gault constants from the protocol, and its µmol/L → mg/dL divisor."""

    age_offset_years: float
    divisor: float
    female_factor: float
    umol_per_l_per_mg_dl: float

    def ml_min(self, age: object, weight_kg: object, creatinine_umol_per_l: object, female: object) -> object:
        """Vectorized Cockcroft-Gault: works on NumPy arrays or plain numbers."""
        creatinine_mg_dl = np.asarray(creatinine_umol_per_l) / self.umol_per_l_per_mg_dl
        male = (self.age_offset_years - np.asarray(age)) * np.asarray(weight_kg) / (self.divisor * creatinine_mg_dl)
        return np.where(np.asarray(female), self.female_factor * male, male)


@dataclass(frozen=True)
class TrialDesign:
    """The protocol's design as plain, picklable values (power runs may ship it to worker processes)."""

    protocol_id: str
    il2_arm: str
    control_arm: str
    il2_regimen: RegimenSummary
    common_regimens: tuple[RegimenSummary, ...]
    planned_total: int
    ratio: dict[str, int]
    baseline_visit: str
    treatment_visit: str
    treatment_every_days: int
    treatment_first_day: int
    treatment_window: Window
    treatment_max_count: int | None
    week12_visit: str
    week12: Window
    followup_visit: str
    followup: Window
    lloq_copies_per_ml: float
    #: The analysis enters a result below the LLOQ as this fraction of it (the SAP's convention).
    below_lloq_fraction_of_lloq: float
    lod_copies_per_ml: float | None
    iu_to_copies_factor: float
    consecutive_negatives: int
    prednisone_equivalence: dict[str, float]
    creatinine_clearance: CreatinineClearance
    block_sizes: tuple[int, ...]
    strata: tuple[str, ...]
    visit_forms: dict[str, tuple[str, ...]]

    @property
    def il2_interval_days(self) -> int:
        return self.il2_regimen.interval_days

    def planned_per_arm(self) -> dict[str, int]:
        """The planned size split by the allocation ratio (rounded down per arm)."""
        total_weight = sum(self.ratio.values())
        return {arm: self.planned_total * weight // total_weight for arm, weight in self.ratio.items()}


def _interval_days(regimen: Regimen) -> int:
    frequency = regimen.frequency
    if frequency.every_days is not None:
        return frequency.every_days
    if frequency.every_hours is not None and frequency.every_hours % HOURS_PER_DAY == 0:
        return frequency.every_hours // HOURS_PER_DAY
    raise InvalidInput(
        f"the simulator models regimens given every whole number of days; {regimen.drug} is not",
        field="frequency",
        value=frequency.model_dump(exclude_none=True),
    )


def _summary(regimen: Regimen) -> RegimenSummary:
    return RegimenSummary(
        drug=regimen.drug,
        dose_value=regimen.dose.value,
        dose_unit=regimen.dose.unit,
        dose_per=regimen.dose.per,
        route=regimen.route,
        interval_days=_interval_days(regimen),
        start_day=regimen.start.day,
        holds=tuple(Hold(hold.id, hold.form, hold.expression, hold.reason) for hold in regimen.holds),
    )


def _creatinine_clearance(protocol: Protocol) -> CreatinineClearance:
    constants = protocol.derivations.creatinine_clearance
    item = protocol.screening.item_paths().get("serum_creatinine")
    umol = [alt for alt in (item.alternative_units if item else ()) if alt.unit == "umol/L"]
    if item is None or item.unit != constants.serum_creatinine_unit or not umol:
        raise InvalidInput(
            "the simulator needs the screening item serum_creatinine in the Cockcroft-Gault unit "
            "with umol/L as an alternative unit",
            field="forms.screening.serum_creatinine",
        )
    return CreatinineClearance(
        age_offset_years=constants.age_offset_years,
        divisor=constants.divisor,
        female_factor=constants.female_factor,
        umol_per_l_per_mg_dl=1.0 / umol[0].to_primary(1.0),
    )


def _visit(protocol: Protocol, code: str, role: str) -> Visit:
    for visit in protocol.visits:
        if visit.code == code:
            return visit
    known = ", ".join(visit.code for visit in protocol.visits)
    raise InvalidInput(
        f"the scenario's {role} visit '{code}' is not a visit of protocol {protocol.id} (visits: {known})",
        field=f"visit_codes.{role}",
        value=code,
    )


def _window(visit: Visit) -> Window:
    return Window(day=visit.day or 0, before=visit.window.before_days, after=visit.window.after_days)


def _copies(protocol: Protocol, quantity: object) -> float:
    assay = protocol.assay.cmv_dna
    value = assay.in_primary_unit(quantity)  # type: ignore[arg-type]
    return value * assay.iu_to_copies_factor if assay.primary_unit == "[IU]/mL" else value


def design_from_protocol(protocol: Protocol, scenario: Scenario) -> TrialDesign:
    """Read the trial's design from ``protocol`` for the arms and visits ``scenario`` names."""
    check_against_protocol(scenario, protocol.id, tuple(arm.id for arm in protocol.arms))
    il2_arm, control_arm = protocol.arm(scenario.arms.il2), protocol.arm(scenario.arms.control)
    control_drugs = {regimen.drug for regimen in control_arm.regimens}
    extra = [regimen for regimen in il2_arm.regimens if regimen.drug not in control_drugs]
    if len(extra) != 1:
        raise InvalidInput(
            f"arm '{il2_arm.id}' should add exactly one regimen (IL-2) to arm '{control_arm.id}', "
            f"found {len(extra)}",
            field="arms",
            value=[regimen.drug for regimen in extra],
        )
    if set(protocol.randomization.ratio) != {il2_arm.id, control_arm.id}:
        raise InvalidInput(
            "the simulator runs two-arm trials; the protocol's ratio names "
            + ", ".join(protocol.randomization.ratio),
            field="randomization.ratio",
        )
    treatment = _visit(protocol, scenario.visit_codes.treatment, "treatment")
    if treatment.repeat is None:
        raise InvalidInput(
            f"the treatment visit '{treatment.code}' must repeat (weekly until CMV negative)",
            field="visit_codes.treatment",
            value=treatment.code,
        )
    assay = protocol.assay.cmv_dna
    return TrialDesign(
        protocol_id=protocol.id,
        il2_arm=il2_arm.id,
        control_arm=control_arm.id,
        il2_regimen=_summary(extra[0]),
        common_regimens=tuple(_summary(regimen) for regimen in control_arm.regimens),
        planned_total=protocol.population.target_enrollment,
        ratio=dict(protocol.randomization.ratio),
        baseline_visit=_visit(protocol, scenario.visit_codes.baseline, "baseline").code,
        treatment_visit=treatment.code,
        treatment_every_days=treatment.repeat.every_days,
        treatment_first_day=treatment.repeat.first_day,
        treatment_window=Window(0, treatment.window.before_days, treatment.window.after_days),
        treatment_max_count=treatment.repeat.max_count,
        week12_visit=scenario.visit_codes.week12,
        week12=_window(_visit(protocol, scenario.visit_codes.week12, "week12")),
        followup_visit=scenario.visit_codes.followup,
        followup=_window(_visit(protocol, scenario.visit_codes.followup, "followup")),
        lloq_copies_per_ml=_copies(protocol, assay.lloq),
        below_lloq_fraction_of_lloq=protocol.analysis.below_lloq_fraction_of_lloq,
        lod_copies_per_ml=_copies(protocol, assay.lod) if assay.lod is not None else None,
        iu_to_copies_factor=assay.iu_to_copies_factor,
        consecutive_negatives=assay.negativity.consecutive_below_lloq,
        prednisone_equivalence=dict(protocol.derivations.prednisone_equivalence),
        creatinine_clearance=_creatinine_clearance(protocol),
        block_sizes=tuple(protocol.randomization.block_sizes),
        strata=tuple(factor.name for factor in protocol.randomization.strata),
        visit_forms={visit.code: tuple(visit.forms) for visit in protocol.visits},
    )
