"""One virtual trial, patient by patient: screening, consent, randomization and each patient's course.

Why this layout: the demo loader (a later task) pushes the simulated trial through the real
services, so the output is what sites would enter, in the formats the system takes:

- every **candidate** screened, with a screening record in the public screening-record format
  (issue 3, ``docs/screening-record.md``), judged by the real eligibility engine
  (:func:`cmvtrial.core.eligibility.evaluate_eligibility`): screen failures carry the criteria that
  excluded them, exactly as the system will record them;
- eligible candidates consent (or decline, at the scenario's rate) and are randomized;
- each randomized patient has a **course for every arm** (same patient, same random draws, the
  other treatment): the real randomization service chooses the arm when the trial is loaded, and
  the loader takes that arm's course. ``simulated_arm`` is the arm the protocol's own permuted-block
  list (:mod:`cmvtrial.core.randomization`, seeded from the simulation seed) gives, for use
  without a database.

Candidates are drawn from the scenario's population; a share of them is made to fail screening for
a reason the scenario lists (its values override the draw), and any candidate the engine finds not
eligible becomes a screen failure too. Same protocol, scenario, seed and start date: same trial.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from cmvtrial.core.eligibility import evaluate_eligibility
from cmvtrial.core.randomization import UNSTRATIFIED, generate_block_list, stratum_name
from cmvtrial.errors import InvalidInput
from cmvtrial.simulation import adverse_events
from cmvtrial.simulation.cohort import simulate_cohort
from cmvtrial.simulation.course import ArmDraws, Baseline, CourseBuilder
from cmvtrial.simulation.design import TrialDesign, design_from_protocol
from cmvtrial.simulation.scenario import Population, Scenario

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

DAYS_PER_YEAR = 365.25
DAYS_PER_MONTH = DAYS_PER_YEAR / 12
#: Candidates drawn per batch while screening (a mechanism constant).
_BATCH = 64
MAX_RANDOMIZED = 5000


@dataclass(frozen=True)
class VirtualTrial:
    protocol: str
    scenario: str
    seed: int
    start_date: date
    sites: tuple[dict[str, Any], ...]
    candidates: tuple[dict[str, Any], ...]

    @property
    def randomized(self) -> list[dict[str, Any]]:
        return [candidate for candidate in self.candidates if candidate["randomized"]]

    def summary(self) -> dict[str, Any]:
        """The CONSORT-style counts and each arm's headline numbers (under the simulated arm)."""
        failures: Counter[str] = Counter()
        for candidate in self.candidates:
            for criterion in candidate["screen_failure_criteria"]:
                failures[criterion] += 1
        arms: dict[str, dict[str, Any]] = {}
        for patient in self.randomized:
            arm = patient["simulated_arm"]
            course = patient["courses"][arm]
            entry = arms.setdefault(arm, {"randomized": 0, "cmv_negative": 0, "days_to_negativity": [], "adverse_events": Counter()})
            entry["randomized"] += 1
            entry["cmv_negative"] += int(course["cmv_negative"])
            if course["days_to_negativity"] is not None:
                entry["days_to_negativity"].append(course["days_to_negativity"])
            entry["adverse_events"].update({event["id"] for event in course["adverse_events"]})
        for entry in arms.values():
            days = entry.pop("days_to_negativity")
            entry["median_days_to_negativity_among_negative"] = float(np.median(days)) if days else None
            entry["patients_with_adverse_event"] = dict(sorted(entry.pop("adverse_events").items()))
        return {
            "screened": len(self.candidates),
            "not_eligible": sum(1 for c in self.candidates if c["eligible"] is False),
            "screen_failures_by_criterion": dict(sorted(failures.items())),
            "declined_consent": sum(1 for c in self.candidates if c["eligible"] and not c["consented"]),
            "randomized": len(self.randomized),
            "arms": dict(sorted(arms.items())),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "scenario": self.scenario,
            "seed": self.seed,
            "start_date": self.start_date.isoformat(),
            "summary": self.summary(),
            "sites": list(self.sites),
            "candidates": list(self.candidates),
        }


# ------------------------------------------------------------------------------------------------
# Candidates


