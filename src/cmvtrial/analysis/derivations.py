"""Analysis datasets from a trial snapshot: populations, ADSL, ADTTE and ADLB (ADaM-like), pure.

Why ADaM-like frames: every analysis of the report reads one of three tables that a statistician
can also export (``cmvtrial export adam``) and rerun in R — the subject-level table (ADSL), the
time-to-event table for the duration of viremia (ADTTE) and the longitudinal lab table (ADLB).
Columns follow ADaM names where one exists (``USUBJID``, ``TRT01P``, ``AVAL``, ``CNSR``, ``ABLFL``,
``ANL01FL`` …); every column is listed in docs/report.md.

The rules, each from the protocol (no trial number is written here):

- **Populations** (ICH E9 §5.2): intention-to-treat = every randomized subject, by randomized
  arm; safety = every subject with at least one dose given, by the arm whose drugs they received;
  per-protocol = randomized subjects meeting every ``analysis.per_protocol`` rule of the protocol
  (expressions over :data:`~cmvtrial.core.protocol_analysis.SUBJECT_VARIABLES`); a rule that
  cannot be judged excludes, and the reasons are kept (``PPEXCL``).
- **Duration of CMV viremia** (seed 000: "between detection of positive CMV DNA load in plasma and
  CMV negativity"): start = the first CMV-DNA at or above the assay's limit of quantification
  (screening included); event = the first result below the limit after it (``not detected``, or
  ``detected below the limit`` when the protocol counts it as negative), or the first of the
  protocol's ``consecutive_below_lloq`` consecutive negatives at least ``min_days_between`` apart;
  otherwise censored at the last CMV-DNA result, the reason kept. Only data up to the cut-off count.
- **Longitudinal values**: baseline = the last value on or before randomization (day 0);
  change = value − baseline; analysis visits by study day in the protocol's windows
  (:mod:`cmvtrial.analysis.analysis_visits`), one analysed value per visit (``ANL01FL``: nearest
  the target day, the later on a tie). CMV-DNA enters as log10 copies/mL; a result below the limit
  as log10 of ``analysis.below_lloq_fraction_of_lloq`` × the limit (``BLQFL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cmvtrial.analysis.analysis_visits import UNSCHEDULED, assign_visits, baseline_visit_name, visit_slots
from cmvtrial.core.expressions import compile_expression
from cmvtrial.core.units import convert
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.trial_data import TrialData
    from cmvtrial.core.protocol import AnalysisPlan, Protocol

POPULATIONS: dict[str, tuple[str, str, str]] = {
    # name: (flag column, arm column, label)
    "itt": ("ITTFL", "TRT01P", "Intention-to-treat (all randomized, by randomized arm)"),
    "pp": ("PPFL", "TRT01P", "Per-protocol (by randomized arm)"),
    "safety": ("SAFFL", "TRT01A", "Safety (at least one dose, by treatment received)"),
}
CMV_PARAMCD = "CMVLOG10"
TTE_PARAMCD = "DURVIR"
DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class AnalysisSetup:
    """What the derivations read from the protocol, checked once."""

    protocol: Protocol
    plan: AnalysisPlan
    reference_arm: str
    treated_arm: str
    cmv_form: str
    cmv_item: str
    cmv_unit: str
    lloq: float
    consecutive_negatives: int
    min_days_between: int
    below_lloq_is_negative: bool

    @property
    def arm_labels(self) -> dict[str, str]:
        return {arm.id: arm.label for arm in self.protocol.arms}


def analysis_setup(protocol: Protocol) -> AnalysisSetup:
    """The protocol's two arms, CMV-DNA item, assay limit and analysis plan; refuses what is missing."""
    if protocol.analysis is None:
        raise InvalidInput(f"protocol {protocol.id} has no 'analysis' section; the report needs it (docs/report.md)",
                           field="analysis")
    experimental = [arm.id for arm in protocol.arms if arm.role == "experimental"]
    others = [arm.id for arm in protocol.arms if arm.role != "experimental"]
    if len(experimental) != 1 or len(others) != 1:
        raise InvalidInput("the analyses compare one experimental arm with one control arm", field="arms")
    measures = [m for e in protocol.endpoints if e.analysis == "kaplan_meier_logrank_cox" for m in e.measures]
    measures += [m for e in protocol.endpoints if e.analysis == "mixed_model_log10_decline" for m in e.measures]
    if not measures:
        raise InvalidInput(f"protocol {protocol.id} has no CMV-DNA endpoint (kaplan_meier_logrank_cox)", field="endpoints")
    form_id, item_id = measures[0].split(".", 1)
    item = protocol.item(form_id, item_id)
    assay = protocol.assay.cmv_dna
    lloq = assay.in_primary_unit(assay.lloq)
    if item.unit is not None and item.unit != assay.primary_unit:
        lloq = convert(lloq, assay.primary_unit, item.unit)
    return AnalysisSetup(
        protocol=protocol,
        plan=protocol.analysis,
        reference_arm=others[0],
        treated_arm=experimental[0],
        cmv_form=form_id,
        cmv_item=item_id,
        cmv_unit=item.unit or assay.primary_unit,
        lloq=float(lloq),
        consecutive_negatives=assay.negativity.consecutive_below_lloq,
        min_days_between=assay.negativity.min_days_between,
        below_lloq_is_negative=assay.negativity.detected_below_lloq_counts_as_negative,
    )


