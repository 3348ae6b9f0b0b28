"""One virtual patient's course on one arm, as the records a site would enter.

Why records and not arrays: the demo loader pushes a simulated trial through the same services a
person uses, so each course is laid out the way the protocol captures data — visits by code, forms
by id, items by id with ``{value, unit}`` in the protocol's units — plus dose administrations
(given or held, with the reason), adverse events with CTCAE term and grade, dropout and end of
treatment. A loader is then a loop: for each visit, for each form, enter the items.

The numbers come from the vectorized model (:mod:`cohort`, :mod:`adverse_events`) and the scenario;
this module only lays them out. Dates are the randomization date plus the model's day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cmvtrial.core import ctcae
from cmvtrial.core.expressions import compile_expression
from cmvtrial.simulation import kinetics
from cmvtrial.simulation.adverse_events import Episodes
from cmvtrial.simulation.cohort import CELLS_PER_UL_PER_10E9_PER_L, CohortOutcomes
from cmvtrial.simulation.design import RegimenSummary, TrialDesign
from cmvtrial.simulation.scenario import ImmuneMarker, Scenario

#: Units of the items the course fills in (the protocol's forms use these UCUM codes).
COUNT_UNIT = "10*9/L"
CELLS_UNIT = "/uL"


def quantity(value: float, unit: str, digits: int = 2) -> dict[str, Any]:
    return {"value": round(float(value), digits), "unit": unit}


@dataclass(frozen=True)
class ArmDraws:
    """Everything drawn for all randomized patients under one arm (arrays of shape (1, patients))."""

    arm: str
    il2: bool
    cohort: CohortOutcomes
    cytopenias: Mapping[str, Episodes]
    reactions: Mapping[str, Episodes]
    markers: tuple[tuple[ImmuneMarker, NDArray[np.float64], NDArray[np.float64]], ...]
    followup_day: NDArray[np.int32]


@dataclass(frozen=True)
class Baseline:
    """A patient's screening and baseline values that the course starts from."""

    weight_kg: float
    height_cm: float
    creatinine_umol_per_l: float
    alt: float
    ast: float
    bilirubin: float
    anc: float
    wbc: float
    platelets: float
    hemoglobin: float
    temperature: float
    corticosteroid: dict[str, Any] | None
    reports_iu: bool


