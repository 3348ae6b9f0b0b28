"""Form entry (core/form_entry.py): types, codelists, units accepted and normalized, hard limits
refused with the item and limit named, soft limits and edit checks as findings, required items.

Conversion references: g/dL × 10 = g/L, /µL = 10⁶/L (domain.md §8.3); creatinine µmol/L ÷ 88.4 =
mg/dL (§1.4); bilirubin µmol/L = mg/dL × 17.1 (§8.3); CMV copies/mL = IU/mL × 1.1 for the assay (§3.1).
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.form_entry import clean_number, parse_amount, to_primary_unit, validate_form
from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import InvalidInput, NotFound, OutOfRange, UnitError
from cmvtrial.protocols import load_shipped_protocol

SHIPPED = ["sle-cmv-il2", "nct04225780"]
PROTOCOLS = {pid: load_shipped_protocol(pid)[0] for pid in SHIPPED}

CBC = {"wbc": 6.2, "anc": 3.1, "lymphocytes": 1.4, "platelets": 210, "hemoglobin": 128}


@pytest.fixture(params=SHIPPED)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    return PROTOCOLS[request.param]


# ------------------------------------------------------------------------------------------------
# Units


@pytest.mark.parametrize(
    ("form", "item", "entered", "normalized"),
    [
        ("hematology", "anc", {"value": 3100, "unit": "cells/uL"}, 3.1),
        ("hematology", "platelets", {"value": 25000, "unit": "/µL"}, 25),
        ("hematology", "hemoglobin", {"value": 12.8, "unit": "g/dL"}, 128),
        ("hematology", "hemoglobin", "12.8 g/dL", 128),
        ("hematology", "hemoglobin", 128, 128),
        ("chemistry", "serum_creatinine", {"value": 88.4, "unit": "umol/L"}, 1.0),   # alternative unit (÷ 88.4)
        ("chemistry", "serum_creatinine", {"value": 0.0884, "unit": "mmol/L"}, 1.0), # pint, then the alternative
        ("chemistry", "serum_creatinine", {"value": 10, "unit": "mg/L"}, 1.0),       # same dimension: pint
        ("chemistry", "total_bilirubin", {"value": 1, "unit": "mg/dL"}, 17.1),       # alternative unit (× 17.1)
        ("cmv_load", "cmv_dna", {"value": 1000, "unit": "IU/mL"}, 1100),             # the assay factor
        ("cmv_load", "cmv_dna", {"value": 2000, "unit": "copies/mL"}, 2000),
        ("vitals", "temperature", {"value": 98.6, "unit": "°F"}, 37),
    ],
)
def test_values_are_normalized_to_the_primary_unit_and_kept_as_entered(protocol, form, item, entered, normalized):
    entry = validate_form(protocol, form, {item: entered})
    value = entry.values[item]
    assert value.value == pytest.approx(normalized)
    assert value.unit == protocol.item(form, item).unit
    if isinstance(entered, dict):
        assert value.entered == entered["value"]
        storage = value.storage()
        assert storage["entered_value"] == str(entered["value"])
        assert storage["normalized_number"] == value.value and storage["normalized_unit"] == value.unit


def test_a_unit_the_item_does_not_accept_is_a_unit_error_naming_it(protocol):
    with pytest.raises(UnitError, match="hemoglobin cannot be given in mg; it accepts g/L") as caught:
        validate_form(protocol, "hematology", {"hemoglobin": {"value": 12, "unit": "mg"}})  # mass, not concentration
    assert caught.value.details["field"] == "hemoglobin"
    with pytest.raises(UnitError, match="unknown unit 'furlongs'"):
        validate_form(protocol, "hematology", {"anc": "3 furlongs"})
    with pytest.raises(UnitError, match="cmv_dna cannot be given in g/L"):
        validate_form(protocol, "cmv_load", {"cmv_dna": {"value": 1, "unit": "g/L"}})


def test_to_primary_unit_reports_the_canonical_entered_unit(protocol):
    item = protocol.item("hematology", "anc")
    assert to_primary_unit(item, 500, "cells/uL") == (0.5, "/uL")
    assert to_primary_unit(item, 0.5, None) == (0.5, "10*9/L")


@given(st.floats(min_value=0.01, max_value=1000, allow_nan=False))
def test_units_round_trip(grams_per_dl):
    hb = PROTOCOLS["sle-cmv-il2"].item("hematology", "hemoglobin")
    in_g_per_l, _ = to_primary_unit(hb, grams_per_dl, "g/dL")
    assert in_g_per_l == pytest.approx(grams_per_dl * 10, rel=1e-11)
    back, _ = to_primary_unit(hb, in_g_per_l, "g/L")
    assert back == clean_number(in_g_per_l)


def test_parse_amount():
    assert parse_amount("70", "w") == (70.0, None)
    assert parse_amount(" 0.5 10^9/L ", "anc") == (0.5, "10^9/L")
    assert parse_amount("-5kg", "w") == (-5.0, "kg")
    with pytest.raises(InvalidInput, match="must be a number"):
        parse_amount("seventy", "w")


# ------------------------------------------------------------------------------------------------
# Limits


def test_hard_limits_refuse_the_value_and_name_the_limit(protocol):
    with pytest.raises(OutOfRange, match="nk_pct 101 % is above the hard limit 100 %") as caught:
        validate_form(protocol, "lymphocyte_subsets", {"nk_pct": 101})
    assert caught.value.details["limit"] == 100 and caught.value.exit_code == 2
    with pytest.raises(OutOfRange, match="wbc -0.1 10\\*9/L is below the hard limit 0"):
        validate_form(protocol, "hematology", {"wbc": -0.1})
    with pytest.raises(OutOfRange, match=r"weight_kg 600000 g \(= 600 kg\) is above the hard limit 500 kg"):
        validate_form(protocol, "vitals", {"weight_kg": {"value": 600000, "unit": "g"}})
    assert validate_form(protocol, "lymphocyte_subsets", {"nk_pct": 100}).values["nk_pct"].value == 100


def test_hard_limits_apply_to_the_normalized_value(protocol):
    # 30 mg/dL is the creatinine's hard maximum: 2652 umol/L is exactly 30 mg/dL, 2653 is above
    assert validate_form(protocol, "chemistry", {"serum_creatinine": "2652 umol/L"}).values["serum_creatinine"].value == 30
    with pytest.raises(OutOfRange, match="2653 umol/L \\(= 30.0113 mg/dL\\) is above the hard limit 30"):
        validate_form(protocol, "chemistry", {"serum_creatinine": "2653 umol/L"})


def test_soft_limits_accept_the_value_and_raise_a_finding(protocol):
    entry = validate_form(protocol, "hematology", {**CBC, "platelets": 8})
    assert entry.values["platelets"].value == 8
    (finding,) = entry.findings
    assert (finding.kind, finding.items, finding.check_id) == ("soft_limit", ("platelets",), None)
    assert "below the expected limit 10" in finding.message


# ------------------------------------------------------------------------------------------------
# Edit checks


def test_a_soft_edit_check_is_a_finding(protocol):
    entry = validate_form(protocol, "hematology", {**CBC, "anc": 7.0})  # more neutrophils than white cells
    (finding,) = entry.findings
    assert (finding.kind, finding.check_id, finding.items) == ("edit_check", "EC03", ("anc", "wbc"))
    assert finding.values == {"anc": 7.0, "wbc": 6.2}
    assert finding.to_dict()["message"] == "The neutrophil count exceeds the white cell count"


def test_an_edit_check_with_a_missing_input_does_not_fire(protocol):
    assert validate_form(protocol, "hematology", {"anc": 7.0}).findings == ()


def test_a_hard_edit_check_refuses_the_form(protocol):
    with pytest.raises(InvalidInput, match="edit check EC01: The screening date must be after the date of birth"):
        validate_form(protocol, "screening", {"screening_date": "2020-01-01", "birth_date": "2021-01-01"})
    with pytest.raises(InvalidInput, match="EC06"):
        validate_form(protocol, "concomitant_corticosteroid",
                      {"drug": "prednisone", "daily_dose_mg": 10, "start_date": "2024-03-01", "stop_date": "2024-02-01"})


def test_edit_checks_with_codes_and_booleans(protocol):
    entry = validate_form(protocol, "screening", {"sex": "M", "pregnant_or_breastfeeding": True})
    assert [finding.check_id for finding in entry.findings] == ["EC02"]
    assert validate_form(protocol, "screening", {"sex": "F", "pregnant_or_breastfeeding": "yes"}).findings == ()


# ------------------------------------------------------------------------------------------------
# Types, codes, required items


@pytest.mark.parametrize(
    ("form", "submission", "message"),
    [
        ("hematology", {"wbcc": 5}, "wbcc is not an item of this form \\(did you mean 'wbc'\\?\\)"),
        ("hematology", {"wbc": "many"}, "wbc must be a number"),
        ("hematology", {"wbc": True}, "wbc must be a number"),
        ("hematology", {"wbc": {"value": 5, "units": "10^9/L"}}, "wbc must be a number or"),
        ("hematology", {"wbc": float("nan")}, "finite"),
        ("screening", {"nyha_class": 2.5}, "nyha_class must be a whole number"),
        ("screening", {"sex": "X"}, "sex: 'X' is not one of the codes F, M"),
        ("screening", {"diagnosis": "sle"}, "did you mean 'SLE'"),
        ("screening", {"other_infections": ["hiv", "hiv"]}, "more than once"),
        ("screening", {"other_infections": "hiv"}, "must be a list of codes"),
        ("screening", {"birth_date": "1990-02-30"}, "not a calendar date"),
        ("screening", {"birth_date": "30/01/1990"}, "must be a date YYYY-MM-DD"),
        ("screening", {"malignancy": "perhaps"}, "must be true or false"),
        ("screening", {"corticosteroid": "prednisone"}, "must be an object of its items"),
        ("screening", {"corticosteroid": {"drug": "cortisone"}}, "corticosteroid.drug: 'cortisone'"),
    ],
)
def test_bad_values_are_refused_naming_the_item(protocol, form, submission, message):
    with pytest.raises(InvalidInput, match=message):
        validate_form(protocol, form, submission)


def test_every_problem_is_listed(protocol):
    with pytest.raises(InvalidInput) as caught:
        validate_form(protocol, "hematology", {"wbc": -1, "anc": "x", "plt": 3})
    locations = [problem["location"] for problem in caught.value.details["problems"]]
    assert sorted(locations) == ["anc", "plt", "wbc"]
    assert "(and 2 more)" in caught.value.message


def test_unknown_forms_and_non_objects(protocol):
    with pytest.raises(NotFound):
        validate_form(protocol, "nope", {})
    with pytest.raises(InvalidInput, match="must be an object"):
        validate_form(protocol, "hematology", [1, 2])  # type: ignore[arg-type]


def test_types_are_normalized(protocol):
    entry = validate_form(protocol, "screening", {
        "screening_date": "2024-03-01", "nyha_class": "2", "other_infections": [], "il2_allergy": False,
        "corticosteroid": {"drug": "prednisone", "daily_dose_mg": "20 mg"},
    })
    values = entry.expression_values()
    assert values["screening_date"] == date(2024, 3, 1)
    assert values["nyha_class"] == 2 and values["other_infections"] == ()
    assert values["il2_allergy"] is False
    assert values["corticosteroid.daily_dose_mg"] == 20 and values["corticosteroid.drug"] == "prednisone"
    assert entry.values["other_infections"].storage()["normalized_text"] == "[]"
    assert entry.values["screening_date"].storage()["normalized_text"] == "2024-03-01"


def test_required_items_must_be_present_before_the_form_is_complete(protocol):
    partial = validate_form(protocol, "hematology", {"wbc": 5})
    assert not partial.complete
    assert partial.missing_required == ("anc", "lymphocytes", "platelets", "hemoglobin")
    with pytest.raises(InvalidInput, match="cannot be complete: required item\\(s\\) missing: anc, lymphocytes"):
        partial.require_complete()
    full = validate_form(protocol, "hematology", CBC)
    assert full.complete and full.findings == ()
    full.require_complete()


def test_not_done_with_a_reason_answers_a_required_item(protocol):
    entry = validate_form(protocol, "hematology", {**CBC, "lymphocytes": {"missing_reason": "sample clotted"}})
    assert entry.complete
    value = entry.values["lymphocytes"]
    assert (value.value, value.missing_reason) == (None, "sample clotted")
    assert value.storage()["missing_reason"] == "sample clotted" and value.as_submission() == {"missing_reason": "sample clotted"}
    assert "lymphocytes" not in entry.expression_values()


def test_empty_and_null_values_are_not_entered(protocol):
    entry = validate_form(protocol, "hematology", {"wbc": None, "anc": "  "})
    assert entry.values == {} and "wbc" in entry.missing_required


def test_a_value_can_be_submitted_again_as_stored(protocol):
    first = validate_form(protocol, "chemistry", {"serum_creatinine": {"value": 97, "unit": "µmol/L"}, "alt": 31})
    again = validate_form(protocol, "chemistry", {path: value.as_submission() for path, value in first.values.items()})
    assert again.expression_values() == first.expression_values()
    assert first.to_dict()["values"]["serum_creatinine"] == pytest.approx(97 / 88.4)
