"""Dosing (core/dosing.py): the ganciclovir label table, the hematologic holds, rounding, weight
changes, the IL-2 days and the rules for recording an administration.

Reference values are the label's, as tabulated in reference/domain.md: §1.2 maintenance column
(>= 70: 5 mg/kg q24h; 50-69: 2.5; 25-49: 1.25; 10-24: 0.625 q24h; < 10: 0.625 3x/week after
dialysis) and §1.3 (do not give if ANC < 500/µL, platelets < 25,000/µL, Hb < 8 g/dL). Rounding to
the nearest 5 mg (halves up) and the 10 % weight tolerance are the shipped protocols' decisions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.administrations import check_administration, dosing_days, is_dosing_day
from cmvtrial.core.dosing import (
    find_regimen,
    interval_hours,
    item_for_loinc,
    judge_holds,
    round_dose,
    weight_based_dose,
    weight_change,
)
from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import DrugNotInArm, InvalidInput, NotFound, OutsideTreatmentPeriod, Refused, UnitError
from cmvtrial.protocols import load_shipped_protocol

SHIPPED = ["sle-cmv-il2", "nct04225780"]
PROTOCOLS = {pid: load_shipped_protocol(pid)[0] for pid in SHIPPED}
RANDOMIZED = date(2024, 2, 26)


@pytest.fixture(params=SHIPPED)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return PROTOCOLS[request.param]


def gcv(protocol: Protocol):
    return find_regimen(protocol, "ganciclovir")


def dose(protocol: Protocol, crcl: float, weight: float = 60.0, **labs):
    return weight_based_dose(protocol, gcv(protocol), weight_kg=weight, crcl_ml_min=crcl, labs=labs)


# ------------------------------------------------------------------------------------------------
# The label's maintenance table (domain.md §1.2), at and around every band edge


LABEL_TABLE = [
    # (CrCl mL/min, mg/kg per administration, interval h or None for 3x/week)
    (150, 5.0, 24), (70, 5.0, 24),
    (69.99, 2.5, 24), (60, 2.5, 24), (50, 2.5, 24),
    (49.99, 1.25, 24), (30, 1.25, 24), (25, 1.25, 24),
    (24.99, 0.625, 24), (15, 0.625, 24), (10, 0.625, 24),
    (9.99, 0.625, None), (5, 0.625, None), (0, 0.625, None),
]


@pytest.mark.parametrize(("crcl", "mg_per_kg", "interval"), LABEL_TABLE)
def test_every_row_of_the_label_table(protocol, crcl, mg_per_kg, interval):
    decision = dose(protocol, crcl, weight=80)
    assert decision.dose_per_kg == mg_per_kg
    assert decision.interval_h == interval
    assert decision.calculated == pytest.approx(mg_per_kg * 80)
    assert decision.unit == "mg" and decision.route == "intravenous"
    assert not decision.hold


def test_the_lowest_band_is_three_times_a_week_after_dialysis(protocol):
    decision = dose(protocol, 8)
    assert decision.frequency == "3 times a week"
    assert any("dialysis" in reason for reason in decision.reasons)


@pytest.mark.parametrize(("crcl", "expected_mg"), [(70, 300), (69, 150), (49, 75), (24, 40), (9, 40)])
def test_dose_in_mg_is_rounded_to_the_nearest_5_mg_halves_up(protocol, crcl, expected_mg):
    # 60 kg: 300, 150, 75, 37.5 (-> 40, a half rounds up) mg
    assert dose(protocol, crcl, weight=60).dose == expected_mg


@pytest.mark.parametrize(("weight", "expected_mg"), [(63.3, 315), (63.5, 320), (70, 350), (71.4, 355)])
def test_rounding_follows_the_weight(protocol, weight, expected_mg):
    # 5 mg/kg: 316.5 -> 315; 317.5 -> 320 (half up); 350; 357 -> 355
    assert dose(protocol, 90, weight=weight).dose == expected_mg


def test_without_a_rounding_rule_the_dose_is_as_calculated(protocol):
    regimen = gcv(protocol).model_copy(update={"dose_rounding": None})
    assert round_dose(regimen, 316.5) == 316.5
    decision = weight_based_dose(protocol, regimen, weight_kg=63.3, crcl_ml_min=90)
    assert decision.dose == decision.calculated == 316.5


def test_the_reasons_name_the_band_the_arithmetic_and_the_rounding(protocol):
    decision = dose(protocol, 45, weight=63.3)
    text = " | ".join(decision.reasons)
    assert "CrCl 45 mL/min" in text and "25 to below 50 mL/min" in text
    assert "1.25 mg/kg × 63.3 kg = 79.125 mg" in text
    assert "rounded to the nearest 5 mg: 80 mg" in text
    assert decision.summary() == {"dose_mg": 80.0, "dose_mg_per_kg": 1.25, "interval_h": 24.0, "hold": False,
                                  "reasons": list(decision.reasons)}
    assert decision.basis == {"weight_kg": 63.3, "crcl_ml_min": 45.0, "labs": {}}


# ------------------------------------------------------------------------------------------------
# Hematologic holds (domain.md §1.3), at, just below and just above each threshold


@pytest.mark.parametrize(
    ("labs", "held"),
    [
        ({"anc": (500, "/uL")}, False), ({"anc": (499, "/uL")}, True), ({"anc": (501, "/uL")}, False),
        ({"anc": 0.5}, False), ({"anc": 0.499}, True), ({"anc": (0.5, "10^9/L")}, False),
        ({"platelets": (25000, "/uL")}, False), ({"platelets": (24999, "/uL")}, True),
        ({"platelets": (25001, "/uL")}, False), ({"platelets": 25}, False), ({"platelets": 24.9}, True),
        ({"hemoglobin": (8, "g/dL")}, False), ({"hemoglobin": (7.99, "g/dL")}, True),
        ({"hemoglobin": (8.01, "g/dL")}, False), ({"hemoglobin": 80}, False), ({"hemoglobin": (79.9, "g/L")}, True),
    ],
)
def test_each_hold_threshold(protocol, labs, held):
    decision = dose(protocol, 90, **labs)
    assert decision.hold is held
    assert decision.dose == 300  # the dose is still computed: hold says whether to give it


def test_a_hold_names_its_reason_and_the_value_read(protocol):
    decision = dose(protocol, 90, anc=(400, "cells/uL"), platelets=(150, "10^9/L"), hemoglobin=(12, "g/dL"))
    assert decision.hold
    held = [verdict for verdict in decision.holds if verdict.applies]
    assert [verdict.id for verdict in held] == ["HOLD_ANC"]
    assert held[0].used == {"anc": 0.4} and held[0].units == {"anc": "10*9/L"}
    assert any(reason.startswith("withhold (HOLD_ANC)") and "anc = 0.4 10*9/L" in reason for reason in decision.reasons)


def test_counts_not_given_are_listed_as_not_checked(protocol):
    decision = dose(protocol, 90, anc=(2000, "/uL"))
    assert not decision.hold
    unchecked = [verdict.id for verdict in decision.holds if verdict.applies is None]
    assert unchecked == ["HOLD_PLT", "HOLD_HGB"]
    assert "hold HOLD_PLT not checked: platelets not given" in decision.reasons


def test_hold_items_are_found_by_loinc(protocol):
    assert item_for_loinc(protocol, "hematology", "751-8") == "anc"
    assert item_for_loinc(protocol, "hematology", "777-3") == "platelets"
    assert item_for_loinc(protocol, "hematology", "718-7") == "hemoglobin"
    assert item_for_loinc(protocol, "hematology", "2160-0") is None


def test_bad_counts_are_refused(protocol):
    with pytest.raises(InvalidInput, match="anc cannot be negative"):
        judge_holds(protocol, gcv(protocol), {"anc": -1})
    with pytest.raises(UnitError, match="anc cannot be given in g/L"):
        judge_holds(protocol, gcv(protocol), {"anc": (1, "g/L")})
    with pytest.raises(InvalidInput, match="must be a number"):
        judge_holds(protocol, gcv(protocol), {"anc": "low"})  # type: ignore[dict-item]


# ------------------------------------------------------------------------------------------------
# Laws


@given(
    protocol_id=st.sampled_from(SHIPPED),
    weight=st.floats(min_value=30, max_value=200, allow_nan=False),
    crcl_high=st.floats(min_value=0, max_value=200, allow_nan=False),
    fall=st.floats(min_value=0, max_value=200, allow_nan=False),
)
def test_dose_never_rises_as_crcl_falls(protocol_id, weight, crcl_high, fall):
    protocol = PROTOCOLS[protocol_id]
    crcl_low = max(0.0, crcl_high - fall)
    high, low = dose(protocol, crcl_high, weight), dose(protocol, crcl_low, weight)
    assert low.dose <= high.dose
    assert low.dose_per_kg <= high.dose_per_kg
    # and no more often: the amount per week never rises either
    def per_week(decision):
        return decision.dose * (7 * 24 / decision.interval_h if decision.interval_h else 3)
    assert per_week(low) <= per_week(high)


@given(
    protocol_id=st.sampled_from(SHIPPED),
    crcl=st.floats(min_value=0, max_value=200, allow_nan=False),
    light=st.floats(min_value=30, max_value=200, allow_nan=False),
    gain=st.floats(min_value=0, max_value=50, allow_nan=False),
)
def test_dose_never_falls_as_weight_rises_and_stays_within_half_a_step(protocol_id, crcl, light, gain):
    protocol = PROTOCOLS[protocol_id]
    lighter, heavier = dose(protocol, crcl, light), dose(protocol, crcl, light + gain)
    assert lighter.dose <= heavier.dose
    assert abs(heavier.dose - heavier.calculated) <= 2.5 + 1e-9
    assert heavier.dose % 5 == 0


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weight_kg": -70, "crcl_ml_min": 80}, "weight_kg must be greater than 0"),
        ({"weight_kg": 0, "crcl_ml_min": 80}, "weight_kg must be greater than 0"),
        ({"weight_kg": None, "crcl_ml_min": 80}, "the weight is required"),
        ({"weight_kg": float("nan"), "crcl_ml_min": 80}, "finite"),
        ({"weight_kg": 70, "crcl_ml_min": None}, "CrCl \\(mL/min\\) is required"),
        ({"weight_kg": 70, "crcl_ml_min": -1}, "0 or more"),
        ({"weight_kg": 70, "crcl_ml_min": float("inf")}, "0 or more"),
        ({"weight_kg": "70", "crcl_ml_min": 80}, "must be a number"),
    ],
)
def test_impossible_inputs_are_refused(protocol, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        weight_based_dose(protocol, gcv(protocol), **kwargs)


def test_a_drug_no_arm_gives_is_not_found(protocol):
    with pytest.raises(NotFound, match="gives no foscarnet"):
        find_regimen(protocol, "foscarnet")


def test_a_gap_in_the_renal_table_is_refused(protocol):
    regimen = gcv(protocol)
    gappy = regimen.model_copy(update={"renal_adjustment": regimen.renal_adjustment[:2]})  # nothing below 50
    with pytest.raises(InvalidInput, match="no renal band"):
        weight_based_dose(protocol, gappy, weight_kg=70, crcl_ml_min=40)


# ------------------------------------------------------------------------------------------------
# Weight changes (protocol: recalculate when the weight changes by more than 10 %)


@pytest.mark.parametrize(
    ("dosed", "current", "recalculate"),
    [(60, 66, False), (60, 66.01, True), (60, 54, False), (60, 53.99, True), (60, 60, False)],
)
def test_weight_change_beyond_the_tolerance_recalculates(protocol, dosed, current, recalculate):
    check = weight_change(gcv(protocol), dosed, current)
    assert check.recalculate is recalculate
    assert check.limit_percent == 10
    assert ("recalculate" in check.reason) is recalculate


def test_a_flat_dose_has_no_weight_tolerance(protocol):
    il2 = find_regimen(protocol, "interleukin-2")
    assert weight_change(il2, 60, 90).recalculate is False
    with pytest.raises(InvalidInput):
        weight_change(gcv(protocol), 0, 60)


# ------------------------------------------------------------------------------------------------
# IL-2 days: every other day (sle-cmv-il2) or daily (nct04225780) from day 0 until CMV negativity


def test_il2_every_other_day_in_the_sle_protocol():
    il2 = find_regimen(PROTOCOLS["sle-cmv-il2"], "interleukin-2", "il2_gcv")
    days = dosing_days(il2, RANDOMIZED, through=date(2024, 3, 6))
    # across the leap day: 26, 28 Feb, 1, 3, 5 Mar
    assert days == (date(2024, 2, 26), date(2024, 2, 28), date(2024, 3, 1), date(2024, 3, 3), date(2024, 3, 5))
    assert il2.dose.value == 1 and il2.dose.unit == "[MIU]" and il2.route == "subcutaneous"
    assert interval_hours(il2.frequency) == 48


def test_il2_daily_in_the_nct_protocol_until_end_of_treatment():
    il2 = find_regimen(PROTOCOLS["nct04225780"], "interleukin-2", "il2_gcv")
    days = dosing_days(il2, RANDOMIZED, through=date(2024, 4, 1), end_of_treatment=date(2024, 3, 2))
    assert days == tuple(RANDOMIZED + timedelta(days=n) for n in range(6))  # 26 Feb .. 2 Mar, EOT included
    assert is_dosing_day(il2, RANDOMIZED, RANDOMIZED - timedelta(days=1)) is False


def test_the_control_arm_gets_no_il2(protocol):
    with pytest.raises(DrugNotInArm, match="arm 'gcv'.*does not receive interleukin-2"):
        find_regimen(protocol, "interleukin-2", "gcv")


# ------------------------------------------------------------------------------------------------
# Recording an administration


def record(protocol, **overrides):
    fields = {
        "arm_id": "il2_gcv", "drug": "ganciclovir", "status": "given", "on_date": date(2024, 3, 1),
        "randomized_on": RANDOMIZED, "dose": 300, "unit": "mg", "route": "intravenous", "given_by": "nurse A",
    }
    fields.update(overrides)
    return check_administration(protocol, **fields)


def test_a_regular_dose_is_accepted(protocol):
    checked = record(protocol, administered_at=datetime(2024, 3, 1, 9, 30, tzinfo=UTC))
    assert (checked.drug, checked.status, checked.study_day, checked.dose_in_regimen_unit) == ("ganciclovir", "given", 4, 300)
    assert checked.findings == ()
    assert checked.storage()["dose_unit"] == "mg"


def test_il2_in_the_control_arm_is_refused(protocol):
    with pytest.raises(DrugNotInArm) as caught:
        record(protocol, arm_id="gcv", drug="interleukin-2", dose=1, unit="MIU", route="subcutaneous")
    assert isinstance(caught.value, Refused) and caught.value.exit_code == 1
    assert "does not receive interleukin-2" in caught.value.message


def test_a_dose_after_end_of_treatment_is_refused_but_not_on_that_day(protocol):
    eot = date(2024, 3, 11)
    assert record(protocol, on_date=eot, end_of_treatment=eot).status == "given"
    with pytest.raises(OutsideTreatmentPeriod, match="treatment ended on 2024-03-11"):
        record(protocol, on_date=eot + timedelta(days=1), end_of_treatment=eot)
    with pytest.raises(OutsideTreatmentPeriod):
        record(protocol, status="held", reason="ANC 0.3", dose=None, on_date=eot + timedelta(days=1), end_of_treatment=eot)


def test_a_dose_before_randomization_is_refused(protocol):
    with pytest.raises(OutsideTreatmentPeriod, match="starts on 2024-02-26"):
        record(protocol, on_date=RANDOMIZED - timedelta(days=1))


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"status": "skipped"}, InvalidInput, "given, held or missed"),
        ({"route": "subcutaneous"}, InvalidInput, "given intravenous in this protocol"),
        ({"route": None}, InvalidInput, "given intravenous"),
        ({"dose": None}, InvalidInput, "needs its amount"),
        ({"dose": -300}, InvalidInput, "greater than 0"),
        ({"unit": "furlong"}, UnitError, "unknown dose unit"),
        ({"unit": "MIU"}, UnitError, "dosed in mg"),
        ({"unit": None}, UnitError, "unit is required"),
        ({"given_by": " "}, InvalidInput, "who gave the dose"),
        ({"status": "held", "dose": None}, InvalidInput, "needs a reason"),
        ({"status": "missed", "dose": 300, "reason": "vomiting"}, InvalidInput, "records no amount"),
        ({"administered_at": datetime(2024, 3, 1, 9, 30)}, InvalidInput, "time zone"),
    ],
)
def test_bad_administration_records_are_refused(protocol, overrides, error, message):
    with pytest.raises(error, match=message):
        record(protocol, **overrides)


def test_a_dose_in_another_mass_unit_is_converted(protocol):
    assert record(protocol, dose=0.3, unit="g").dose_in_regimen_unit == 300


def test_a_changed_dose_needs_a_reason(protocol):
    planned = dose(protocol, 90, weight=60)
    assert record(protocol, planned=planned).findings == ()
    with pytest.raises(InvalidInput, match="differs from the calculated 300 mg"):
        record(protocol, dose=250, planned=planned)
    checked = record(protocol, dose=250, planned=planned, reason="vial shortage")
    assert checked.reason == "vial shortage" and checked.planned_dose == 300
    assert checked.findings == ("dose 250 mg differs from the calculated 300",)


def test_giving_a_dose_on_hold_needs_a_reason(protocol):
    planned = dose(protocol, 90, weight=60, anc=(300, "/uL"))
    with pytest.raises(InvalidInput, match="on hold \\(HOLD_ANC\\)"):
        record(protocol, planned=planned)
    checked = record(protocol, planned=planned, reason="investigator decision after G-CSF")
    assert checked.findings == ("given although a hold applies: HOLD_ANC",)


def test_a_hold_is_recorded_with_its_reason(protocol):
    checked = record(protocol, status="held", dose=None, unit=None, route=None, reason="ANC 300/uL (HOLD_ANC)")
    assert (checked.status, checked.dose, checked.reason) == ("held", None, "ANC 300/uL (HOLD_ANC)")


def test_il2_off_day_is_flagged_in_the_every_other_day_protocol_only():
    fields = {"drug": "interleukin-2", "dose": 1_000_000, "unit": "IU", "route": "subcutaneous",
              "on_date": date(2024, 2, 27)}
    sle = record(PROTOCOLS["sle-cmv-il2"], **fields)
    assert sle.dose_in_regimen_unit == 1  # 1,000,000 IU = 1 MIU
    assert sle.findings == ("2024-02-27 is not a scheduled day for interleukin-2 (every 2 days from day 0)",)
    assert record(PROTOCOLS["nct04225780"], **fields).findings == ()


# ------------------------------------------------------------------------------------------------
# The protocol's dosing settings


def test_the_shipped_protocols_set_rounding_tolerance_and_sae_window(protocol):
    regimen = gcv(protocol)
    assert (regimen.dose_rounding.nearest, regimen.dose_rounding.unit) == (5, "mg")
    assert regimen.weight_recalculation.change_above_percent == 10
    assert regimen.administered_unit == "mg"
    assert protocol.safety.sae_report_within_hours == 24


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("dose_rounding",), {"nearest": 5, "unit": "mL"}, "does not measure a dose in mg"),
        (("dose_rounding", "nearest"), 0, "greater than 0"),
        (("weight_recalculation", "change_above_percent"), 0, "greater than 0"),
    ],
)
def test_bad_dosing_settings_are_protocol_errors(protocol, path, value, message):
    data = protocol.model_dump(mode="json")
    target = data["arms"][0]["regimens"][1]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        Protocol.model_validate(data)


def test_a_weight_tolerance_on_a_flat_dose_is_a_protocol_error(protocol):
    data = protocol.model_dump(mode="json")
    data["arms"][0]["regimens"][0]["weight_recalculation"] = {"change_above_percent": 10}
    with pytest.raises(ValueError, match="body-weight-based doses only"):
        Protocol.model_validate(data)