def _population_draws(rng: np.random.Generator, population: Population, size: int) -> dict[str, np.ndarray]:
    """One batch of candidates: every population quantity, drawn in a fixed order."""
    draws: dict[str, np.ndarray] = {}
    for name in Population.model_fields:
        spec = getattr(population, name)
        if name == "corticosteroid":
            draws["steroid_none"] = rng.random(size) < spec.none.value
            draws["steroid_drug"] = spec.drug.sample(rng, size)
            draws["steroid_prednisone_mg"] = spec.prednisone_equivalent_mg_per_day.sample(rng, size)
        elif name == "female":
            draws[name] = rng.random(size) < spec.value
        elif hasattr(spec, "sample"):
            draws[name] = spec.sample(rng, size)
    return draws


def _birth_date(screening: date, age_years: float) -> date:
    """A birth date giving ``floor(age_years)`` whole years on the screening date."""
    whole = int(age_years)
    extra_days = int((age_years - whole) * 365)
    try:
        anniversary = screening.replace(year=screening.year - whole)
    except ValueError:  # 29 February in a non-leap year
        anniversary = screening.replace(year=screening.year - whole, day=28)
    return anniversary - timedelta(days=extra_days)


def _screening_record(values: dict[str, Any], screening: date, design: TrialDesign, reports_iu: bool) -> dict[str, Any]:
    copies = 10.0 ** values["cmv_dna_log10_copies_per_ml"]
    cmv = (
        {"value": round(copies / design.iu_to_copies_factor), "unit": "IU/mL"}
        if reports_iu
        else {"value": round(copies), "unit": "copies/mL"}
    )
    steroid = None
    if not values["steroid_none"]:
        drug = str(values["steroid_drug"])
        factor = design.prednisone_equivalence.get(drug)
        if factor is None:
            raise InvalidInput(
                f"the scenario's corticosteroid '{drug}' has no prednisone equivalence in the protocol",
                field="population.corticosteroid.drug",
                value=drug,
            )
        steroid = {"drug": drug, "daily_dose_mg": round(values["steroid_prednisone_mg"] / factor, 1)}
    return {
        "screening_date": screening.isoformat(),
        "birth_date": _birth_date(screening, values["age_years"]).isoformat(),
        "sex": "F" if values["female"] else "M",
        "weight_kg": round(values["weight_kg"], 1),
        "diagnosis": str(values["diagnosis"]),
        "cmv_dna": cmv,
        "serum_creatinine": {"value": round(values["serum_creatinine_umol_per_l"]), "unit": "umol/L"},
        "alt": {"value": round(values["alt_u_per_l"]), "unit": "U/L"},
        "ast": {"value": round(values["ast_u_per_l"]), "unit": "U/L"},
        "alt_uln": {"value": values["alt_uln"], "unit": "U/L"},
        "ast_uln": {"value": values["ast_uln"], "unit": "U/L"},
        "total_bilirubin": {"value": round(values["total_bilirubin_umol_per_l"], 1), "unit": "umol/L"},
        "total_bilirubin_uln": {"value": values["bilirubin_uln"], "unit": "umol/L"},
        "corticosteroid": steroid,
        "nyha_class": int(values["nyha_class"]),
        "other_infections": [],
        "il2_allergy": False,
        "malignancy": False,
        "uncontrolled_psychiatric": False,
        "pregnant_or_breastfeeding": False,
        "severe_comorbidities": [],
    }


def _stratum(design: TrialDesign, site: str) -> str:
    if design.strata == ("site",):
        return stratum_name(["site"], {"site": site})
    return UNSTRATIFIED


# ------------------------------------------------------------------------------------------------
# The trial


