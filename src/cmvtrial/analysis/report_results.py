"""Every number of the trial report, computed from a snapshot: one results dict with documented keys.

Why one dict: the HTML report, its JSON twin (``cmvtrial report --json``) and the tests read the
same numbers, so the report can never show a value the JSON lacks. Keys are listed in
docs/report.md; every value is JSON-ready (numbers, text, lists, ``None`` for "not reached" or
"not estimable").

The analyses follow the protocol's endpoints (seed outcome measures), each by its ``analysis``:

- ``kaplan_meier_logrank_cox`` — Kaplan–Meier per arm with the median and its CI, survival at the
  plan's days, the log-rank test and the Cox hazard ratio (both stratified by the randomization
  strata when there is more than one stratum), the proportional-hazards test, and the restricted
  mean difference up to the plan's tau as sensitivity;
- ``mixed_model_log10_decline`` — the REML mixed model of log10 CMV-DNA on study day by arm over
  the treatment period (baseline to the end of treatment), and per-visit means with CIs;
- ``ancova_change_from_baseline`` — per marker, ANCOVA of the change to the endpoint's visit on arm
  and baseline (plus strata; without them, with a note, when the strata leave too few subjects),
  the plan's multiplicity adjustment across the endpoint's markers, and the Wilcoxon rank-sum test
  of the change as sensitivity; complete cases, the numbers left out stated;
- ``proportion`` — subjects with a study drug given after their end of treatment (rescue treatment),
  by arm, with Fisher's exact test; ``adverse_event_summary`` — the safety tables;
  ``descriptive`` — per-visit summaries.

An analysis that cannot be done on the data (one arm empty, too few values) is reported with the
reason in ``error`` instead of failing the whole report.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cmvtrial.analysis.ancova import adjust_p_values, ancova
from cmvtrial.analysis.adsl import POPULATIONS, population_frame
from cmvtrial.analysis.derivations import (
    CMV_PARAMCD,
    AnalysisDatasets,
    change_at_visit,
    derive_datasets,
    paramcd,
    visit_code_for_change,
)
from cmvtrial.analysis.mixed_model import fit_decline_model, visit_means
from cmvtrial.analysis.nonparametric import wilcoxon_by_arm
from cmvtrial.analysis.report_tables import baseline_table, consort_counts, describe, jsonable
from cmvtrial.analysis.safety_tables import safety_tables
from cmvtrial.analysis.survival import rmst_comparison
from cmvtrial.analysis.time_to_event import analyze_time_to_event
from cmvtrial.errors import CmvtrialError

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.trial_data import TrialData
    from cmvtrial.core.protocol import Endpoint

RESULTS_SCHEMA = "cmvtrial-report/1"
Progress = Callable[[str], None]


def report_steps(data: TrialData) -> list[str]:
    """The steps :func:`build_results` reports to ``progress``, in order (for a progress bar)."""
    return ["derive datasets", "baseline", *[f"endpoint {e.id}" for e in data.protocol.endpoints], "safety"]


def build_results(
    data: TrialData,
    *,
    population: str = "itt",
    generated_on: date | None = None,
    datasets: AnalysisDatasets | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """All the report's numbers for ``population`` (itt | pp | safety); see docs/report.md."""
    tick = progress or (lambda step: None)
    population_frame(pd.DataFrame(columns=["ITTFL", "PPFL", "SAFFL", "TRT01P", "TRT01A"]), population)  # checks the name
    datasets = datasets or derive_datasets(data)
    tick("derive datasets")
    setup, adsl = datasets.setup, datasets.adsl
    chosen = population_frame(adsl, population)
    arms = [setup.treated_arm, setup.reference_arm]
    protocol = data.protocol
    results: dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "trial": {
            "protocol_id": protocol.id,
            "protocol_version": protocol.version,
            "title": protocol.title,
            "short_title": protocol.short_title,
            "sponsor": protocol.sponsor,
            "registry_ids": [{"registry": r.registry, "id": r.id} for r in protocol.registry_ids],
            "source": data.source,
            "data_cutoff": data.data_cutoff.isoformat(),
            "generated_on": generated_on.isoformat() if generated_on else None,
            "population": population,
            "population_label": POPULATIONS[population][2],
        },
        "arms": [{"id": arm.id, "label": arm.label, "role": arm.role} for arm in protocol.arms
                 if arm.id in arms],
        "reference_arm": setup.reference_arm,
        "treated_arm": setup.treated_arm,
        "plan": setup.plan.model_dump(mode="json"),
        "populations": _populations(adsl, arms),
        "consort": consort_counts(data, adsl, arms, population),
    }
    results["baseline"] = baseline_table(chosen, arms)
    tick("baseline")
    endpoints = []
    for endpoint in protocol.endpoints:
        endpoints.append(_endpoint(endpoint, datasets, chosen, data))
        tick(f"endpoint {endpoint.id}")
    results["endpoints"] = endpoints
    results["other_parameters"] = _other_parameters(datasets, chosen, arms)
    results["safety"] = safety_tables(data, adsl, setup)
    tick("safety")
    quality = data.data_quality
    results["data_quality"] = {
        "data_cutoff": data.data_cutoff.isoformat(),
        "open_queries": quality.open_queries,
        "answered_queries": quality.answered_queries,
        "unsigned_visits": quality.unsigned_visits,
        "notes": list(quality.notes),
    }
    results["methods"] = _methods(datasets, population)
    return jsonable(results)


