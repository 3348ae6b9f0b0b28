"""The public screening record (core/screening_record.py): keys, units, enumerations, impossible values."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from cmvtrial.core.screening_record import (
    Quantity,
    ScreeningRecord,
    parse_screening_record,
    screening_record_from_data,
)
from cmvtrial.errors import InvalidInput, UnitError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
ELIGIBLE = json.loads((FIXTURES / "eligible.json").read_text(encoding="utf-8"))

ISSUE_KEYS = {
    "screening_date", "birth_date", "sex", "weight_kg", "diagnosis", "cmv_dna", "serum_creatinine", "alt",
    "ast", "alt_uln", "ast_uln", "total_bilirubin", "total_bilirubin_uln", "corticosteroid", "nyha_class",
    "other_infections", "il2_allergy", "malignancy", "uncontrolled_psychiatric", "pregnant_or_breastfeeding",
    "severe_comorbidities",
}


def refused(data, error=InvalidInput):
    with pytest.raises(error) as caught:
        screening_record_from_data(data)
    return caught.value


def test_the_model_has_exactly_the_issue_keys():
    assert set(ScreeningRecord.model_fields) == ISSUE_KEYS
    assert set(ELIGIBLE) == ISSUE_KEYS


def test_a_full_record_parses_with_canonical_units():
    record = parse_screening_record((FIXTURES / "eligible.json").read_text(encoding="utf-8"))
    assert record.screening_date == date(2024, 5, 20)
    assert record.cmv_dna == Quantity(value=4200, unit="copies/mL")
    assert record.serum_creatinine.unit == "umol/L"
    assert record.corticosteroid.drug == "methylprednisolone"
    assert set(record.provided()) == ISSUE_KEYS


def test_absent_keys_are_not_provided_and_null_steroid_is_kept():
    record = screening_record_from_data({"sex": "M", "corticosteroid": None, "nyha_class": None})
    assert record.provided() == {"sex": "M", "corticosteroid": None, "nyha_class": None}
    assert "il2_allergy" not in record.provided()


def test_unit_spellings_are_accepted_and_canonicalised():
    record = screening_record_from_data({
        "cmv_dna": {"value": 900, "unit": "IU/ml"},
        "serum_creatinine": {"value": 80, "unit": "µmol/L"},
        "alt": {"value": 30, "unit": "IU/L"},
        "weight_kg": {"value": 70500, "unit": "g"},
    })
    assert record.cmv_dna.unit == "[IU]/mL"
    assert record.serum_creatinine.unit == "umol/L"
    assert record.alt.unit == "U/L"
    assert record.weight_kg == 70.5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weight_kg": -58.5}, "weight_kg"),
        ({"weight_kg": 0}, "weight_kg"),
        ({"weight_kg": "58"}, "weight_kg"),
        ({"weight_kg": True}, "weight_kg"),
        ({"screening_date": "1985-01-01"}, "screening_date"),
        ({"screening_date": "2024-02-30"}, "screening_date"),
        ({"birth_date": "12/09/1985"}, "birth_date"),
        ({"birth_date": 19850912}, "birth_date"),
        ({"sex": "female"}, "sex"),
        ({"diagnosis": "lupus"}, "diagnosis"),
        ({"cmv_dna": 4200}, "cmv_dna"),
        ({"cmv_dna": {"value": 4200}}, "cmv_dna.unit"),
        ({"cmv_dna": {"value": -1, "unit": "copies/mL"}}, "cmv_dna"),
        ({"serum_creatinine": {"value": 0, "unit": "umol/L"}}, "serum_creatinine"),
        ({"alt": {"value": -3, "unit": "U/L"}}, "alt"),
        ({"alt_uln": 0}, "alt_uln"),
        ({"alt_uln": "40"}, "alt_uln"),
        ({"total_bilirubin_uln": -21}, "total_bilirubin_uln"),
        ({"corticosteroid": {"drug": "aspirin", "daily_dose_mg": 10}}, "corticosteroid.drug"),
        ({"corticosteroid": {"drug": "prednisone", "daily_dose_mg": -5}}, "corticosteroid.daily_dose_mg"),
        ({"corticosteroid": {"drug": "prednisone", "dose": 5}}, "corticosteroid.dose"),
        ({"nyha_class": 0}, "nyha_class"),
        ({"nyha_class": 5}, "nyha_class"),
        ({"nyha_class": "III"}, "nyha_class"),
        ({"nyha_class": 2.5}, "nyha_class"),
        ({"other_infections": ["tuberculosis"]}, "other_infections.0"),
        ({"other_infections": ["hiv", "hiv"]}, "other_infections"),
        ({"other_infections": "hiv"}, "other_infections"),
        ({"severe_comorbidities": ["cardiac"]}, "severe_comorbidities.0"),
        ({"il2_allergy": "no"}, "il2_allergy"),
        ({"malignancy": 0}, "malignancy"),
        ({"nyha": 3}, "nyha"),
    ],
)
def test_impossible_or_malformed_values_are_refused_naming_the_field(change, field):
    error = refused({**ELIGIBLE, **change})
    assert error.details["field"] == field
    assert field in error.message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cmv_dna": {"value": 4200, "unit": "copies per litre"}}, "cmv_dna.unit"),
        ({"cmv_dna": {"value": 4200, "unit": "mg/dL"}}, "cmv_dna.unit"),
        ({"serum_creatinine": {"value": 68, "unit": "U/L"}}, "serum_creatinine.unit"),
        ({"alt": {"value": 42, "unit": "mg/dL"}}, "alt.unit"),
        ({"alt_uln": {"value": 40, "unit": "mg/dL"}}, "alt_uln.unit"),
        ({"alt_uln": {"value": 40, "unit": "furlongs"}}, "alt_uln.unit"),
        ({"total_bilirubin_uln": {"value": 1.2, "unit": "mg/dL"}}, "total_bilirubin_uln.unit"),
        ({"weight_kg": {"value": 58, "unit": "mL"}}, "weight_kg"),
    ],
)
def test_unknown_or_wrong_units_are_unit_errors(change, field):
    error = refused({**ELIGIBLE, **change}, UnitError)
    assert error.details["field"] == field


def test_bilirubin_uln_in_a_compatible_unit_is_accepted():
    record = screening_record_from_data(
        {**ELIGIBLE, "total_bilirubin": {"value": 0.8, "unit": "mg/dL"},
         "total_bilirubin_uln": {"value": 12, "unit": "mg/L"}}
    )
    assert record.total_bilirubin_uln == Quantity(value=12, unit="mg/L")


def test_several_problems_are_all_listed():
    error = refused({**ELIGIBLE, "sex": "x", "nyha_class": 9})
    assert {p["location"] for p in error.details["problems"]} == {"sex", "nyha_class"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"sex": "F",\n "weight_kg": 58\n "diagnosis": "SLE"}', "line 3 column 2"),
        ("[1, 2]", "JSON object"),
        ('{"weight_kg": NaN}', "NaN"),
        ('{"sex": "F", "sex": "M"}', "twice"),
        ("", "line 1 column 1"),
    ],
)
def test_malformed_json_is_refused_with_where(text, fragment):
    with pytest.raises(InvalidInput) as caught:
        parse_screening_record(text, source="r.json")
    assert fragment in caught.value.message


def test_bad_fixture_files_are_refused():
    for name, field in [
        ("bad_negative_weight.json", "weight_kg"),
        ("bad_screening_before_birth.json", "screening_date"),
        ("bad_unknown_unit.json", "cmv_dna.unit"),
        ("bad_malformed.json", "json"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse_screening_record((FIXTURES / name).read_text(encoding="utf-8"))
        assert caught.value.details["field"] == field, name