def simulate_trial(
    protocol: Protocol, scenario: Scenario, seed: int, start_date: date, n_randomized: int | None = None
) -> VirtualTrial:
    """Simulate one trial of ``protocol`` under ``scenario``: candidates are screened from
    ``start_date`` until ``n_randomized`` patients (default: the protocol's planned size) are in."""
    design = design_from_protocol(protocol, scenario)
    target = design.planned_total if n_randomized is None else n_randomized
    if not 1 <= target <= MAX_RANDOMIZED:
        raise InvalidInput(f"the number randomized must be between 1 and {MAX_RANDOMIZED}", field="n", value=target)
    streams = np.random.SeedSequence(seed).spawn(6)
    rng_candidates, rng_cohort, rng_toxicity, rng_markers, rng_followup, rng_labs = streams
    candidates_rng = np.random.default_rng(rng_candidates)
    population, screening, enrollment = scenario.population, scenario.screening, scenario.enrollment

    site_codes = [site.code for site in enrollment.sites]
    site_weights = np.array([site.weight for site in enrollment.sites])
    site_weights /= site_weights.sum()
    reports_iu = dict(zip(site_codes, candidates_rng.random(len(site_codes)) < scenario.assay.iu_reporting_fraction.value, strict=True))
    failure_weights = np.array([failure.weight for failure in screening.failures])
    failure_weights /= failure_weights.sum()
    per_day = enrollment.candidates_per_month.value / DAYS_PER_MONTH

    candidates: list[dict[str, Any]] = []
    randomized: list[dict[str, Any]] = []
    clock = 0.0
    while len(randomized) < target:
        draws = _population_draws(candidates_rng, population, _BATCH)
        gaps = candidates_rng.exponential(1.0 / per_day, _BATCH)
        sites = candidates_rng.choice(len(site_codes), _BATCH, p=site_weights)
        fails = candidates_rng.random(_BATCH) < screening.failure_fraction.value
        reasons = candidates_rng.choice(len(screening.failures), _BATCH, p=failure_weights)
        declines = candidates_rng.random(_BATCH) < screening.consent_refusal.value
        waits = np.rint(screening.days_screening_to_randomization.sample(candidates_rng, _BATCH)).astype(int)
        for j in range(_BATCH):
            if len(randomized) >= target:
                break
            clock += gaps[j]
            screened_on = start_date + timedelta(days=int(clock))
            site = site_codes[sites[j]]
            values = {name: array[j] for name, array in draws.items()}
            values.update(
                alt_uln=population.alt_uln_u_per_l.value,
                ast_uln=population.ast_uln_u_per_l.value,
                bilirubin_uln=population.total_bilirubin_uln_umol_per_l.value,
            )
            intended = None
            if fails[j]:
                failure = screening.failures[reasons[j]]
                intended = failure.reason
                for name, distribution in failure.overrides.items():
                    values[name] = float(distribution.sample(candidates_rng, ()))
            record = _screening_record(values, screened_on, design, reports_iu[site])
            if intended is not None:
                record.update(screening.failures[reasons[j]].record)
            verdict = evaluate_eligibility(protocol, record)
            number = len(candidates) + 1
            candidate: dict[str, Any] = {
                "id": f"C{number:04d}",
                "site": site,
                "screening_date": screened_on.isoformat(),
                "screening_record": record,
                "intended_screen_failure": intended,
                "eligible": verdict.eligible,
                "screen_failure_criteria": [criterion.id for criterion in verdict.reasons_not_eligible],
                "consented": bool(verdict.eligible) and not declines[j],
                "consent_date": None,
                "randomized": False,
            }
            if candidate["consented"]:
                randomized_on = screened_on + timedelta(days=int(max(waits[j], 0)))
                candidate.update(consent_date=screened_on.isoformat(), randomized=True,
                                 randomization_date=randomized_on.isoformat())
                candidate["_values"] = values
                randomized.append(candidate)
            candidates.append(candidate)

    _assign_simulated_arms(design, randomized, seed)
    _add_courses(scenario, design, randomized, (rng_cohort, rng_toxicity, rng_markers, rng_followup, rng_labs))
    for candidate in randomized:
        del candidate["_values"]
    return VirtualTrial(
        protocol=protocol.id,
        scenario=scenario.name,
        seed=seed,
        start_date=start_date,
        sites=tuple(
            {"code": site.code, "name": site.name, "reports_cmv_in": "IU/mL" if reports_iu[site.code] else "copies/mL"}
            for site in enrollment.sites
        ),
        candidates=tuple(candidates),
    )


