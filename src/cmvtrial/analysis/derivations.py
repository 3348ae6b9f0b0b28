"""Analysis datasets from a trial snapshot: populations, ADSL, ADTTE and ADLB (ADaM-like), pure.

Why ADaM-like frames: every analysis of the report reads one of three tables that a statistician
can also export (``cmvtrial export adam``) and rerun in R — the subject-level table (ADSL), the
time-to-event table for the duration of viremia (ADTTE) and the longitudinal lab table (ADLB).
Columns follow ADaM names where one exists (``USUBJID``, ``TRT01P``, ``AVAL``, ``CNSR``, ``ABLFL``,
``ANL01FL`` …); every column is listed in docs/report.md.

The rules, each from the protocol (no trial number is written here):

- **Populations** (ICH E9 §5.2): intention-to-treat, per-protocol and safety, flagged on ADSL;
  ADSL and the population rules are in :mod:`cmvtrial.analysis.adsl`.
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

from cmvtrial.analysis.adsl import derive_adsl
from cmvtrial.analysis.analysis_visits import DAY, UNSCHEDULED, assign_visits, baseline_visit_name, visit_slots
from cmvtrial.core.units import convert
from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.analysis.trial_data import TrialData
    from cmvtrial.core.protocol import AnalysisPlan, Protocol

CMV_PARAMCD = "CMVLOG10"
TTE_PARAMCD = "DURVIR"


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