def _populations(adsl: pd.DataFrame, arms: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (flag, arm_column, label) in POPULATIONS.items():
        members = adsl[(adsl[flag] == "Y") & adsl[arm_column].notna()]
        out[name] = {"label": label, "n": {arm: int((members[arm_column] == arm).sum()) for arm in arms},
                     "total": len(members)}
    reasons: Counter[str] = Counter()
    for text in adsl.loc[adsl["PPFL"] == "N", "PPEXCL"]:
        reasons.update(part.split(" ")[0] for part in str(text).split("; ") if part)
    out["pp_exclusions"] = dict(sorted(reasons.items()))
    return out


def _safely(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return run()
    except CmvtrialError as error:
        return {"error": error.message}


def _endpoint(endpoint: Endpoint, datasets: AnalysisDatasets, chosen: pd.DataFrame, data: TrialData) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": endpoint.id, "kind": endpoint.kind, "title": endpoint.title, "description": endpoint.description,
        "time_frame": endpoint.time_frame, "source": endpoint.source, "analysis": endpoint.analysis,
        "measures": list(endpoint.measures), "visits": list(endpoint.visits),
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "kaplan_meier_logrank_cox": lambda: _time_to_event(datasets, chosen),
        "mixed_model_log10_decline": lambda: _decline(datasets, chosen),
        "ancova_change_from_baseline": lambda: _change_family(endpoint, datasets, chosen),
        "proportion": lambda: _rescue(datasets, chosen, data),
        "adverse_event_summary": lambda: {"see": "safety"},
        "descriptive": lambda: _descriptive(endpoint, datasets, chosen),
    }
    entry["result"] = _safely(runners[endpoint.analysis])
    return entry


def _strata_column(frame: pd.DataFrame) -> str | None:
    return "STRATUM" if frame["STRATUM"].nunique() > 1 else None


def _time_to_event(datasets: AnalysisDatasets, chosen: pd.DataFrame) -> dict[str, Any]:
    setup, plan = datasets.setup, datasets.setup.plan
    frame = datasets.adtte.merge(chosen[["USUBJID", "ARM"]], on="USUBJID")
    strata = _strata_column(frame)
    analysis = analyze_time_to_event(frame, time="AVAL", event="EVENT", arm="ARM", strata=strata,
                                     reference=setup.reference_arm, km_ci=plan.km_confidence_interval,
                                     conf_level=plan.confidence_level)
    km = analysis.km
    censoring = {arm: dict(Counter(frame.loc[(frame["ARM"] == arm) & (frame["CNSR"] == 1), "CNSRREAS"]))
                 for arm in km}
    return {
        "summary": analysis.to_json(),
        "stratified": strata is not None,
        "strata": sorted(frame["STRATUM"].unique()) if strata else [],
        "km": {arm: curve.to_dict(curve=True) for arm, curve in km.items()},
        "survival_at": {arm: [row.to_dict() for row in curve.survival_at(plan.survival_at_days)]
                        for arm, curve in km.items()},
        "logrank": analysis.logrank.to_dict(),
        "cox": analysis.cox.to_dict(),
        "rmst": rmst_comparison(km[analysis.treated], km[analysis.reference], plan.rmst_tau_days,
                                plan.confidence_level).to_dict(),
        "censoring": censoring,
        "start": dict(Counter(frame["STARTSRC"])),
        "cmv_visit_means": _visit_means(_cmv_rows(datasets, chosen).query("ANL01FL == 'Y'"), plan.confidence_level),
    }


def _cmv_rows(datasets: AnalysisDatasets, chosen: pd.DataFrame) -> pd.DataFrame:
    """log10 CMV-DNA rows of the population, with the analysis arm and the treatment period's dates."""
    adlb = datasets.adlb
    return adlb[adlb["PARAMCD"] == CMV_PARAMCD].merge(chosen[["USUBJID", "ARM", "EOTDT", "RANDDT"]], on="USUBJID")


def _decline(datasets: AnalysisDatasets, chosen: pd.DataFrame) -> dict[str, Any]:
    setup = datasets.setup
    rows = _cmv_rows(datasets, chosen)
    eot_day = (rows["EOTDT"] - rows["RANDDT"]) / np.timedelta64(1, "D")
    in_period = (rows["ABLFL"] == "Y") | ((rows["ADY"] > 0) & ~(rows["ADY"] > eot_day))
    model_rows = rows[in_period]
    model = fit_decline_model(model_rows, value="AVAL", day="ADY", arm="ARM", subject="USUBJID",
                              reference=setup.reference_arm, conf_level=setup.plan.confidence_level)
    return {
        "model": model.to_dict(),
        "n_values": len(model_rows),
        "n_below_lloq": int((model_rows["BLQFL"] == "Y").sum()),
        "visit_means": _visit_means(rows[rows["ANL01FL"] == "Y"], setup.plan.confidence_level),
    }


def _visit_means(rows: pd.DataFrame, conf_level: float) -> list[dict[str, Any]]:
    """Per arm and analysis visit (in target-day order): n, mean, SD and the t CI of the mean."""
    if rows.empty:
        return []
    order = rows.groupby("AVISITCD")["AVISITN"].median().sort_values()
    names = rows.drop_duplicates("AVISITCD").set_index("AVISITCD")["AVISIT"]
    means = visit_means(rows["AVAL"].to_numpy(), rows["AVISITCD"].to_numpy(), rows["ARM"].to_numpy(),
                        conf_level=conf_level)
    out = [dict(mean.to_dict(), visit_name=names[mean.visit], day=float(order[mean.visit])) for mean in means]
    return sorted(out, key=lambda row: (row["day"], row["arm"]))


def _change_family(endpoint: Endpoint, datasets: AnalysisDatasets, chosen: pd.DataFrame) -> dict[str, Any]:
    setup = datasets.setup
    visit = visit_code_for_change(setup, endpoint.visits)
    if visit is None:
        return {"error": f"endpoint {endpoint.id} names no fixed post-baseline visit to measure the change at"}
    strata = _strata_column(chosen)
    markers, results, notes = [], [], []
    for path in endpoint.measures:
        form, item = path.split(".", 1)
        code = paramcd(setup, form, item)
        definition = setup.protocol.item(form, item)
        label = f"{definition.label} ({definition.unit})" if definition.unit else definition.label
        frame = chosen[["USUBJID", "ARM", "STRATUM"]].join(change_at_visit(datasets.adlb, code, visit), on="USUBJID")
        marker: dict[str, Any] = {"paramcd": code, "item": path, "label": label, "unit": definition.unit,
                                  "describe": describe(frame, ["BASE", "AVAL", "CHG"], [setup.treated_arm, setup.reference_arm])}
        try:
            fit = _ancova(frame, code, label, strata, setup, notes)
            marker["ancova"] = fit.to_dict()
            results.append((marker, fit))
        except CmvtrialError as error:
            marker["ancova"] = {"error": error.message}
        marker["wilcoxon"] = _safely(lambda frame=frame: wilcoxon_by_arm(
            frame["CHG"].to_numpy(), frame["ARM"].to_numpy(), reference=setup.reference_arm,
            conf_level=setup.plan.confidence_level).to_dict())
        marker["change_visit"] = visit
        markers.append(marker)
    adjusted = adjust_p_values([fit.p for _, fit in results], setup.plan.multiplicity)
    for (marker, _fit), p in zip(results, adjusted, strict=True):
        marker["ancova"]["p_adjusted"] = p
        marker["ancova"]["adjustment"] = setup.plan.multiplicity
    missing = {arm: sum(m["ancova"].get("n_missing", {}).get(arm, 0) for m in markers) for arm in
               (setup.treated_arm, setup.reference_arm)}
    return {"visit": visit, "markers": markers, "adjustment": setup.plan.multiplicity, "strata_used": strata is not None,
            "notes": sorted(set(notes)),
            "missing_statement": (
                f"Complete cases: a subject without the baseline or the {visit} value of a marker is left out of that "
                f"marker's analysis ({sum(missing.values())} marker values missing in all; per marker in n_missing)."
            )}


def _ancova(frame: pd.DataFrame, code: str, label: str, strata: str | None, setup: Any, notes: list[str]) -> Any:
    options = dict(outcome="CHG", arm="ARM", baseline="BASE", reference=setup.reference_arm,
                   conf_level=setup.plan.confidence_level, label=label)
    if strata is not None:
        try:
            return ancova(frame, strata=strata, **options)
        except CmvtrialError:
            notes.append(f"{code}: too few complete values to adjust for the strata; adjusted for baseline only")
    return ancova(frame, **options)


def _rescue(datasets: AnalysisDatasets, chosen: pd.DataFrame, data: TrialData) -> dict[str, Any]:
    """Subjects given a study drug after their end of treatment (rescue treatment), by arm."""
    from scipy import stats

    setup = datasets.setup
    given = data.doses[(data.doses["status"] == "given") & (data.doses["date"] <= data.cutoff_timestamp)]
    after = given.merge(chosen[["USUBJID", "EOTDT"]], left_on="subject_id", right_on="USUBJID")
    rescued = set(after.loc[after["date"] > after["EOTDT"], "subject_id"])
    arms = [setup.treated_arm, setup.reference_arm]
    counts = {arm: {"n": int((chosen["ARM"] == arm).sum()),
                    "events": int(chosen.loc[chosen["ARM"] == arm, "USUBJID"].isin(rescued).sum())} for arm in arms}
    for value in counts.values():
        value["percent"] = round(100.0 * value["events"] / value["n"], 1) if value["n"] else None
    table = [[counts[arm]["events"], counts[arm]["n"] - counts[arm]["events"]] for arm in arms]
    p = float(stats.fisher_exact(table).pvalue) if all(c["n"] for c in counts.values()) else math.nan
    return {"definition": "a study drug given after the subject's end of treatment", "by_arm": counts,
            "fisher_p": p, "r_equivalent": "fisher.test(matrix(c(a, b, c, d), 2))"}


def _descriptive(endpoint: Endpoint, datasets: AnalysisDatasets, chosen: pd.DataFrame) -> dict[str, Any]:
    setup = datasets.setup
    out = []
    for path in endpoint.measures:
        form, item = path.split(".", 1)
        rows = datasets.adlb[(datasets.adlb["PARAMCD"] == paramcd(setup, form, item)) & (datasets.adlb["ANL01FL"] == "Y")]
        rows = rows.merge(chosen[["USUBJID", "ARM"]], on="USUBJID")
        out.append({"item": path, "visit_means": _visit_means(rows, setup.plan.confidence_level)})
    return {"measures": out}


def _other_parameters(datasets: AnalysisDatasets, chosen: pd.DataFrame, arms: list[str]) -> list[dict[str, Any]]:
    """The plan's additional parameters: baseline, value and change at each fixed visit, by arm."""
    setup = datasets.setup
    visits = [v.code for v in setup.protocol.visits if v.repeat is None and v.anchor == "randomization" and v.day]
    out = []
    for path in setup.plan.additional_parameters:
        form, item = path.split(".", 1)
        code = paramcd(setup, form, item)
        definition = setup.protocol.item(form, item)
        for visit in visits:
            frame = chosen[["USUBJID", "ARM"]].join(change_at_visit(datasets.adlb, code, visit), on="USUBJID")
            out.append({"paramcd": code, "item": path, "label": definition.label, "unit": definition.unit,
                        "visit": visit, "describe": describe(frame, ["BASE", "AVAL", "CHG"], arms)})
    return out


def _methods(datasets: AnalysisDatasets, population: str) -> dict[str, str]:
    plan = datasets.setup.plan
    level = f"{plan.confidence_level:.0%}"
    return {
        "population": POPULATIONS[population][2] + ". Safety tables always use the safety population.",
        "baseline": "Baseline is the last value on or before the day of randomization (day 0).",
        "windows": ("Post-baseline values are placed in analysis visits by study day within the protocol's visit "
                    "windows; the value nearest the target day is analysed (the later on a tie); values outside "
                    "every window are unscheduled and enter only the mixed model."),
        "below_lloq": (f"CMV-DNA below the limit of quantification ({datasets.setup.lloq:g} {datasets.setup.cmv_unit}) "
                       f"enters log10 analyses as {plan.below_lloq_fraction_of_lloq:g} x the limit."),
        "time_to_event": (f"Duration of viremia from the first positive CMV-DNA to the first result below the limit, "
                          f"censored at the last result. Kaplan-Meier with {level} CI ({plan.km_confidence_interval} "
                          f"transform, R's rule for the median); log-rank test and Cox model (Efron ties), stratified "
                          f"by the randomization strata when there is more than one; restricted mean to day "
                          f"{plan.rmst_tau_days} as sensitivity."),
        "decline": ("Linear mixed model of log10 CMV-DNA on study day, arm and their interaction with a random "
                    "intercept and slope per subject (REML), baseline to the end of treatment; nlme's standard "
                    "errors and containment degrees of freedom."),
        "change": (f"ANCOVA of the change from baseline on arm and baseline (and strata), complete cases; "
                   f"{plan.multiplicity} adjustment across each endpoint's markers; Wilcoxon rank-sum test of the "
                   "change with the Hodges-Lehmann shift as sensitivity."),
        "reference": "Every statistic is computed as R's survival and nlme packages compute it (docs/statistics.md).",
    }