class CourseBuilder:
    """Lays out courses for one simulated trial (shared settings; one call per patient and arm)."""

    def __init__(self, scenario: Scenario, design: TrialDesign) -> None:
        self.scenario = scenario
        self.design = design
        self.lloq = design.lloq_copies_per_ml
        self.lod = design.lod_copies_per_ml or design.lloq_copies_per_ml
        self.holds = [
            (hold, compile_expression(hold.expression)) for regimen in design.common_regimens for hold in regimen.holds
        ]

    # -- forms -----------------------------------------------------------------------------------
    def cmv_form(self, log10_copies: float, on: date, reports_iu: bool) -> dict[str, Any]:
        copies = 10.0 ** float(log10_copies)
        form: dict[str, Any] = {"collection_date": on.isoformat()}
        if copies < self.lod:
            form["result"] = "not_detected"
        elif copies < self.lloq:
            form["result"] = "detected_below_lloq"
        else:
            form["result"] = "quantified"
            if reports_iu:
                form["cmv_dna"] = quantity(copies / self.design.iu_to_copies_factor, "[IU]/mL", 0)
            else:
                form["cmv_dna"] = quantity(copies, "copies/mL", 0)
        return form

    def hematology(self, base: Baseline, day: int, draws: ArmDraws, i: int, rng: np.random.Generator) -> dict[str, Any]:
        cv = self.scenario.visits.lab_cv.value
        values = {"anc": base.anc, "platelets": base.platelets, "hemoglobin": base.hemoglobin}
        for toxicity_id, toxicity in self.scenario.gcv_toxicity.items():
            episode = draws.cytopenias[toxicity_id]
            if episode.occurred[0, i] and episode.onset_day[0, i] <= day <= episode.end_day[0, i]:
                values[toxicity.lab] = min(values[toxicity.lab], float(episode.severity[0, i]))
        noisy = {name: value * float(np.exp(cv * rng.standard_normal())) for name, value in values.items()}
        lymphocytes = float(draws.cohort.lymphocytes[0, i]) * float(np.exp(cv * rng.standard_normal()))
        # White cells move with the neutrophils: the non-neutrophil part stays at baseline.
        wbc = max(base.wbc - base.anc, lymphocytes) + noisy["anc"]
        return {
            "wbc": quantity(wbc, COUNT_UNIT),
            "anc": quantity(noisy["anc"], COUNT_UNIT),
            "lymphocytes": quantity(lymphocytes, COUNT_UNIT),
            "platelets": quantity(noisy["platelets"], COUNT_UNIT, 0),
            "hemoglobin": quantity(noisy["hemoglobin"], "g/L", 0),
        }

    def chemistry(self, base: Baseline, rng: np.random.Generator) -> dict[str, Any]:
        cv = self.scenario.visits.lab_cv.value
        population = self.scenario.population
        jitter = lambda value: value * float(np.exp(cv * rng.standard_normal()))  # noqa: E731
        return {
            "serum_creatinine": quantity(jitter(base.creatinine_umol_per_l), "umol/L", 0),
            "alt": quantity(jitter(base.alt), "U/L", 0),
            "ast": quantity(jitter(base.ast), "U/L", 0),
            "alt_uln": quantity(population.alt_uln_u_per_l.value, "U/L", 0),
            "ast_uln": quantity(population.ast_uln_u_per_l.value, "U/L", 0),
            "total_bilirubin": quantity(jitter(base.bilirubin), "umol/L", 1),
            "total_bilirubin_uln": quantity(population.total_bilirubin_uln_umol_per_l.value, "umol/L", 1),
        }

    def vitals(self, base: Baseline, day: int, draws: ArmDraws, i: int, rng: np.random.Generator) -> dict[str, Any]:
        temperature = base.temperature + 0.2 * float(rng.standard_normal())
        fever = draws.reactions.get("fever")
        if fever is not None and fever.occurred[0, i] and fever.onset_day[0, i] <= day <= fever.end_day[0, i]:
            # CTCAE fever: grade 1 38.0-39.0 °C, grade 2 above 39.0 (domain.md §6).
            temperature = 38.5 if fever.severity[0, i] <= 1 else 39.4
        form = {"weight_kg": quantity(base.weight_kg, "kg", 1), "temperature": quantity(temperature, "Cel", 1)}
        if day == 0:
            form["height_cm"] = quantity(base.height_cm, "cm", 0)
        return form

    def immune_forms(self, base: Baseline, week12: bool, draws: ArmDraws, i: int, on: date) -> dict[str, dict[str, Any]]:
        forms: dict[str, dict[str, Any]] = {}
        for marker, baseline_values, week12_values in draws.markers:
            value = float((week12_values if week12 else baseline_values)[0, i])
            entry: Any = int(round(value)) if marker.integer else quantity(value, marker.unit or "1", 3)
            forms.setdefault(marker.form, {})[marker.item] = entry
        if "sledai" in forms:
            forms["sledai"]["assessment_date"] = on.isoformat()
        subsets = forms.setdefault("lymphocyte_subsets", {})
        lymphocytes_per_ul = float(draws.cohort.lymphocytes[0, i]) * CELLS_PER_UL_PER_10E9_PER_L
        nk = float((draws.cohort.nk_week12 if week12 else draws.cohort.nk_baseline)[0, i])
        # The subsets are drawn apart from the lymphocyte count; a laboratory's T + B + NK cells never
        # exceed its lymphocytes (percentages above 100 % are refused by the form's hard limits).
        counted = {cell: subsets[f"{cell}_abs"]["value"] for cell in ("cd3", "cd4", "cd8", "cd19") if f"{cell}_abs" in subsets}
        t_cells = max(counted.get("cd3", 0.0), counted.get("cd4", 0.0) + counted.get("cd8", 0.0))
        lymphocytes_per_ul = max(lymphocytes_per_ul, t_cells + counted.get("cd19", 0.0) + (nk if np.isfinite(nk) else 0.0))
        if np.isfinite(nk):
            subsets["nk_abs"] = quantity(nk, CELLS_UNIT, 0)
            subsets["nk_pct"] = quantity(100.0 * nk / lymphocytes_per_ul, "%", 1)
        for cell in ("cd3", "cd4", "cd8", "cd19"):
            absolute = subsets.get(f"{cell}_abs")
            if absolute is not None:
                subsets[f"{cell}_pct"] = quantity(100.0 * absolute["value"] / lymphocytes_per_ul, "%", 1)
        if "cd4_abs" in subsets and "cd8_abs" in subsets and subsets["cd8_abs"]["value"] > 0:
            subsets["cd4_cd8_ratio"] = quantity(subsets["cd4_abs"]["value"] / subsets["cd8_abs"]["value"], "{ratio}")
        cd8 = forms.get("cmv_cd8", {})
        if "cmv_specific_cd8_pct" in cd8 and "cd8_abs" in subsets:
            cd8["cmv_specific_cd8_abs"] = quantity(
                cd8["cmv_specific_cd8_pct"]["value"] / 100.0 * subsets["cd8_abs"]["value"], CELLS_UNIT, 1
            )
        return forms

    # -- the course ------------------------------------------------------------------------------
    def visit(
        self, code: str, day: int, on: date, base: Baseline, draws: ArmDraws, i: int, rng: np.random.Generator,
        log10_copies: float, *, week12: bool = False, repeat: int | None = None,
    ) -> dict[str, Any]:
        wanted = self.design.visit_forms.get(code, ())
        forms: dict[str, Any] = {}
        if "vitals" in wanted:
            forms["vitals"] = self.vitals(base, day, draws, i, rng)
        if "cmv_load" in wanted:
            forms["cmv_load"] = self.cmv_form(log10_copies, on, base.reports_iu)
        if "hematology" in wanted:
            forms["hematology"] = self.hematology(base, day, draws, i, rng)
        if "chemistry" in wanted:
            forms["chemistry"] = self.chemistry(base, rng)
        if day == 0 or week12:
            for form_id, items in self.immune_forms(base, week12, draws, i, on).items():
                if form_id in wanted:
                    forms[form_id] = items
        if "concomitant_corticosteroid" in wanted and base.corticosteroid is not None:
            forms["concomitant_corticosteroid"] = [
                {"drug": base.corticosteroid["drug"], "daily_dose_mg": quantity(base.corticosteroid["daily_dose_mg"], "mg", 1)}
            ]
        record: dict[str, Any] = {"visit": code, "day": int(day), "date": on.isoformat(), "forms": forms}
        if repeat is not None:
            record["repeat"] = repeat
        return record

    def doses(
        self, regimen: RegimenSummary, until_day: int, randomized_on: date, held_days: Mapping[int, str]
    ) -> list[dict[str, Any]]:
        interval = max(regimen.interval_days, 1)
        records = []
        for day in range(regimen.start_day, until_day, interval):
            reason = held_days.get(day) if regimen.holds else None
            records.append(
                {
                    "drug": regimen.drug,
                    "day": day,
                    "date": (randomized_on + timedelta(days=day)).isoformat(),
                    "route": regimen.route,
                    "nominal_dose": {"value": regimen.dose_value, "unit": regimen.dose_unit},
                    "given": reason is None,
                    "hold_reason": reason,
                }
            )
        return records

    def held_days(self, visits: list[dict[str, Any]], until_day: int) -> dict[int, str]:
        """Days a hold applies: from a visit whose hematology meets a hold until the next visit."""
        held: dict[int, str] = {}
        for current, following in zip(visits, [*visits[1:], None], strict=True):
            values = {name: item["value"] for name, item in current["forms"].get("hematology", {}).items()}
            reasons = [hold.reason for hold, compiled in self.holds if compiled.evaluate(values).value]
            if reasons:
                end = following["day"] if following else until_day
                for day in range(current["day"], min(end, until_day)):
                    held[day] = "; ".join(reasons)
        return held

    def adverse_events(self, draws: ArmDraws, i: int, randomized_on: date) -> list[dict[str, Any]]:
        events = []
        for toxicity_id, toxicity in self.scenario.gcv_toxicity.items():
            episode = draws.cytopenias[toxicity_id]
            if not episode.occurred[0, i]:
                continue
            unit = "g/L" if toxicity.lab == "hemoglobin" else COUNT_UNIT
            nadir = float(episode.severity[0, i])
            graded = ctcae.grade(toxicity.ctcae_term, nadir, unit)
            events.append(self._event(toxicity_id, toxicity.ctcae_term, graded.grade, episode, i, randomized_on,
                                      related=[regimen.drug for regimen in self.design.common_regimens],
                                      lab={"item": toxicity.lab, "value": round(nadir, 2), "unit": unit}))
        for event_id, event in self.scenario.il2_adverse_events.items():
            episode = draws.reactions[event_id]
            if episode.occurred[0, i]:
                events.append(self._event(event_id, event.ctcae_term, int(episode.severity[0, i]), episode, i,
                                          randomized_on, related=[self.design.il2_regimen.drug]))
        return sorted(events, key=lambda event: (event["start_day"], event["id"]))

    @staticmethod
    def _event(
        event_id: str, term: str, grade: int | None, episode: Episodes, i: int, randomized_on: date,
        related: list[str], lab: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        start, end = int(episode.onset_day[0, i]), int(episode.end_day[0, i])
        record: dict[str, Any] = {
            "id": event_id,
            "ctcae_term": term,
            "grade": grade,
            "serious": False,
            "related_to": related,
            "start_day": start,
            "start_date": (randomized_on + timedelta(days=start)).isoformat(),
            "end_date": (randomized_on + timedelta(days=end)).isoformat(),
            "outcome": "recovered",
        }
        if lab is not None:
            record["lab"] = lab
        return record

    def course(self, draws: ArmDraws, i: int, base: Baseline, randomized_on: date, rng: np.random.Generator) -> dict[str, Any]:
        """The whole course of patient ``i`` on this arm."""
        cohort, design = draws.cohort, self.design
        on = lambda day: randomized_on + timedelta(days=int(day))  # noqa: E731
        dropout = float(cohort.dropout_day[0, i])
        end_day = int(cohort.end_of_treatment_day[0, i])
        baseline_log10 = float(cohort.baseline_log10[0, i])
        visits = [self.visit(design.baseline_visit, 0, randomized_on, base, draws, i, rng, baseline_log10)]
        if cohort.visit_days is None or cohort.visit_log10 is None or cohort.visit_taken is None:
            raise ValueError("a course needs the cohort simulated with keep_visits=True")
        for k in range(cohort.visit_days.shape[-1]):
            day = int(cohort.visit_days[0, i, k])
            if day < 0 or not cohort.visit_taken[0, i, k]:
                continue
            visits.append(self.visit(design.treatment_visit, day, on(day), base, draws, i, rng,
                                     float(cohort.visit_log10[0, i, k]), repeat=k + 1))
        followups = []
        patient = _one(cohort.patients, i)
        week12_day = int(cohort.week12_day[0, i])
        if np.isfinite(cohort.nk_week12[0, i]):
            log10 = float(kinetics.log10_viral_load(patient, [week12_day])[0])
            followups.append(self.visit(design.week12_visit, week12_day, on(week12_day), base, draws, i, rng, log10, week12=True))
        followup_day = end_day + int(draws.followup_day[0, i])
        if followup_day <= dropout:
            log10 = float(kinetics.log10_viral_load(patient, [followup_day])[0])
            followups.append(self.visit(design.followup_visit, followup_day, on(followup_day), base, draws, i, rng, log10))
        held = self.held_days(visits, end_day)
        doses = [record for regimen in self._regimens(draws.il2) for record in self.doses(regimen, end_day, randomized_on, held)]
        if cohort.event[0, i]:
            reason = "cmv_negative"
        elif dropout <= end_day:
            reason = "dropout"
        else:
            reason = "end_of_follow_up"
        last_day = max(visit["day"] for visit in [*visits, *followups])
        course: dict[str, Any] = {
            "visits": sorted([*visits, *followups], key=lambda visit: visit["day"]),
            "doses": doses,
            "adverse_events": self.adverse_events(draws, i, randomized_on),
            "end_of_treatment": {"day": end_day, "date": on(end_day).isoformat(), "reason": reason},
            "cmv_negative": bool(cohort.event[0, i]),
            "days_to_negativity": int(cohort.time[0, i]) if cohort.event[0, i] else None,
            "dropout": None,
        }
        if np.isfinite(dropout) and dropout <= max(last_day, end_day + design.followup.day):
            course["dropout"] = {
                "day": int(dropout),
                "date": on(int(dropout)).isoformat(),
                "reason": str(self.scenario.dropout.reasons.sample(rng, ())),
            }
        return course

    def _regimens(self, il2: bool) -> list[RegimenSummary]:
        return [*self.design.common_regimens, *([self.design.il2_regimen] if il2 else [])]


def _one(patients: kinetics.PatientKinetics, i: int) -> kinetics.PatientKinetics:
    """Patient ``i`` of a (1, n) cohort as a cohort of one."""
    fields = {
        name: (np.asarray(getattr(patients, name))[0, i : i + 1] if np.ndim(getattr(patients, name)) == 2 else getattr(patients, name))
        for name in patients.__dataclass_fields__
    }
    return kinetics.PatientKinetics(**fields)
