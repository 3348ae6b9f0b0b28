"""Derivations: populations, ADSL, ADTTE (duration of viremia) and ADLB (windows, baseline, change).

Every rule is tested on a few hand-made subjects whose answer can be read off the data, plus
properties over random CMV-DNA series and visit days (hypothesis). The protocol is the shipped
sle-cmv-il2: LLOQ 137 IU/mL × 1.1 = 150.7 copies/mL, one negative sample ends viremia, weekly
visits ± 2 days from day 7, week 12 on day 84 ± 7, follow-up 90 (+14) days after the end of treatment.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmvtrial.analysis.adsl import population_frame
from cmvtrial.analysis.analysis_visits import UNSCHEDULED, assign_visits, visit_slots
from cmvtrial.analysis.derivations import CMV_PARAMCD, analysis_setup, change_at_visit, derive_datasets
from cmvtrial.analysis.trial_data import (
    AdverseEventRecord,
    DoseRecord,
    Observation,
    ScreeningOutcome,
    SubjectRecord,
    TrialData,
)
from cmvtrial.errors import InvalidInput
from cmvtrial.protocols import load_shipped_protocol

PROTOCOL = load_shipped_protocol("sle-cmv-il2")[0]
DAY0 = date(2025, 1, 6)
LLOQ = 137 * 1.1


def on(day: int) -> date:
    return DAY0 + timedelta(days=day)


def cmv(who: str, day: int, copies: float | None, *, below: bool = False, not_detected: bool = False,
        form: str = "cmv_load", visit: str = "TW") -> Observation:
    item_form = "screening" if form == "screening" else "cmv_load"
    return Observation(who, item_form, "cmv_dna", on(day), copies, "copies/mL", visit, "30247-1", below, not_detected)


def subject(who: str, arm: str = "il2_gcv", **fields) -> SubjectRecord:
    defaults = dict(site="PKUPH", arm_randomized=arm, randomization_date=DAY0, strata={"site": "PKUPH"},
                    eligible=True, status="completed")
    return SubjectRecord(who, **{**defaults, **fields})


def daily_doses(who: str, days: range, drugs=("ganciclovir",)) -> list[DoseRecord]:
    return [DoseRecord(who, drug, on(day)) for day in days for drug in drugs
            if drug == "ganciclovir" or day % 2 == 0]


def snapshot(subjects, observations=(), doses=(), cutoff=on(200), protocol=PROTOCOL, **extra) -> TrialData:
    return TrialData.create(protocol=protocol, data_cutoff=cutoff, subjects=subjects, observations=observations,
                            doses=doses, **extra)


def tte_row(data: TrialData, who: str) -> pd.Series:
    adtte = derive_datasets(data).adtte
    return adtte.set_index("USUBJID").loc[who]


# --- duration of viremia ---------------------------------------------------------------------------


def test_viremia_runs_from_the_first_positive_to_the_first_result_below_the_limit():
    data = snapshot(
        [subject("A", end_of_treatment_date=on(21))],
        [cmv("A", -3, 5000, form="screening", visit="SCR"), cmv("A", 0, 8000, visit="BL"), cmv("A", 7, 900),
         cmv("A", 14, 300), cmv("A", 21, None, below=True), cmv("A", 84, None, not_detected=True, visit="W12")],
    )
    row = tte_row(data, "A")
    assert (row["STARTDT"].date(), row["ADT"].date(), row["AVAL"], row["CNSR"], row["EVENT"]) == (on(-3), on(21), 24, 0, 1)
    assert row["STARTSRC"] == "first positive CMV-DNA" and row["CNSRREAS"] is None


def test_a_quantified_value_under_the_limit_is_negative():
    data = snapshot([subject("A")], [cmv("A", 0, 8000, visit="BL"), cmv("A", 7, LLOQ - 1), cmv("A", 14, None, below=True)])
    assert tte_row(data, "A")["AVAL"] == 7


def test_no_negative_result_is_censored_at_the_last_result_with_the_reason():
    withdrawn = subject("W", status="withdrawn", withdrawal_reason="withdrew consent", withdrawal_date=on(16))
    ongoing = subject("O", status="on_treatment")
    completed = subject("C", status="completed")
    observations = [cmv(who, day, 9000 - 100 * day, visit="BL" if day == 0 else "TW") for who in "WOC" for day in (0, 7, 14)]
    data = snapshot([withdrawn, ongoing, completed], observations)
    adtte = derive_datasets(data).adtte.set_index("USUBJID")
    assert adtte.loc["W", "CNSRREAS"] == "withdrawn: withdrew consent"
    assert adtte.loc["O", "CNSRREAS"] == "ongoing at the data cut-off"
    assert adtte.loc["C", "CNSRREAS"] == "completed the trial without CMV negativity"
    assert set(adtte["AVAL"]) == {14} and set(adtte["CNSR"]) == {1}


def test_no_result_after_the_start_is_censored_at_time_zero():
    data = snapshot([subject("A")], [cmv("A", 0, 8000, visit="BL")])
    row = tte_row(data, "A")
    assert (row["AVAL"], row["CNSR"], row["CNSRREAS"]) == (0, 1, "no CMV-DNA result after the start")


def test_without_a_positive_result_the_start_is_randomization():
    data = snapshot([subject("A")], [cmv("A", 0, None, below=True, visit="BL"), cmv("A", 7, None, below=True)])
    row = tte_row(data, "A")
    assert row["STARTSRC"].startswith("randomization") and (row["AVAL"], row["CNSR"]) == (7, 0)


def test_data_after_the_cutoff_are_not_used():
    data = snapshot([subject("A", status="on_treatment")], [cmv("A", 0, 8000, visit="BL"), cmv("A", 7, 900),
                                                           cmv("A", 14, None, below=True)], cutoff=on(10))
    row = tte_row(data, "A")
    assert (row["AVAL"], row["CNSR"], row["CNSRREAS"]) == (7, 1, "ongoing at the data cut-off")


def protocol_with_negativity(**negativity) -> object:
    assay = PROTOCOL.assay.cmv_dna
    changed = assay.negativity.model_copy(update=negativity)
    return PROTOCOL.model_copy(update={"assay": PROTOCOL.assay.model_copy(
        update={"cmv_dna": assay.model_copy(update={"negativity": changed})})})


def test_two_consecutive_negatives_a_week_apart_when_the_protocol_asks_for_them():
    protocol = protocol_with_negativity(consecutive_below_lloq=2, min_days_between=7)
    observations = [cmv("A", 0, 8000, visit="BL"), cmv("A", 7, None, below=True), cmv("A", 10, None, below=True),
                    cmv("A", 14, 400), cmv("A", 21, None, below=True), cmv("A", 25, None, below=True),
                    cmv("A", 28, None, below=True)]
    row = tte_row(snapshot([subject("A")], observations, protocol=protocol), "A")
    # day 7 is undone by the positive on day 14; day 25 is too soon after 21 to confirm it; 28 confirms 21.
    assert (row["AVAL"], row["CNSR"]) == (21, 0)


def test_detected_below_the_limit_may_not_count_as_negative():
    protocol = protocol_with_negativity(detected_below_lloq_counts_as_negative=False)
    observations = [cmv("A", 0, 8000, visit="BL"), cmv("A", 7, None, below=True), cmv("A", 14, None, below=True, not_detected=True)]
    assert tte_row(snapshot([subject("A")], observations, protocol=protocol), "A")["AVAL"] == 14


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["pos", "below", "nd"]), min_size=1, max_size=10))
def test_event_iff_a_negative_follows_the_first_positive(results):
    """For any weekly series: the event is the first negative after the first positive; otherwise
    censored at the last result; the duration is never negative."""
    observations = [
        cmv("A", 7 * k, 5000 if r == "pos" else None, below=r == "below", not_detected=r == "nd", visit="BL" if k == 0 else "TW")
        for k, r in enumerate(results)
    ]
    row = tte_row(snapshot([subject("A")], observations), "A")
    first_positive = results.index("pos") if "pos" in results else None
    begin = first_positive + 1 if first_positive is not None else 1
    negatives = [k for k in range(begin, len(results)) if results[k] != "pos"]
    start = 7 * (first_positive or 0)
    assert row["AVAL"] >= 0
    if negatives:
        assert (row["CNSR"], row["AVAL"]) == (0, 7 * negatives[0] - start)
    else:
        last = len(results) - 1 if begin < len(results) else None
        assert row["CNSR"] == 1
        assert row["AVAL"] == (7 * last - start if last is not None else 0)


# --- populations and ADSL ------------------------------------------------------------------------


def test_populations_follow_the_protocol_rules():
    subjects = [
        subject("OK", end_of_treatment_date=on(14)),
        subject("NODOSE", arm="gcv", end_of_treatment_date=on(14)),
        subject("SWAP", end_of_treatment_date=on(14)),  # randomized to IL-2, given ganciclovir only
        subject("LOW", arm="gcv", end_of_treatment_date=on(14)),
        subject("INELIGIBLE", arm="gcv", eligible=False, end_of_treatment_date=on(14)),
        subject("UNKNOWN", arm="gcv", eligible=None, end_of_treatment_date=on(14)),
    ]
    observations = [cmv(s.subject_id, day, 5000 if day == 0 else None, below=day > 0, visit="BL" if day == 0 else "TW")
                    for s in subjects for day in (0, 14)]
    doses = (daily_doses("OK", range(14), ("ganciclovir", "interleukin-2")) + daily_doses("SWAP", range(14))
             + daily_doses("LOW", range(0, 14, 2)) + daily_doses("INELIGIBLE", range(14)) + daily_doses("UNKNOWN", range(14)))
    adsl = derive_datasets(snapshot(subjects, observations, doses)).adsl.set_index("USUBJID")
    assert list(adsl["ITTFL"]) == ["Y"] * 6
    assert adsl.loc["NODOSE", "SAFFL"] == "N" and adsl.loc["NODOSE", "TRT01A"] is None
    assert adsl.loc["SWAP", ["TRT01P", "TRT01A"]].tolist() == ["il2_gcv", "gcv"]
    assert adsl.loc["LOW", "COMPLPCT"] == 50.0 and adsl.loc["OK", "COMPLPCT"] == 100.0
    assert adsl["PPFL"].to_dict() == {"OK": "Y", "NODOSE": "N", "SWAP": "N", "LOW": "N", "INELIGIBLE": "N", "UNKNOWN": "N"}
    assert adsl.loc["SWAP", "PPEXCL"] == "PP2; PP3"  # no IL-2 given: compliance 0 too
    assert adsl.loc["LOW", "PPEXCL"] == "PP3"
    assert adsl.loc["INELIGIBLE", "PPEXCL"] == "PP1"
    assert adsl.loc["UNKNOWN", "PPEXCL"] == "PP1 (unknown)"
    assert adsl.loc["NODOSE", "PPEXCL"] == "PP2 (unknown); PP3"
    safety = population_frame(adsl.reset_index(), "safety").set_index("USUBJID")
    assert "NODOSE" not in safety.index and safety.loc["SWAP", "ARM"] == "gcv"
    assert population_frame(adsl.reset_index(), "itt").set_index("USUBJID").loc["SWAP", "ARM"] == "il2_gcv"


def test_adsl_dates_status_and_baseline():
    s = subject("A", status="withdrawn", withdrawal_reason="adverse event", withdrawal_date=on(90),
                end_of_treatment_date=on(14), end_of_treatment_reason="cmv_negative", age_years=40, sex="F")
    observations = [cmv("A", -2, 6000, form="screening", visit="SCR"), cmv("A", 0, 7000, visit="BL"),
                    cmv("A", 14, None, below=True), cmv("A", 83, None, below=True, visit="W12")]
    adsl = derive_datasets(snapshot([s], observations, daily_doses("A", range(1, 14)))).adsl.iloc[0]
    assert adsl["TRTSDT"].date() == on(1) and adsl["TRTEDT"].date() == on(13)
    assert adsl["W12DT"].date() == on(83) and pd.isna(adsl["FU3MDT"])
    assert (adsl["EOSSTT"], adsl["DCSREAS"], adsl["STRATUM"]) == ("DISCONTINUED", "adverse event", "site=PKUPH")
    assert adsl["CMVBL"] == 7000 and adsl["CMVBLL10"] == pytest.approx(math.log10(7000))
    assert adsl["NPBCMV"] == 2 and adsl["TRTDURD"] == 14


# --- ADLB: windows, baseline, change ---------------------------------------------------------------


def marker(who: str, day: int, value: float, visit: str = "W12") -> Observation:
    return Observation(who, "lymphocyte_subsets", "nk_abs", on(day), value, "/uL", visit)


def test_baseline_is_the_last_value_on_or_before_day_zero_and_change_is_from_it():
    observations = [marker("A", -3, 50, "SCR"), marker("A", 0, 60, "BL"), marker("A", 84, 90)]
    adlb = derive_datasets(snapshot([subject("A")], observations)).adlb
    nk = adlb[adlb["PARAMCD"] == "NKCE"].set_index("ADY")
    assert nk.loc[0, "ABLFL"] == "Y" and nk.loc[-3, "ABLFL"] == "" and nk.loc[-3, "AVISIT"] == "Pre-baseline"
    assert nk.loc[84, ["BASE", "CHG", "AVISITCD", "ANL01FL"]].tolist() == [60, 30, "W12", "Y"]
    assert change_at_visit(adlb, "NKCE", "W12").loc["A"].tolist() == [60, 90, 30]


def test_the_value_nearest_the_target_day_is_analysed_the_later_on_a_tie():
    observations = [marker("A", 0, 60, "BL"), marker("A", 80, 70), marker("A", 88, 80), marker("A", 92, 99)]
    ended = subject("A", end_of_treatment_date=on(14))
    nk = derive_datasets(snapshot([ended], observations)).adlb.query("PARAMCD == 'NKCE'").set_index("ADY")
    assert nk.loc[80, "AVISITCD"] == nk.loc[88, "AVISITCD"] == "W12"
    assert nk.loc[88, "ANL01FL"] == "Y" and nk.loc[80, "ANL01FL"] == ""  # both 4 days off: the later wins
    assert nk.loc[92, "AVISIT"] == UNSCHEDULED  # after week 12's window; weekly visits ended on day 14
    still_treated = derive_datasets(snapshot([subject("A")], observations)).adlb.query("PARAMCD == 'NKCE'")
    assert still_treated.set_index("ADY").loc[92, "AVISITCD"] == "TW13"  # 91 ± 2 while treatment goes on


def test_weekly_visits_stop_at_the_end_of_treatment_and_follow_up_counts_from_it():
    observations = [cmv("A", 0, 8000, visit="BL"), cmv("A", 6, 900), cmv("A", 10, 500), cmv("A", 15, None, below=True),
                    cmv("A", 22, None, below=True), cmv("A", 15 + 95, None, below=True, visit="FU3M")]
    adlb = derive_datasets(snapshot([subject("A", end_of_treatment_date=on(15))], observations)).adlb
    visits = adlb[adlb["PARAMCD"] == CMV_PARAMCD].set_index("ADY")["AVISITCD"].to_dict()
    assert visits == {0: "BL", 6: "TW1", 10: "", 15: "TW2", 22: "", 110: "FU3M"} | {10: UNSCHEDULED, 22: UNSCHEDULED}


def test_cmv_dna_enters_as_log10_with_values_below_the_limit_at_half_the_limit():
    observations = [cmv("A", 0, 10_000, visit="BL"), cmv("A", 7, None, below=True)]
    rows = derive_datasets(snapshot([subject("A")], observations)).adlb.query("PARAMCD == @CMV_PARAMCD").set_index("ADY")
    assert rows.loc[0, "AVAL"] == pytest.approx(4.0)
    assert rows.loc[7, "AVAL"] == pytest.approx(math.log10(0.5 * LLOQ)) and rows.loc[7, "BLQFL"] == "Y"
    assert rows.loc[7, "CHG"] == pytest.approx(math.log10(0.5 * LLOQ) - 4.0)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=30),
       st.one_of(st.none(), st.integers(min_value=1, max_value=100)))
def test_every_assigned_value_lies_in_its_window_and_no_slot_is_nearer(days, eot):
    slots = visit_slots(PROTOCOL)
    day = np.array(days, dtype=float)
    eot_day = np.full(len(days), np.nan if eot is None else float(eot))
    assigned = assign_visits(day, eot_day, slots)
    windows = {slot.code: slot for slot in slots}
    for d, code, target, distance in zip(day, assigned.code, assigned.target, assigned.distance, strict=True):
        if code == UNSCHEDULED:
            assert np.isnan(target)
            continue
        slot = windows.get(code) or windows[code.rstrip("0123456789")]
        assert target - slot.before <= d <= target + slot.after
        assert distance == abs(d - target)
        if slot.anchor == "end_of_treatment":
            assert eot is not None and target == eot + slot.day


# --- bad snapshots are refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"subjects": [subject("A"), subject("A")]}, "subject A is listed twice"),
        ({"subjects": [subject("A", arm="placebo")]}, "arm_randomized 'placebo' is not an arm"),
        ({"subjects": [subject("A", status="lost")]}, "status 'lost' is not one of"),
        ({"subjects": [subject("A", randomization_date=on(300))]}, "after the data cut-off"),
        ({"observations": [cmv("B", 0, 100)]}, "names subject B, who is not in the snapshot"),
        ({"observations": [Observation("A", "cmv_load", "cmv_dna", "soon", 1.0)]}, "observation date must be a date"),
        ({"observations": [Observation("A", "cmv_load", "cmv_dna", on(1), "many")]}, "observation value must be a number"),
        ({"doses": [DoseRecord("A", "ganciclovir", on(1), status="given twice")]}, "dose status 'given twice'"),
        ({"adverse_events": [AdverseEventRecord("A", "Fever", on(1), grade=7)]}, "grade 7 is not 1-5"),
        ({"screening": [ScreeningOutcome("X", "PKUPH", "maybe")]}, "outcome 'maybe' is not one of"),
        ({"cutoff": "2025-06-01"}, "the data cut-off must be a date"),
    ],
)
def test_inconsistent_snapshots_are_refused_naming_the_problem(change, message):
    parts = {"subjects": [subject("A")], "observations": [], "doses": [], "cutoff": on(200)}
    extra = {key: change.pop(key) for key in ("adverse_events", "screening") if key in change}
    parts.update(change)
    with pytest.raises(InvalidInput, match=message):
        snapshot(parts["subjects"], parts["observations"], parts["doses"], cutoff=parts["cutoff"], **extra)


def test_a_protocol_without_an_analysis_section_is_refused():
    with pytest.raises(InvalidInput, match="has no 'analysis' section"):
        analysis_setup(PROTOCOL.model_copy(update={"analysis": None}))


def test_per_protocol_rules_may_only_read_subject_variables():
    from pydantic import ValidationError

    from cmvtrial.core.protocol_analysis import PopulationRule

    with pytest.raises(ValidationError, match="'weight_kg', which is not a subject-level variable"):
        PopulationRule(id="PPX", text="heavy", expression="weight_kg > 50")  # source: test value
