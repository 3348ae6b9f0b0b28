"""The protocol model: everything specific to one trial, as validated data.

Why: "protocol as data" (DESIGN.md §2). Arms and regimens, eligibility criteria and their thresholds,
the visit plan, forms and items, edit checks, randomization settings and endpoints live in a
versioned YAML file (``cmvtrial/protocols/<id>.yaml``); code implements mechanisms and reads the
numbers from here. The shape is the contract in ``docs/protocol-format.md``.

Checks that concern one part of the file (a negative dose, an unknown unit, a window wider than its
visit spacing) live on the models below; checks that relate parts to each other (an expression
naming an item that does not exist, a duplicate id, a ratio naming an unknown arm) live in
:mod:`cmvtrial.core.protocol_checks`, which locates every problem so the parser can point at the
line. Every model is frozen and forbids unknown fields, so a typo in a field name is an error, not
a silently ignored setting.

Forms, items, codelists and edit checks are in :mod:`cmvtrial.core.protocol_forms`, arms and
regimens in :mod:`cmvtrial.core.protocol_arms`, the shared field types in
:mod:`cmvtrial.core.protocol_fields`; all are re-exported here, so consumers import every model from
this module.

Units are stored as their canonical UCUM code (``IU/mL`` in the file becomes ``[IU]/mL``), so that
every consumer compares units in one vocabulary (:mod:`cmvtrial.core.units`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cmvtrial.core import units
from cmvtrial.core.expressions import CompiledExpression, compile_expression
from cmvtrial.core.protocol_analysis import AnalysisPlan, PopulationRule
from cmvtrial.core.protocol_arms import (
    Arm,
    Dose,
    DoseRounding,
    Frequency,
    Hold,
    Regimen,
    RenalBand,
    Start,
    Stop,
    WeightRecalculation,
)
from cmvtrial.core.protocol_fields import (
    DERIVATION_METHODS,
    AnalysisMethod,
    Anchor,
    Code,
    DerivationMethod,
    ExpressionText,
    Identifier,
    Notes,
    Text,
    Unit,
    _Model,
)
from cmvtrial.core.protocol_forms import (
    AlternativeUnit,
    Codelist,
    CodelistEntry,
    EditCheck,
    Form,
    Item,
    Limits,
    Sdtm,
)
from cmvtrial.errors import InvalidInput, NotFound

__all__ = [
    "DERIVATION_METHODS", "AlternativeUnit", "AnalysisPlan", "Arm", "Assay", "CmvDnaAssay", "Codelist", "CodelistEntry",
    "Criterion", "DerivedValue", "Derivations", "Design", "Dose", "DoseRounding", "EditCheck", "Endpoint",
    "Factor", "Form", "Frequency", "Hold", "Item", "Limits", "PopulationRule", "Protocol", "Quantity", "Randomization", "Regimen",
    "RenalBand", "Repeat", "Sdtm", "Start", "Stop", "Visit", "WeightRecalculation", "Window",
]

SCHEMA_VERSION = 1
#: Context key: the parser runs cross-part checks itself (to locate each problem in the file).
DEFER_CROSS_CHECKS = "defer_cross_checks"

# ------------------------------------------------------------------------------------------------
# Identity, population, design


class RegistryId(_Model):
    registry: Text
    id: Text


class Population(_Model):
    condition: Text
    description: str | None = None
    target_enrollment: PositiveInt
    enrollment_type: Literal["anticipated", "estimated", "actual"] | None = None
    min_age_years: NonNegativeInt | None = None
    max_age_years: NonNegativeInt | None = None
    sex: Literal["all", "female", "male"] = "all"
    healthy_volunteers: bool = False
    notes: Notes = ()

    @model_validator(mode="after")
    def _ages_in_order(self) -> Population:
        low, high = self.min_age_years, self.max_age_years
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_age_years {low} is above max_age_years {high}")
        return self


class Design(_Model):
    study_type: Literal["interventional", "observational"] = "interventional"
    allocation: Literal["randomized", "non_randomized", "not_applicable"]
    masking: Literal["none", "single", "double", "triple", "quadruple"]
    model: Literal["parallel", "crossover", "single_group", "factorial", "sequential"]
    purpose: Literal["treatment", "prevention", "diagnostic", "supportive_care", "other"] = "treatment"
    notes: Notes = ()


class Quantity(_Model):
    value: float
    unit: Unit


# ------------------------------------------------------------------------------------------------
# Assay and derivation constants


class Negativity(_Model):
    """What "CMV negative" means (domain.md §3.4: one or two consecutive samples, configurable)."""

    consecutive_below_lloq: PositiveInt
    min_days_between: NonNegativeInt = 0
    detected_below_lloq_counts_as_negative: bool = True


class CmvDnaAssay(_Model):
    name: Text
    specimen: Literal["plasma", "serum", "whole_blood"]
    primary_unit: Unit
    lloq: Quantity
    lod: Quantity | None = None
    uloq: Quantity | None = None
    iu_to_copies_factor: PositiveFloat = Field(description="copies/mL = IU/mL × factor (assay-specific).")
    negativity: Negativity
    notes: Notes = ()

    def in_primary_unit(self, quantity: Quantity) -> float:
        """A load in the assay's primary unit, crossing IU and copies by the assay's factor."""
        if quantity.unit == self.primary_unit:
            return quantity.value
        if quantity.unit == "[IU]/mL" and self.primary_unit == "copies/mL":
            return quantity.value * self.iu_to_copies_factor
        if quantity.unit == "copies/mL" and self.primary_unit == "[IU]/mL":
            return quantity.value / self.iu_to_copies_factor
        return units.convert(quantity.value, quantity.unit, self.primary_unit)

    @model_validator(mode="after")
    def _limits_convertible(self) -> CmvDnaAssay:
        for name in ("lloq", "lod", "uloq"):
            limit = getattr(self, name)
            if limit is None:
                continue
            try:
                value = self.in_primary_unit(limit)
            except InvalidInput:
                raise ValueError(f"{name} unit {limit.unit} cannot be expressed in {self.primary_unit}") from None
            if value <= 0:
                raise ValueError(f"{name} must be greater than 0")
        return self


class Assay(_Model):
    cmv_dna: CmvDnaAssay


class CreatinineClearance(_Model):
    """Cockcroft-Gault constants: (offset − age) × weight / (divisor × creatinine), × female factor."""

    method: Literal["cockcroft_gault"]
    age_offset_years: PositiveFloat
    divisor: PositiveFloat
    female_factor: float = Field(gt=0, le=1)
    weight: Literal["actual", "ideal", "adjusted"]
    serum_creatinine_unit: Unit = Field(description="The unit the constants assume (mg/dL).")


class Derivations(_Model):
    creatinine_clearance: CreatinineClearance
    prednisone_equivalence: dict[str, PositiveFloat] = Field(
        description="mg of prednisone per mg of each corticosteroid (codes of the drug codelist)."
    )


class DerivedValue(_Model):
    name: Identifier
    method: DerivationMethod
    inputs: tuple[str, ...]
    unit: Unit | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _arity(self) -> DerivedValue:
        expected = DERIVATION_METHODS[self.method]
        if len(self.inputs) != len(expected):
            wanted = ", ".join(label for label, _ in expected)
            raise ValueError(f"method {self.method} takes {len(expected)} inputs ({wanted}), not {len(self.inputs)}")
        return self


# ------------------------------------------------------------------------------------------------
# Randomization


class FactorLevel(_Model):
    code: Code
    expression: ExpressionText | None = None


class Factor(_Model):
    """A stratification or minimization factor: ``site``, or a screening item / derived value."""

    name: Identifier
    levels: tuple[FactorLevel, ...] = ()
    weight: PositiveFloat = 1.0


def _factor_from_name(value: Any) -> Any:
    return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


class Randomization(_Model):
    method: Literal["permuted_blocks", "minimization"]
    ratio: dict[Identifier, PositiveInt]
    block_sizes: tuple[PositiveInt, ...] = ()
    strata: tuple[Factor, ...] = ()
    factors: tuple[Factor, ...] = ()
    preferred_arm_probability: float | None = Field(None, ge=0.5, le=1)
    imbalance_measure: Literal["range", "variance"] = "range"
    notes: Notes = ()

    _names = field_validator("strata", "factors", mode="before")(_factor_from_name)

    @field_validator("block_sizes")
    @classmethod
    def _blocks_fit_ratio(cls, sizes: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        ratio = info.data.get("ratio")
        if ratio:
            total = sum(ratio.values())
            wrong = [size for size in sizes if size % total]
            if wrong:
                raise ValueError(f"block sizes {wrong} are not multiples of the ratio sum {total}")
        return sizes

    @model_validator(mode="after")
    def _method_settings(self) -> Randomization:
        if self.method == "permuted_blocks" and not self.block_sizes:
            raise ValueError("permuted_blocks needs block_sizes")
        if self.method == "minimization" and (not self.factors or self.preferred_arm_probability is None):
            raise ValueError("minimization needs factors and preferred_arm_probability")
        return self


# ------------------------------------------------------------------------------------------------
# Eligibility, visits


class Criterion(_Model):
    id: Code
    kind: Literal["inclusion", "exclusion"]
    text: Text = Field(description="The registry's own wording.")
    expression: ExpressionText
    notes: Notes = ()

    @property
    def compiled(self) -> CompiledExpression:
        return compile_expression(self.expression)


class Window(_Model):
    before_days: NonNegativeInt
    after_days: NonNegativeInt


class Repeat(_Model):
    every_days: PositiveInt
    first_day: int
    until: Literal["cmv_negative", "end_of_treatment"]
    max_count: PositiveInt | None = None


class Visit(_Model):
    code: Code
    name: Text
    anchor: Anchor
    day: int | None = None
    repeat: Repeat | None = None
    window: Window
    forms: tuple[Identifier, ...] = ()
    notes: Notes = ()

    @field_validator("window")
    @classmethod
    def _narrower_than_spacing(cls, window: Window, info: ValidationInfo) -> Window:
        repeat = info.data.get("repeat")
        if repeat is not None and window.before_days + window.after_days >= repeat.every_days:
            raise ValueError(
                f"window {window.before_days} days before + {window.after_days} after is not narrower "
                f"than the visit spacing of {repeat.every_days} days; successive visits would overlap"
            )
        return window

    @model_validator(mode="after")
    def _day_or_repeat(self) -> Visit:
        if (self.day is None) == (self.repeat is None):
            raise ValueError("give either day or repeat")
        return self


class Endpoint(_Model):
    id: Identifier
    kind: Literal["primary", "secondary", "safety", "exploratory"]
    title: Text
    description: str | None = None
    time_frame: Text
    source: Text
    analysis: AnalysisMethod
    measures: tuple[str, ...] = Field((), description="Items measured, as form_id.item_id.")
    visits: tuple[Code, ...] = ()
    notes: Notes = ()


class Safety(_Model):
    ctcae_version: Annotated[str, StringConstraints(pattern=r"^[0-9]+\.[0-9]+$")]
    sae_report_within_hours: PositiveInt | None = Field(
        None, description="Expedited reporting window for a serious adverse event, from site awareness."
    )
    notes: Notes = ()


# ------------------------------------------------------------------------------------------------
# The protocol


class Protocol(_Model):
    schema_version: Literal[1]
    id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")]
    version: Text
    title: Text
    short_title: str | None = None
    source: str | None = Field(None, description="The registry record this file was written from.")
    registry_ids: tuple[RegistryId, ...] = ()
    sponsor: Text
    countries: tuple[Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")], ...] = Field(
        (), description="ISO 3166-1 alpha-3 codes of the countries the trial recruits in (SDTM DM.COUNTRY).")
    phase: tuple[Literal["early_phase1", "phase1", "phase2", "phase3", "phase4", "not_applicable"], ...] = ()
    population: Population
    design: Design
    assay: Assay
    derivations: Derivations
    derived_values: tuple[DerivedValue, ...] = ()
    arms: tuple[Arm, ...] = Field(min_length=1)
    randomization: Randomization
    screening_form: Identifier = "screening"
    eligibility: tuple[Criterion, ...] = Field(min_length=1)
    visits: tuple[Visit, ...] = Field(min_length=1)
    forms: tuple[Form, ...] = Field(min_length=1)
    codelists: tuple[Codelist, ...] = ()
    edit_checks: tuple[EditCheck, ...] = ()
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    safety: Safety | None = None
    analysis: AnalysisPlan | None = Field(None, description="The analysis plan's settings (docs/report.md).")
    notes: Notes = ()

    @model_validator(mode="after")
    def _parts_agree(self, info: ValidationInfo) -> Protocol:
        if (info.context or {}).get(DEFER_CROSS_CHECKS):
            return self
        from cmvtrial.core.protocol_checks import cross_problems

        problems = cross_problems(self.model_dump(mode="python"))
        if problems:
            raise ValueError("; ".join(f"{problem.dotted_path}: {problem.message}" for problem in problems))
        return self

    # accessors ---------------------------------------------------------------------------------
    @property
    def criteria(self) -> tuple[Criterion, ...]:
        return self.eligibility

    @property
    def derived_value_names(self) -> frozenset[str]:
        return frozenset(value.name for value in self.derived_values)

    @property
    def screening(self) -> Form:
        return self.form(self.screening_form)

    def _find(self, kind: str, collection: tuple[Any, ...], key: str, wanted: str) -> Any:
        for entry in collection:
            if getattr(entry, key) == wanted:
                return entry
        known = ", ".join(getattr(entry, key) for entry in collection)
        raise NotFound(f"protocol {self.id} has no {kind} '{wanted}'; known: {known}", field=kind, value=wanted)

    def arm(self, arm_id: str) -> Arm:
        return self._find("arm", self.arms, "id", arm_id)

    def form(self, form_id: str) -> Form:
        return self._find("form", self.forms, "id", form_id)

    def visit(self, code: str) -> Visit:
        return self._find("visit", self.visits, "code", code)

    def criterion(self, criterion_id: str) -> Criterion:
        return self._find("criterion", self.eligibility, "id", criterion_id)

    def codelist(self, codelist_id: str) -> Codelist:
        return self._find("codelist", self.codelists, "id", codelist_id)

    def endpoint(self, endpoint_id: str) -> Endpoint:
        return self._find("endpoint", self.endpoints, "id", endpoint_id)

    def derived_value(self, name: str) -> DerivedValue:
        return self._find("derived value", self.derived_values, "name", name)

    def item_ids(self, form_id: str) -> tuple[str, ...]:
        """The top-level item ids of a form, in order (a group counts once)."""
        return tuple(item.id for item in self.form(form_id).items)

    def item(self, form_id: str, path: str) -> Item:
        """An item by id, or by ``group.item`` for one inside a group."""
        found = self.form(form_id).item_paths().get(path)
        if found is None:
            raise NotFound(f"form '{form_id}' has no item '{path}'", field="item", value=path)
        return found