def _assign_simulated_arms(design: TrialDesign, randomized: list[dict[str, Any]], seed: int) -> None:
    """The arm each patient would get from the protocol's permuted-block list, stratum by stratum."""
    by_stratum: dict[str, list[dict[str, Any]]] = {}
    for patient in randomized:
        by_stratum.setdefault(_stratum(design, patient["site"]), []).append(patient)
    for stratum, patients in by_stratum.items():
        entries = generate_block_list(dict(design.ratio), list(design.block_sizes) or [sum(design.ratio.values())],
                                      len(patients), f"simulation-{seed}", stratum)
        for patient, entry in zip(patients, entries, strict=True):
            patient["simulated_arm"] = entry.arm
            patient["stratum"] = stratum


def _add_courses(
    scenario: Scenario, design: TrialDesign, randomized: list[dict[str, Any]], streams: tuple[np.random.SeedSequence, ...]
) -> None:
    """Simulate every randomized patient under both arms and attach the two courses."""
    count = len(randomized)
    seed_cohort, seed_toxicity, seed_markers, seed_followup, seed_labs = streams
    values = [patient["_values"] for patient in randomized]
    log10_v0 = np.array([[v["cmv_dna_log10_copies_per_ml"] for v in values]])
    age = np.array([[v["age_years"] for v in values]])
    weight = np.array([[v["weight_kg"] for v in values]])
    creatinine = np.array([[v["serum_creatinine_umol_per_l"] for v in values]])
    female = np.array([[bool(v["female"]) for v in values]])
    crcl = np.asarray(design.creatinine_clearance.ml_min(age, weight, creatinine, female))
    builder = CourseBuilder(scenario, design)
    arms = ((design.il2_arm, True), (design.control_arm, False))
    all_draws: list[ArmDraws] = []
    for arm, il2 in arms:
        shape = (1, count)
        mask = np.full(shape, il2)
        cohort = simulate_cohort(np.random.default_rng(seed_cohort), scenario, design, mask, keep_visits=True, log10_v0=log10_v0)
        toxicity_rng = np.random.default_rng(seed_toxicity)
        cytopenias = {
            name: adverse_events.gcv_cytopenia(toxicity_rng, toxicity, crcl, cohort.end_of_treatment_day)
            for name, toxicity in scenario.gcv_toxicity.items()
        }
        reactions = {
            name: adverse_events.il2_reaction(toxicity_rng, event, mask, cohort.end_of_treatment_day)
            for name, event in scenario.il2_adverse_events.items()
        }
        marker_rng = np.random.default_rng(seed_markers)
        markers = []
        for marker in scenario.immune_markers:
            baseline = marker.baseline.sample(marker_rng, shape)
            ratio = (marker.week12_ratio_il2 if il2 else marker.week12_ratio_control).sample(marker_rng, shape)
            markers.append((marker, baseline, baseline * ratio))
        window = design.followup
        followup_day = window.day + np.random.default_rng(seed_followup).integers(-window.before, window.after + 1, shape)
        all_draws.append(ArmDraws(arm, il2, cohort, cytopenias, reactions, tuple(markers), followup_day.astype(np.int32)))

    lab_seeds = seed_labs.spawn(count)
    for i, (patient, v) in enumerate(zip(randomized, values, strict=True)):
        record = patient["screening_record"]
        base = Baseline(
            weight_kg=float(v["weight_kg"]),
            height_cm=float(v["height_cm"]),
            creatinine_umol_per_l=float(v["serum_creatinine_umol_per_l"]),
            alt=float(v["alt_u_per_l"]),
            ast=float(v["ast_u_per_l"]),
            bilirubin=float(v["total_bilirubin_umol_per_l"]),
            anc=float(v["anc_10e9_per_l"]),
            wbc=float(v["wbc_10e9_per_l"]),
            platelets=float(v["platelets_10e9_per_l"]),
            hemoglobin=float(v["hemoglobin_g_per_l"]),
            temperature=float(v["temperature_cel"]),
            corticosteroid=record["corticosteroid"],
            reports_iu=record["cmv_dna"]["unit"] == "IU/mL",
        )
        randomized_on = date.fromisoformat(patient["randomization_date"])
        patient["courses"] = {
            draws.arm: builder.course(draws, i, base, randomized_on, np.random.default_rng(lab_seeds[i]))
            for draws in all_draws
        }
