"""The subject-level analysis table (ADSL) and the analysis populations, from a trial snapshot.

One row per randomized subject: randomized and received arm, stratum, dates (screening, consent,
randomization, first and last dose, end of treatment, withdrawal, the fixed nominal visits),
treatment duration and dose compliance, status and reason for leaving, baseline characteristics,
and the population flags. The populations (ICH E9 §5.2): intention-to-treat = every randomized
subject, by randomized arm; safety = every subject with at least one dose given, by the arm whose
drugs they received; per-protocol = randomized subjects meeting every ``analysis.per_protocol``
rule of the protocol (expressions over
:data:`~cmvtrial.core.protocol_analysis.SUBJECT_VARIABLES`); a rule that cannot be judged excludes,
and the reasons are kept (``PPEXCL``). Called by :func:`cmvtrial.analysis.derivations.derive_datasets`;
every column is listed in docs/report.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cmvtrial.analysis.analysis_visits import DAY, UNSCHEDULED, assign_visits, visit_slots
from cmvtrial.core.expressions import compile_expression
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.derivations import AnalysisSetup
    from cmvtrial.analysis.trial_data import TrialData
    from cmvtrial.core.protocol import Protocol

POPULATIONS: dict[str, tuple[str, str, str]] = {
    # name: (flag column, arm column, label)
    "itt": ("ITTFL", "TRT01P", "Intention-to-treat (all randomized, by randomized arm)"),
    "pp": ("PPFL", "TRT01P", "Per-protocol (by randomized arm)"),
    "safety": ("SAFFL", "TRT01A", "Safety (at least one dose, by treatment received)"),
}



def derive_adsl(
    data: TrialData, setup: AnalysisSetup, observations: pd.DataFrame, doses: pd.DataFrame, cmv: pd.DataFrame
) -> pd.DataFrame:
    """One row per randomized subject: arms, strata, dates, status, baseline values, flags."""
    subjects = data.subjects_frame
    cutoff = pd.Timestamp(data.data_cutoff)
    adsl = pd.DataFrame({"STUDYID": data.protocol.id, "PROTVER": data.protocol.version,
                         "USUBJID": subjects["subject_id"].astype(str), "SITEID": subjects["site"].astype(str)})
    adsl["TRT01P"] = subjects["arm_randomized"].astype(str)
    adsl["TRT01PL"] = adsl["TRT01P"].map(setup.arm_labels)
    adsl["STRATUM"] = [_stratum_label(strata, setup.protocol) for strata in subjects["strata"]]
    for column, source in (("SCRDT", "screening_date"), ("RFICDT", "consent_date"), ("RANDDT", "randomization_date"),
                           ("EOTDT", "end_of_treatment_date"), ("WDDT", "withdrawal_date")):
        adsl[column] = pd.to_datetime(subjects[source]).astype("datetime64[ns]")
    adsl["EOTRSN"] = subjects["end_of_treatment_reason"]

    given = doses[doses["status"] == "given"]
    first_last = given.groupby("subject_id")["date"].agg(["min", "max"])
    adsl["TRTSDT"] = pd.to_datetime(subjects["first_dose_date"]).astype("datetime64[ns]").fillna(
        adsl["USUBJID"].map(first_last["min"]))
    adsl["TRTEDT"] = pd.to_datetime(subjects["last_dose_date"]).astype("datetime64[ns]").fillna(
        adsl["USUBJID"].map(first_last["max"]))
    adsl["NDOSE"] = adsl["USUBJID"].map(given.groupby("subject_id").size()).fillna(0).astype(int)
    received = subjects["arm_received"].where(subjects["arm_received"].notna(), None)
    inferred = _arm_from_doses(adsl["USUBJID"], given, setup.protocol)
    adsl["TRT01A"] = [r if r is not None else i for r, i in zip(received, inferred, strict=True)]
    adsl.loc[adsl["NDOSE"] == 0, "TRT01A"] = None
    adsl["TRT01AL"] = adsl["TRT01A"].map(setup.arm_labels)

    # Treatment period: randomization to the end of treatment, else to withdrawal; for a subject who
    # left the trial without either, the day after the last dose; for one still in it, the cut-off.
    left = subjects["status"].isin(("completed", "withdrawn", "lost_to_follow_up", "died"))
    after_last_dose = (adsl["TRTEDT"] + DAY).where(left)
    end = adsl["EOTDT"].fillna(adsl["WDDT"]).fillna(after_last_dose).fillna(cutoff).clip(upper=cutoff)
    adsl["TRTDURD"] = ((end - adsl["RANDDT"]) / DAY).astype(int)
    adsl["COMPLPCT"] = _compliance(adsl, given, setup.protocol)

    # Visit dates from the windowed observation dates (one column per fixed nominal visit).
    for code, dates in _visit_dates(adsl, observations, setup).items():
        adsl[f"{code}DT"] = dates
    adsl["LSTASDT"] = adsl["USUBJID"].map(observations.groupby("subject_id")["date"].max())

    status = subjects["status"]
    adsl["STATUS"] = status
    adsl["EOSSTT"] = np.select(
        [status.isin(("withdrawn", "lost_to_follow_up", "died")), status == "completed"],
        ["DISCONTINUED", "COMPLETED"], "ONGOING")
    adsl["DCSREAS"] = subjects["withdrawal_reason"].where(subjects["withdrawal_reason"].notna(),
                                                          status.where(adsl["EOSSTT"] == "DISCONTINUED"))
    adsl["ELIGFL"] = subjects["eligible"].map({True: "Y", False: "N"})

    adsl["AGE"] = pd.to_numeric(subjects["age_years"], errors="coerce")
    adsl["SEX"] = subjects["sex"]
    adsl["WEIGHTBL"] = pd.to_numeric(subjects["weight_kg"], errors="coerce")
    adsl["DIAGNOS"] = subjects["diagnosis"]
    adsl["CRCLBL"] = pd.to_numeric(subjects["creatinine_clearance_ml_min"], errors="coerce")
    adsl["STEROIDBL"] = pd.to_numeric(subjects["steroid_mg_per_kg_day"], errors="coerce")
    baseline_cmv = pd.to_numeric(subjects["baseline_cmv_copies_per_ml"], errors="coerce")
    adsl["CMVBL"] = baseline_cmv.fillna(adsl["USUBJID"].map(_cmv_baseline(cmv, adsl)))
    with np.errstate(divide="ignore", invalid="ignore"):
        adsl["CMVBLL10"] = np.log10(adsl["CMVBL"].where(adsl["CMVBL"] > 0))

    post = cmv.merge(adsl[["USUBJID", "RANDDT"]], left_on="subject_id", right_on="USUBJID")
    post = post[post["date"] > post["RANDDT"]]
    adsl["NPBCMV"] = adsl["USUBJID"].map(post.groupby("subject_id").size()).fillna(0).astype(int)

    adsl["ITTFL"] = "Y"
    adsl["SAFFL"] = np.where(adsl["NDOSE"] > 0, "Y", "N")
    adsl["PPFL"], adsl["PPEXCL"] = _per_protocol(adsl, setup)
    return adsl


def _stratum_label(strata: object, protocol: Protocol) -> str:
    """``site=PKUPH`` (factors in the protocol's order, then any others), or ``all`` when unstratified."""
    if not isinstance(strata, dict) or not strata:
        return "all"
    order = [factor.name for factor in protocol.randomization.strata]
    names = [n for n in order if n in strata] + sorted(n for n in strata if n not in order)
    return "/".join(f"{name}={strata[name]}" for name in names)


def _arm_from_doses(subject_ids: pd.Series, given: pd.DataFrame, protocol: Protocol) -> list[str | None]:
    """The arm whose drug set matches what a subject was given (smallest arm containing it)."""
    arm_drugs = sorted(((arm.id, frozenset(r.drug.casefold() for r in arm.regimens)) for arm in protocol.arms),
                       key=lambda pair: len(pair[1]))
    drugs = given.assign(drug=given["drug"].str.casefold()).groupby("subject_id")["drug"].agg(frozenset)
    found: dict[frozenset[str], str | None] = {}
    out = []
    for subject in subject_ids:
        taken = drugs.get(subject)
        if taken is None:
            out.append(None)
            continue
        if taken not in found:
            found[taken] = next((arm for arm, names in arm_drugs if taken <= names), None)
        out.append(found[taken])
    return out


def _interval_days(frequency: object) -> float:
    if frequency.every_days is not None:  # type: ignore[attr-defined]
        return float(frequency.every_days)  # type: ignore[attr-defined]
    if frequency.every_hours is not None:  # type: ignore[attr-defined]
        return frequency.every_hours / 24.0  # type: ignore[attr-defined]
    return 7.0 / frequency.times_per_week  # type: ignore[attr-defined]


def _compliance(adsl: pd.DataFrame, given: pd.DataFrame, protocol: Protocol) -> pd.Series:
    """Lowest, over the randomized arm's drugs, of 100 × given / planned (capped at 100).

    Planned = the regimen's administrations from its start day to the end of the treatment period,
    at its nominal frequency (at least one); renal dose-interval changes are not modelled.
    """
    counts = given.assign(drug=given["drug"].str.casefold()).groupby(["subject_id", "drug"]).size()
    result = pd.Series(np.nan, index=adsl.index)
    for arm in protocol.arms:
        rows = adsl["TRT01P"] == arm.id
        if not rows.any():
            continue
        lowest = pd.Series(np.inf, index=adsl.index[rows])
        for regimen in arm.regimens:
            days = (adsl.loc[rows, "TRTDURD"] - regimen.start.day).clip(lower=0)
            planned = np.maximum(1, np.ceil(days / _interval_days(regimen.frequency)))
            keys = pd.MultiIndex.from_arrays([adsl.loc[rows, "USUBJID"], [regimen.drug.casefold()] * int(rows.sum())])
            taken = pd.Series(counts.reindex(keys).fillna(0).to_numpy(), index=lowest.index)
            lowest = np.minimum(lowest, np.minimum(100.0, 100.0 * taken / planned))
        result[rows] = lowest
    return result.round(1)


def _visit_dates(adsl: pd.DataFrame, observations: pd.DataFrame, setup: AnalysisSetup) -> dict[str, pd.Series]:
    """Per fixed nominal visit (``W12``, ``FU3M``): the date of the sample nearest its target day."""
    fixed = [slot for slot in visit_slots(setup.protocol) if not slot.repeats]
    if not fixed or observations.empty:
        return {slot.code: pd.Series(pd.NaT, index=adsl.index) for slot in fixed}
    pairs = observations[["subject_id", "date"]].drop_duplicates()
    pairs = pairs.merge(adsl[["USUBJID", "RANDDT", "EOTDT"]], left_on="subject_id", right_on="USUBJID")
    day = ((pairs["date"] - pairs["RANDDT"]) / DAY).to_numpy(dtype=float)
    eot = ((pairs["EOTDT"] - pairs["RANDDT"]) / DAY).to_numpy(dtype=float)
    assigned = assign_visits(day, eot, tuple(fixed))
    pairs = pairs.assign(code=assigned.code, distance=assigned.distance)
    pairs = pairs[pairs["code"] != UNSCHEDULED].sort_values(["distance", "date"], ascending=[True, False])
    chosen = pairs.drop_duplicates(["subject_id", "code"])
    return {
        slot.code: adsl["USUBJID"].map(chosen[chosen["code"] == slot.code].set_index("subject_id")["date"])
        for slot in fixed
    }


def _cmv_baseline(cmv: pd.DataFrame, adsl: pd.DataFrame) -> pd.Series:
    """Last quantified CMV-DNA on or before randomization, per subject (copies in the item's unit)."""
    merged = cmv.merge(adsl[["USUBJID", "RANDDT"]], left_on="subject_id", right_on="USUBJID")
    merged = merged[(merged["date"] <= merged["RANDDT"]) & merged["value"].notna()]
    return merged.groupby("subject_id")["value"].last()


def subject_variables(adsl: pd.DataFrame) -> list[dict[str, object]]:
    """Per subject, the values per-protocol rules may read (``SUBJECT_VARIABLES``)."""
    eligible = adsl["ELIGFL"].map({"Y": True, "N": False})
    frame = pd.DataFrame({
        "eligible": eligible,
        "arm_randomized": adsl["TRT01P"],
        "arm_received": adsl["TRT01A"],
        "doses_given": adsl["NDOSE"],
        "dose_compliance_percent": adsl["COMPLPCT"],
        "days_on_treatment": adsl["TRTDURD"],
        "post_baseline_cmv_assessments": adsl["NPBCMV"],
        "withdrawn": adsl["STATUS"].isin(("withdrawn", "lost_to_follow_up")),
    })
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return records


def _per_protocol(adsl: pd.DataFrame, setup: AnalysisSetup) -> tuple[list[str], list[str]]:
    rules = [(rule, compile_expression(rule.expression)) for rule in setup.plan.per_protocol]
    flags, reasons = [], []
    cache: dict[tuple[object, ...], list[str]] = {}
    for values in subject_variables(adsl):
        key = tuple(values.values())
        if key not in cache:
            failed = []
            for rule, compiled in rules:
                outcome = compiled.evaluate(values).value
                if outcome is not True:
                    failed.append(rule.id if outcome is False else f"{rule.id} (unknown)")
            cache[key] = failed
        failed = cache[key]
        flags.append("N" if failed else "Y")
        reasons.append("; ".join(failed))
    return flags, reasons


def population_frame(adsl: pd.DataFrame, population: str) -> pd.DataFrame:
    """The subjects of ``population`` (itt | pp | safety) with their analysis arm in column ``ARM``."""
    if population not in POPULATIONS:
        raise InvalidInput(f"unknown population {population!r}; use one of {', '.join(POPULATIONS)}",
                           field="population", value=population)
    flag, arm, _label = POPULATIONS[population]
    chosen = adsl[(adsl[flag] == "Y") & adsl[arm].notna()]
    return chosen.assign(ARM=chosen[arm])