@dataclass(frozen=True, eq=False)
class AnalysisDatasets:
    """The three analysis tables of one snapshot."""

    setup: AnalysisSetup
    adsl: pd.DataFrame
    adtte: pd.DataFrame
    adlb: pd.DataFrame


def derive_datasets(data: TrialData) -> AnalysisDatasets:
    """ADSL, ADTTE and ADLB of ``data`` (only data dated on or before the cut-off is used)."""
    setup = analysis_setup(data.protocol)
    observations = data.observations[data.observations["date"] <= data.cutoff_timestamp]
    doses = data.doses[data.doses["date"] <= data.cutoff_timestamp]
    cmv = cmv_series(observations, setup)
    adsl = derive_adsl(data, setup, observations, doses, cmv)
    adtte = derive_adtte(adsl, cmv, setup)
    adlb = derive_adlb(adsl, observations, cmv, setup)
    return AnalysisDatasets(setup=setup, adsl=adsl, adtte=adtte, adlb=adlb)


# ------------------------------------------------------------------------------------------------
# CMV-DNA results


def cmv_series(observations: pd.DataFrame, setup: AnalysisSetup) -> pd.DataFrame:
    """Every CMV-DNA result (the endpoint's item, and the screening form's item of the same id),
    sorted by subject and date, with ``positive`` / ``negative`` judged against the assay limit."""
    forms = {setup.cmv_form, setup.protocol.screening_form}
    chosen = observations[(observations["item"] == setup.cmv_item) & observations["form"].isin(forms)]
    cmv = chosen[["subject_id", "date", "visit", "value", "below_lloq", "not_detected"]].copy()
    value = cmv["value"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        quantified_below = value < setup.lloq
    below = cmv["below_lloq"].to_numpy() | cmv["not_detected"].to_numpy() | quantified_below
    cmv["blq"] = below
    cmv["positive"] = ~below & ~np.isnan(value)
    if setup.below_lloq_is_negative:
        cmv["negative"] = below
    else:
        cmv["negative"] = cmv["not_detected"].to_numpy()
    return cmv.sort_values(["subject_id", "date"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# ADSL


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


# ------------------------------------------------------------------------------------------------
# ADTTE: duration of CMV viremia


def derive_adtte(adsl: pd.DataFrame, cmv: pd.DataFrame, setup: AnalysisSetup) -> pd.DataFrame:
    """One row per randomized subject: start, event or censoring date, days, censoring reason."""
    subjects_all = cmv["subject_id"].to_numpy()
    dates_all = cmv["date"].to_numpy()
    positive_all = cmv["positive"].to_numpy()
    negative_all = cmv["negative"].to_numpy()
    # cmv is sorted by subject: each subject's results are one contiguous slice.
    names, first = np.unique(subjects_all, return_index=True)
    ends = [*first[1:].tolist(), len(subjects_all)] if len(first) else []
    bounds = dict(zip(names.tolist(), zip(first.tolist(), ends, strict=True), strict=True))
    need, spacing = setup.consecutive_negatives, setup.min_days_between
    rows = []
    for subject, randomized, status, reason in zip(adsl["USUBJID"], adsl["RANDDT"], adsl["STATUS"], adsl["DCSREAS"],
                                                   strict=True):
        lo, hi = bounds.get(subject, (0, 0))
        dates, positive, negative = dates_all[lo:hi], positive_all[lo:hi], negative_all[lo:hi]
        first_positive = np.flatnonzero(positive)
        if len(first_positive):
            start, source, begin = dates[first_positive[0]], "first positive CMV-DNA", int(first_positive[0]) + 1
        else:
            start, source = np.datetime64(randomized, "ns"), "randomization (no positive CMV-DNA recorded)"
            begin = int(np.searchsorted(dates, start, side="right"))
        event_at = _first_negativity(dates[begin:], negative[begin:], need, spacing)
        if event_at is not None:
            end, censored, why = event_at, 0, None
        else:
            later = dates[begin:]
            end = later[-1] if len(later) else start
            censored = 1
            why = _censoring_reason(len(later) > 0, status, reason)
        rows.append((subject, start, source, end, censored, why))
    tte = pd.DataFrame(rows, columns=["USUBJID", "STARTDT", "STARTSRC", "ADT", "CNSR", "CNSRREAS"])
    out = adsl[["STUDYID", "USUBJID", "SITEID", "TRT01P", "TRT01A", "STRATUM", "ITTFL", "SAFFL", "PPFL"]].merge(
        tte, on="USUBJID")
    out.insert(5, "PARAMCD", TTE_PARAMCD)
    out.insert(6, "PARAM", "Duration of CMV viremia (days)")
    out["AVAL"] = ((out["ADT"] - out["STARTDT"]) / DAY).astype(int)
    out["EVENT"] = 1 - out["CNSR"]
    out["EVNTDESC"] = np.where(out["CNSR"] == 0, "CMV-DNA below the assay limit", "censored at the last CMV-DNA result")
    return out


def _first_negativity(dates: np.ndarray, negative: np.ndarray, need: int, spacing: int) -> np.datetime64 | None:
    """Date of the first run of ``need`` consecutive negative results, each ``spacing`` days after the last."""
    run_start, run_length, last = None, 0, None
    for when, is_negative in zip(dates, negative, strict=True):
        if not is_negative:
            run_start, run_length, last = None, 0, None
            continue
        if run_length and (when - last) / DAY < spacing:
            continue  # too soon after the previous negative to confirm it; wait for a later sample
        if run_length == 0:
            run_start = when
        run_length += 1
        last = when
        if run_length >= need:
            return run_start
    return None


def _censoring_reason(assessed_after: bool, status: str, reason: object) -> str:
    if not assessed_after:
        return "no CMV-DNA result after the start"
    if status in ("withdrawn", "lost_to_follow_up", "died"):
        detail = f": {reason}" if isinstance(reason, str) and reason and reason != status else ""
        return f"{status.replace('_', ' ')}{detail}"
    if status == "completed":
        return "completed the trial without CMV negativity"
    return "ongoing at the data cut-off"


# ------------------------------------------------------------------------------------------------
# ADLB


def adlb_parameters(setup: AnalysisSetup) -> list[tuple[str, str]]:
    """(form, item) of every longitudinal parameter: efficacy endpoints' measures, then the plan's extras."""
    seen: list[tuple[str, str]] = []
    efficacy = [e for e in setup.protocol.endpoints if e.kind != "safety"]
    for path in [m for e in efficacy for m in e.measures] + list(setup.plan.additional_parameters):
        form, item = path.split(".", 1)
        setup.protocol.item(form, item)  # NotFound names an unknown item
        if (form, item) not in seen:
            seen.append((form, item))
    return seen


def paramcd(setup: AnalysisSetup, form: str, item: str) -> str:
    """The parameter code: log10 CMV-DNA is ``CMVLOG10``; others the item's SDTM test code or id."""
    if (form, item) == (setup.cmv_form, setup.cmv_item):
        return CMV_PARAMCD
    definition = setup.protocol.item(form, item)
    testcd = definition.sdtm.testcd if definition.sdtm is not None else None
    return testcd or item.upper()


def derive_adlb(adsl: pd.DataFrame, observations: pd.DataFrame, cmv: pd.DataFrame, setup: AnalysisSetup) -> pd.DataFrame:
    """One row per value of a longitudinal parameter, with baseline, change and analysis visit."""
    parts = []
    for form, item in adlb_parameters(setup):
        definition = setup.protocol.item(form, item)
        if (form, item) == (setup.cmv_form, setup.cmv_item):
            rows = cmv.copy()
            imputed = setup.lloq * setup.plan.below_lloq_fraction_of_lloq
            rows = rows[rows["value"].notna() | rows["blq"]]
            with np.errstate(divide="ignore", invalid="ignore"):
                rows["AVAL"] = np.log10(np.where(rows["blq"], imputed, rows["value"]))
            rows["BLQFL"] = np.where(rows["blq"], "Y", "")
            unit, label = f"log10 {setup.cmv_unit}", f"log10 {definition.label} ({setup.cmv_unit})"
            rows = rows.assign(LOINC=definition.loinc)
        else:
            rows = observations[(observations["form"] == form) & (observations["item"] == item) & observations["value"].notna()]
            rows = rows.assign(AVAL=rows["value"], BLQFL="", LOINC=rows["loinc"].fillna(definition.loinc or ""))
            unit = definition.unit or ""
            label = f"{definition.label} ({unit})" if unit else definition.label
        parts.append(rows[["subject_id", "date", "visit", "AVAL", "BLQFL", "LOINC"]].assign(
            PARAMCD=paramcd(setup, form, item), PARAM=label, ITEM=f"{form}.{item}", AVALU=unit))
    columns = ["subject_id", "date", "visit", "AVAL", "BLQFL", "LOINC", "PARAMCD", "PARAM", "ITEM", "AVALU"]
    values = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    keys = adsl[["STUDYID", "USUBJID", "SITEID", "TRT01P", "TRT01A", "STRATUM", "ITTFL", "SAFFL", "PPFL", "RANDDT",
                 "EOTDT"]]
    adlb = keys.merge(values.rename(columns={"subject_id": "USUBJID", "date": "ADT", "visit": "VISIT"}), on="USUBJID")
    adlb["ADY"] = ((adlb["ADT"] - adlb["RANDDT"]) / DAY).astype(int)
    eot_day = ((adlb["EOTDT"] - adlb["RANDDT"]) / DAY).to_numpy(dtype=float)
    assigned = assign_visits(adlb["ADY"].to_numpy(dtype=float), eot_day, visit_slots(setup.protocol))
    adlb["AVISIT"], adlb["AVISITCD"], adlb["AVISITN"] = assigned.name, assigned.code, assigned.target
    adlb["_distance"] = assigned.distance
    adlb = adlb.sort_values(["USUBJID", "PARAMCD", "ADT"], kind="stable").reset_index(drop=True)

    # Baseline: the last value on or before day 0.
    pre = adlb[adlb["ADY"] <= 0]
    baseline_index = pre.groupby(["USUBJID", "PARAMCD"]).tail(1).index
    adlb["ABLFL"] = ""
    adlb.loc[baseline_index, "ABLFL"] = "Y"
    adlb.loc[baseline_index, ["AVISIT", "AVISITCD", "AVISITN"]] = [baseline_visit_name(setup.protocol), "BL", 0.0]
    adlb.loc[(adlb["ADY"] <= 0) & (adlb["ABLFL"] != "Y"), ["AVISIT", "AVISITCD"]] = ["Pre-baseline", ""]
    base = adlb.loc[baseline_index].set_index(["USUBJID", "PARAMCD"])["AVAL"]
    adlb["BASE"] = pd.MultiIndex.from_frame(adlb[["USUBJID", "PARAMCD"]]).map(base).astype(float)
    adlb["CHG"] = np.where(adlb["ADY"] > 0, adlb["AVAL"] - adlb["BASE"], np.nan)

    # One analysed value per subject, parameter and visit: nearest the target day, the later on a tie.
    scheduled = adlb[(adlb["ADY"] > 0) & (adlb["AVISIT"] != UNSCHEDULED)]
    chosen = scheduled.sort_values(["_distance", "ADT"], ascending=[True, False]).drop_duplicates(
        ["USUBJID", "PARAMCD", "AVISITCD"]).index
    adlb["ANL01FL"] = ""
    adlb.loc[chosen.union(baseline_index), "ANL01FL"] = "Y"
    adlb["AVISIT"] = adlb["AVISIT"].astype(str)
    return adlb.drop(columns=["RANDDT", "EOTDT", "_distance"])


def change_at_visit(adlb: pd.DataFrame, paramcd_value: str, visit_code: str) -> pd.DataFrame:
    """Per subject: baseline and the analysed value and change at ``visit_code`` (NaN when missing)."""
    rows = adlb[adlb["PARAMCD"] == paramcd_value]
    base = rows[rows["ABLFL"] == "Y"].set_index("USUBJID")["AVAL"]
    at = rows[(rows["ANL01FL"] == "Y") & (rows["AVISITCD"] == visit_code)].set_index("USUBJID")
    return pd.DataFrame({"BASE": base, "AVAL": at["AVAL"], "CHG": at["CHG"]})


def visit_code_for_change(setup: AnalysisSetup, visits: tuple[str, ...]) -> str | None:
    """The visit a change-from-baseline endpoint is measured at: its last fixed-day visit after day 0."""
    fixed = [slot.code for slot in visit_slots(setup.protocol) if not slot.repeats and slot.anchor == "randomization"]
    chosen = [code for code in visits if code in fixed]
    return chosen[-1] if chosen else None
