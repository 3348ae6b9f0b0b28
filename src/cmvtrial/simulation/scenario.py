"""The scenario file: every number of the in-silico trial, each with its source.

Why a file and not code: the model's parameters are beliefs about patients, the virus and the drugs,
and a sponsor planning a trial argues about exactly these numbers. So each one sits in a YAML file
(``simulation/scenarios/<protocol-id>/<name>.yaml``) with a ``source`` that cites
``reference/domain.md`` or a seed record, or says ``ASSUMPTION`` — and the code holds none of them.
The trial's own design (arms, dosing interval, visits and windows, assay limit, planned size) comes
from the protocol; the scenario says how the patients in it behave.

A scenario may ``extends:`` another of the same protocol and override single values (the ``null``
scenario is ``default`` with IL-2's effect on CMV removed); mappings merge key by key, anything
else is replaced.

The numbers themselves — ``{value, source}`` pairs and distributions — and how they are drawn are
in :mod:`cmvtrial.simulation.distributions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from cmvtrial.errors import InvalidInput, NotFound, ScenarioInvalid
from cmvtrial.simulation.distributions import Categorical, Distribution, PositiveValue, Probability, Source, Value

SCHEMA_VERSION = 1
EndpointName = Literal["viremia_duration", "nk_change", "cmv_decline"]
ENDPOINTS: tuple[EndpointName, ...] = ("viremia_duration", "nk_change", "cmv_decline")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ------------------------------------------------------------------------------------------------
# Sections


class ArmMap(_Model):
    """Which protocol arm gets IL-2 and which is the control (ids of the protocol's arms)."""

    il2: str
    control: str


class VisitMap(_Model):
    """The protocol's visit codes for the model's time points (days and windows come from the protocol)."""

    baseline: str
    treatment: str
    week12: str
    followup: str


class Corticosteroid(_Model):
    """Daily corticosteroid at screening; the drug's mg follow from the protocol's equivalence table."""

    none: Probability
    drug: Categorical
    prednisone_equivalent_mg_per_day: Distribution


class Population(_Model):
    """The randomized patients (screen failures are made from them in :class:`Screening`)."""

    age_years: Distribution
    female: Probability
    weight_kg: Distribution
    height_cm: Distribution
    serum_creatinine_umol_per_l: Distribution
    diagnosis: Categorical
    corticosteroid: Corticosteroid
    alt_u_per_l: Distribution
    ast_u_per_l: Distribution
    alt_uln_u_per_l: PositiveValue
    ast_uln_u_per_l: PositiveValue
    total_bilirubin_umol_per_l: Distribution
    total_bilirubin_uln_umol_per_l: PositiveValue
    nyha_class: Categorical
    cmv_dna_log10_copies_per_ml: Distribution
    nk_fraction_of_lymphocytes: Distribution
    lymphocytes_10e9_per_l: Distribution
    anc_10e9_per_l: Distribution
    wbc_10e9_per_l: Distribution
    platelets_10e9_per_l: Distribution
    hemoglobin_g_per_l: Distribution
    temperature_cel: Distribution


class ScreenFailure(_Model):
    """One reason a candidate fails screening, and the record values that make it fail.

    ``overrides`` redraw population quantities (by their name in :class:`Population`);
    ``record`` sets screening-record keys literally. ``expected_criteria`` are the protocol's
    criterion ids the eligibility engine should give as the reason (a test checks it).
    """

    reason: str
    weight: float = Field(gt=0)
    overrides: dict[str, Distribution] = Field(default_factory=dict)
    record: dict[str, Any] = Field(default_factory=dict)
    expected_criteria: tuple[str, ...] = Field(min_length=1)
    source: Source

    @model_validator(mode="after")
    def _known_overrides(self) -> ScreenFailure:
        unknown = sorted(set(self.overrides) - set(Population.model_fields))
        if unknown:
            raise ValueError(f"overrides name unknown population quantities: {', '.join(unknown)}")
        if not self.overrides and not self.record:
            raise ValueError("a screen-failure reason needs overrides or record values")
        return self


class Site(_Model):
    code: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
    name: str
    weight: float = Field(gt=0)


class Screening(_Model):
    failure_fraction: Probability
    failures: tuple[ScreenFailure, ...] = Field(min_length=1)
    consent_refusal: Probability
    days_screening_to_randomization: Distribution


class Enrollment(_Model):
    sites: tuple[Site, ...] = Field(min_length=1)
    sites_source: Source
    candidates_per_month: PositiveValue


class NkResponse(_Model):
    """NK cells relative to baseline, E(t) = 1 + (F - 1)(1 - exp(-t/rise)) while IL-2 is given."""

    fold_at_plateau_daily_dosing: Distribution
    relative_effect_by_interval_days: dict[int, Value] = Field(min_length=1)
    rise_time_constant_days: PositiveValue
    decay_time_constant_days: PositiveValue
    control_fold: Distribution
    share_of_infected_cell_loss: Probability
    measurement_cv: Value


class Kinetics(_Model):
    """The biphasic viral-load model of :mod:`cmvtrial.simulation.kinetics`."""

    growth_rate_per_day: Distribution
    infected_cell_loss_per_day: Distribution
    gcv_efficacy: Distribution
    resistant_fraction: Probability
    gcv_efficacy_resistant: Distribution
    slow_phase_fraction: Distribution
    slow_phase_loss_per_day: Distribution
    nk: NkResponse


class Assay(_Model):
    noise_sd_log10: Value
    iu_reporting_fraction: Probability


class Visits(_Model):
    jitter_sd_days: Value
    missed_visit: Probability
    horizon_days: PositiveValue
    lab_cv: Value


class Dropout(_Model):
    weekly_hazard: Probability
    reasons: Categorical


class HematologicToxicity(_Model):
    """A ganciclovir cytopenia: who is susceptible, when it starts, how deep, how fast it recovers."""

    ctcae_term: str
    lab: Literal["anc", "platelets", "hemoglobin"]
    probability: Probability
    renal_crcl_below_ml_min: PositiveValue
    renal_odds_ratio: PositiveValue
    onset_day: Distribution
    nadir: Distribution
    recovery_days: Distribution


class Il2AdverseEvent(_Model):
    ctcae_term: str
    probability_il2: Probability
    probability_control: Probability
    grade: Categorical
    duration_days: Distribution


class ImmuneMarker(_Model):
    """A week-12 marker: baseline value and the week-12/baseline ratio per arm."""

    form: str
    item: str
    unit: str | None = None
    integer: bool = False
    baseline: Distribution
    week12_ratio_il2: Distribution
    week12_ratio_control: Distribution


class RateTarget(_Model):
    event: str
    arm: Literal["il2", "control", "both"]
    low: float = Field(ge=0, le=1)
    high: float = Field(ge=0, le=1)
    source: Source


class RangeTarget(_Model):
    low: float
    high: float
    source: Source


class Calibration(_Model):
    control_median_days_to_negativity: RangeTarget
    event_rates: tuple[RateTarget, ...] = ()


class PowerSettings(_Model):
    alpha: Probability
    target_power: Probability


class Scenario(_Model):
    schema_version: Literal[1]
    protocol: str
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    title: str
    description: str
    extends: str | None = None
    null_endpoints: tuple[EndpointName, ...] = ()
    arms: ArmMap
    visit_codes: VisitMap
    population: Population
    screening: Screening
    enrollment: Enrollment
    kinetics: Kinetics
    assay: Assay
    visits: Visits
    dropout: Dropout
    gcv_toxicity: dict[str, HematologicToxicity]
    il2_adverse_events: dict[str, Il2AdverseEvent]
    immune_markers: tuple[ImmuneMarker, ...]
    calibration: Calibration
    power: PowerSettings

    @model_validator(mode="after")
    def _targets_name_events(self) -> Scenario:
        events = set(self.gcv_toxicity) | set(self.il2_adverse_events)
        unknown = sorted({target.event for target in self.calibration.event_rates} - events)
        if unknown:
            raise ValueError(f"calibration.event_rates name unknown events: {', '.join(unknown)}")
        return self

    def is_null_for(self, endpoint: str) -> bool:
        """Whether IL-2 has no effect on this endpoint here, so its 'power' is a type-I error."""
        return endpoint in self.null_endpoints


# ------------------------------------------------------------------------------------------------
# Parsing


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _problems(error: ValidationError) -> list[dict[str, str]]:
    return [
        {"location": ".".join(str(part) for part in item["loc"]) or "(top)", "message": item["msg"]}
        for item in error.errors()
    ]


def _load_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ScenarioInvalid(
            f"scenario {source} is not valid YAML",
            problems=[{"location": where, "message": str(getattr(error, "problem", error))}],
        ) from None
    if not isinstance(data, dict):
        raise ScenarioInvalid(
            f"scenario {source} must be a mapping of sections",
            problems=[{"location": source, "message": "the file is not a YAML mapping"}],
        )
    return data


def _resolve_extends(
    data: dict[str, Any], source: str, resolve: Callable[[str], str] | None, seen: tuple[str, ...]
) -> dict[str, Any]:
    base_name = data.get("extends")
    if base_name is None:
        return data
    if not isinstance(base_name, str):
        raise ScenarioInvalid(
            f"scenario {source}: extends must name a scenario",
            problems=[{"location": "extends", "message": "not a scenario name"}],
        )
    if resolve is None:
        raise ScenarioInvalid(
            f"scenario {source} extends '{base_name}', which cannot be looked up here",
            problems=[{"location": "extends", "message": "no scenario folder to resolve it in"}],
        )
    if base_name in seen:
        raise ScenarioInvalid(
            f"scenario {source} extends itself through '{base_name}'",
            problems=[{"location": "extends", "message": "circular extends"}],
        )
    try:
        base_text = resolve(base_name)
    except NotFound as error:
        raise ScenarioInvalid(
            f"scenario {source} extends '{base_name}': {error.message}",
            problems=[{"location": "extends", "message": error.message}],
        ) from None
    base = _resolve_extends(_load_yaml(base_text, base_name), base_name, resolve, (*seen, base_name))
    # The child keeps its own identity (name, title, extends) and inherits the base's parameters.
    return deep_merge(base, data)


def parse_scenario(
    text: str, source: str = "<scenario>", resolve: Callable[[str], str] | None = None
) -> Scenario:
    """Validate a scenario's YAML text. ``resolve(name)`` returns the text of the scenario named by
    ``extends`` (in the same protocol's folder); every problem is listed in one ScenarioInvalid."""
    data = _load_yaml(text, source)
    data = _resolve_extends(data, source, resolve, (str(data.get("name")),))
    try:
        return Scenario.model_validate(data)
    except ValidationError as error:
        problems = _problems(error)
        raise ScenarioInvalid(
            f"scenario {source} has {len(problems)} problem(s)", problems=problems
        ) from None


def check_against_protocol(scenario: Scenario, protocol_id: str, arm_ids: tuple[str, ...]) -> None:
    """Refuse a scenario written for another protocol or naming arms the protocol does not have."""
    if scenario.protocol != protocol_id:
        raise InvalidInput(
            f"scenario '{scenario.name}' is written for protocol '{scenario.protocol}', not '{protocol_id}'",
            field="scenario",
            value=scenario.name,
        )
    for role, arm in (("il2", scenario.arms.il2), ("control", scenario.arms.control)):
        if arm not in arm_ids:
            raise InvalidInput(
                f"scenario '{scenario.name}' names {role} arm '{arm}', which protocol '{protocol_id}' "
                f"does not have (arms: {', '.join(arm_ids)})",
                field=f"arms.{role}",
                value=arm,
            )
