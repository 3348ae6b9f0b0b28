"""Derived values (core/derived_values.py): each reference value is worked out by hand in the docstring.

The constants passed here are those of reference/domain.md (§1.4 Cockcroft-Gault 140/72/0.85 and
88.4 µmol/L per mg/dL, §2 steroid factors, §3.1 IU->copies 1.1); production takes them from the
protocol file (tests/unit/test_eligibility.py checks that path).
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cmvtrial.core.derived_values import (
    DERIVATIONS,
    DerivationParameters,
    UnitBridge,
    convert_for_item,
    age_in_years,
    cmv_copies_per_ml,
    cockcroft_gault,
    derive,
    multiple_of_uln,
    prednisone_equivalent_per_kg,
)
from cmvtrial.core.screening_record import Corticosteroid, Quantity
from cmvtrial.errors import InvalidInput, UnitError

FACTORS = {"prednisone": 1.0, "prednisolone": 1.0, "methylprednisolone": 1.25, "hydrocortisone": 0.25,
           "dexamethasone": 6.67, "betamethasone": 6.67}
PARAMS = DerivationParameters(
    cg_age_offset_years=140, cg_divisor=72, cg_female_factor=0.85, cg_creatinine_unit="mg/dL",
    unit_bridges={"serum_creatinine": (UnitBridge("umol/L", "mg/dL", divisor=88.4),)},
    prednisone_factors=FACTORS, iu_to_copies_factor=1.1,
)
CG = {"age_offset_years": 140, "divisor": 72, "female_factor": 0.85}


# ---------------------------------------------------------------------------------------- age

@pytest.mark.parametrize(
    ("birth", "on", "expected"),
    [
        (date(2000, 6, 15), date(2018, 6, 14), 17),  # the day before the 18th birthday
        (date(2000, 6, 15), date(2018, 6, 15), 18),  # on the birthday
        (date(1950, 6, 15), date(2020, 6, 15), 70),  # 70th birthday
        (date(1950, 6, 15), date(2021, 6, 14), 70),  # last day aged 70
        (date(1950, 6, 15), date(2021, 6, 15), 71),
        (date(2000, 2, 29), date(2018, 2, 28), 17),  # leap-day birth: not yet 18 on 28 Feb
        (date(2000, 2, 29), date(2018, 3, 1), 18),   # ... 18 on 1 March of a common year
        (date(2000, 2, 29), date(2020, 2, 29), 20),  # ... and on 29 Feb of a leap year
        (date(2000, 1, 1), date(2000, 1, 1), 0),
    ],
)
def test_age_in_whole_years_by_the_birthday_rule(birth, on, expected):
    assert age_in_years(birth, on) == expected


def test_age_refuses_a_date_before_birth():
    with pytest.raises(InvalidInput) as caught:
        age_in_years(date(2000, 1, 2), date(2000, 1, 1))
    assert caught.value.details["field"] == "screening_date"


@given(st.dates(date(1900, 1, 1), date(2100, 1, 1)), st.integers(0, 20000), st.integers(0, 400))
def test_age_never_falls_as_time_passes(birth, days, more):
    on = birth + timedelta(days=days)
    later = on + timedelta(days=more)
    assert 0 <= age_in_years(birth, on) <= age_in_years(birth, later)
    assert age_in_years(birth, later) - age_in_years(birth, on) <= more // 365 + 1


@given(st.dates(date(1900, 1, 1), date(2050, 1, 1)), st.integers(0, 100))
def test_age_on_the_nth_birthday_is_n(birth, years):
    assume(not (birth.month == 2 and birth.day == 29))
    assert age_in_years(birth, birth.replace(year=birth.year + years)) == years


# ------------------------------------------------------------------------------- Cockcroft-Gault

def test_cockcroft_gault_hand_values():
    """Man, 50 y, 72 kg, creatinine 3 mg/dL: (140-50)*72/(72*3) = 90*72/216 = 30.0 mL/min.
    Woman, same: 0.85 * 30 = 25.5. Man, 40 y, 70 kg, 1.0 mg/dL: 100*70/72 = 97.222222222."""
    assert cockcroft_gault(age_years=50, weight_kg=72, creatinine_mg_dl=3, female=False, **CG) == 30.0
    assert cockcroft_gault(age_years=50, weight_kg=72, creatinine_mg_dl=3, female=True, **CG) == 25.5
    assert cockcroft_gault(age_years=40, weight_kg=70, creatinine_mg_dl=1.0, female=False, **CG) == pytest.approx(
        97.222222222, abs=1e-9
    )


def test_cockcroft_gault_from_umol_per_litre_through_the_catalogue():
    """265.2 µmol/L / 88.4 = 3.0 mg/dL; a man born 1974-01-01 is 50 on 2024-06-01; 72 kg:
    (140-50)*72/(72*3) = 30.0 — exactly the exclusion boundary, with no floating-point noise."""
    values = {"birth_date": date(1974, 1, 1), "screening_date": date(2024, 6, 1), "sex": "M",
              "weight_kg": 72.0, "serum_creatinine": Quantity(value=265.2, unit="umol/L")}
    names = ["birth_date", "screening_date", "sex", "weight_kg", "serum_creatinine"]
    result = derive("crcl", "cockcroft_gault", names, values, PARAMS)
    assert result.value == 30.0
    assert set(result.used) == set(names) and result.missing == frozenset()
    in_mg = {**values, "serum_creatinine": Quantity(value=3.0, unit="mg/dL")}
    assert derive("crcl", "cockcroft_gault", names, in_mg, PARAMS).value == 30.0
    in_mmol = {**values, "serum_creatinine": Quantity(value=0.2652, unit="mmol/L")}
    assert derive("crcl", "cockcroft_gault", names, in_mmol, PARAMS).value == 30.0


@given(st.integers(18, 90), st.floats(30, 150), st.floats(0.3, 8), st.floats(0.01, 2), st.booleans())
def test_clearance_never_rises_as_creatinine_or_age_rises(age, weight, creatinine, step, female):
    base = cockcroft_gault(age_years=age, weight_kg=weight, creatinine_mg_dl=creatinine, female=female, **CG)
    worse_creatinine = cockcroft_gault(
        age_years=age, weight_kg=weight, creatinine_mg_dl=creatinine + step, female=female, **CG
    )
    older = cockcroft_gault(age_years=age + 1, weight_kg=weight, creatinine_mg_dl=creatinine, female=female, **CG)
    assert worse_creatinine <= base and older <= base and base >= 0


def test_cockcroft_gault_refuses_impossible_inputs_and_missing_constants():
    with pytest.raises(InvalidInput):
        cockcroft_gault(age_years=50, weight_kg=-70, creatinine_mg_dl=1, female=False, **CG)
    with pytest.raises(InvalidInput):
        cockcroft_gault(age_years=50, weight_kg=70, creatinine_mg_dl=0, female=False, **CG)
    values = {"birth_date": date(1974, 1, 1), "screening_date": date(2024, 6, 1), "sex": "M",
              "weight_kg": 72.0, "serum_creatinine": Quantity(value=88.4, unit="umol/L")}
    names = list(values)
    in_mg = {**values, "serum_creatinine": Quantity(value=1.0, unit="mg/dL")}
    with pytest.raises(InvalidInput) as caught:
        derive("crcl", "cockcroft_gault", names, in_mg, DerivationParameters())
    assert caught.value.details["field"].startswith("derivations.")
    with pytest.raises(UnitError) as caught:  # µmol/L without the protocol's bridge
        derive("crcl", "cockcroft_gault", names, values, DerivationParameters(cg_age_offset_years=140))
    assert caught.value.details["field"] == "serum_creatinine.unit"
    with pytest.raises(InvalidInput):
        derive("crcl", "cockcroft_gault", names, values,
               DerivationParameters(**{**PARAMS.__dict__, "cg_weight_basis": "ideal"}))
    with pytest.raises(UnitError):
        derive("crcl", "cockcroft_gault", names, {**values, "serum_creatinine": Quantity(value=1, unit="U/L")}, PARAMS)


# ------------------------------------------------------------------------------------- steroids

@pytest.mark.parametrize(
    ("drug", "dose", "weight", "expected"),
    [
        ("prednisone", 60, 60, 1.0),           # 60 * 1 / 60
        ("prednisone", 59.4, 60, 0.99),        # 59.4 / 60
        ("prednisolone", 30, 60, 0.5),         # 30 * 1 / 60
        ("methylprednisolone", 48, 60, 1.0),   # 48 * 1.25 / 60 = 60 / 60
        ("hydrocortisone", 200, 50, 1.0),      # 200 * 0.25 / 50
        ("dexamethasone", 9, 60, 1.0005),      # 9 * 6.67 / 60 = 60.03 / 60
        ("betamethasone", 3, 60, 0.3335),      # 3 * 6.67 / 60 = 20.01 / 60
    ],
)
def test_prednisone_equivalent_per_kg(drug, dose, weight, expected):
    assert prednisone_equivalent_per_kg(drug, dose, weight, FACTORS) == pytest.approx(expected, abs=1e-9)


def test_no_corticosteroid_is_zero_and_an_absent_one_is_unknown():
    names = ["corticosteroid", "weight_kg"]
    none_taken = derive("pred", "prednisone_equivalent_per_kg", names, {"corticosteroid": None, "weight_kg": 60.0}, PARAMS)
    assert none_taken.value == 0.0 and none_taken.missing == frozenset()
    absent = derive("pred", "prednisone_equivalent_per_kg", names, {"weight_kg": 60.0}, PARAMS)
    assert absent.value is None and absent.missing == {"corticosteroid"}
    taken = Corticosteroid(drug="methylprednisolone", daily_dose_mg=24)
    half = derive("pred", "prednisone_equivalent_per_kg", names, {"corticosteroid": taken, "weight_kg": 60.0}, PARAMS)
    assert half.value == 0.5  # 24 * 1.25 / 60


def test_a_drug_without_a_factor_is_refused():
    with pytest.raises(InvalidInput) as caught:
        prednisone_equivalent_per_kg("cortisone", 25, 60, FACTORS)
    assert caught.value.details["field"] == "corticosteroid.drug"


# ------------------------------------------------------------------------------------ ULN, CMV

def test_multiples_of_uln():
    """120/40 = 3.0 (not above 3x ULN); 121/40 = 3.025; bilirubin 1.2 mg/dL against 12 mg/L = 1.2 mg/dL -> 1.0."""
    assert multiple_of_uln(120, 40) == 3.0
    assert multiple_of_uln(121, 40) == 3.025
    names = ["total_bilirubin", "total_bilirubin_uln"]
    mixed = {"total_bilirubin": Quantity(value=1.2, unit="mg/dL"),
             "total_bilirubin_uln": Quantity(value=12, unit="mg/L")}
    assert derive("bili", "multiple_of_uln", names, mixed, PARAMS).value == 1.0
    bare = {"total_bilirubin": Quantity(value=21, unit="umol/L"), "total_bilirubin_uln": 21.0}
    assert derive("bili", "multiple_of_uln", names, bare, PARAMS).value == 1.0
    with pytest.raises(InvalidInput):
        multiple_of_uln(10, 0)


def test_cmv_copies_per_ml():
    """1000 copies/mL stays 1000; 910 IU/mL * 1.1 = 1001 copies/mL; 909 IU/mL * 1.1 = 999.9."""
    assert cmv_copies_per_ml(1000, "copies/mL", 1.1) == 1000
    assert cmv_copies_per_ml(910, "IU/mL", 1.1) == 1001.0
    assert cmv_copies_per_ml(909, "IU/mL", 1.1) == 999.9
    with pytest.raises(UnitError):
        cmv_copies_per_ml(1000, "mg/dL", 1.1)
    with pytest.raises(InvalidInput):
        derive("cmv", "cmv_copies_per_ml", ["cmv_dna"], {"cmv_dna": Quantity(value=910, unit="IU/mL")},
               DerivationParameters())
    copies_without_factor = derive(
        "cmv", "cmv_copies_per_ml", ["cmv_dna"], {"cmv_dna": Quantity(value=5, unit="copies/mL")}, DerivationParameters()
    )
    assert copies_without_factor.value == 5


# ------------------------------------------------------------------------------------ catalogue

def test_catalogue_names_match_the_protocol_methods():
    assert set(DERIVATIONS) == {
        "age_in_years", "cockcroft_gault", "prednisone_equivalent_per_kg", "multiple_of_uln", "cmv_copies_per_ml"
    }


def test_missing_or_null_inputs_make_the_value_unknown_and_say_which():
    result = derive("age", "age_in_years", ["birth_date", "screening_date"], {"birth_date": None}, PARAMS)
    assert result.value is None
    assert result.missing == {"birth_date", "screening_date"}
    data = result.to_dict()
    assert data["value"] is None and data["missing"] == ["birth_date", "screening_date"]


def test_unknown_method_and_wrong_arity_are_refused():
    with pytest.raises(InvalidInput) as caught:
        derive("x", "body_surface_area", ["weight_kg"], {}, PARAMS)
    assert caught.value.details["field"] == "derived_values.x.method"
    with pytest.raises(InvalidInput) as caught:
        derive("x", "age_in_years", ["birth_date"], {}, PARAMS)
    assert caught.value.details["field"] == "derived_values.x.inputs"


def test_to_dict_is_plain_data():
    values = {"birth_date": date(2000, 1, 1), "screening_date": date(2020, 1, 1)}
    data = derive("age", "age_in_years", list(values), values, PARAMS).to_dict()
    assert data == {"value": 20, "method": "age_in_years",
                    "used": {"birth_date": "2000-01-01", "screening_date": "2020-01-01"}, "missing": []}


def test_unit_bridges_convert_both_ways_with_pint_on_either_side():
    """88.4 µmol/L = 1 mg/dL, so 0.0884 mmol/L -> 1 mg/dL -> 10 mg/L; and back 2 mg/dL -> 176.8 µmol/L."""
    bridges = {"creatinine": (UnitBridge("umol/L", "mg/dL", divisor=88.4),)}
    assert convert_for_item("creatinine", 0.0884, "mmol/L", "mg/L", bridges) == pytest.approx(10.0, rel=1e-12)
    assert convert_for_item("creatinine", 2, "mg/dL", "umol/L", bridges) == pytest.approx(176.8, rel=1e-12)
    assert convert_for_item("creatinine", 2, "mg/dL", "g/L", bridges) == pytest.approx(0.02, rel=1e-12)
    factor = {"cmv": (UnitBridge("[IU]/mL", "copies/mL", factor=1.1),)}
    assert convert_for_item("cmv", 1100, "copies/mL", "IU/mL", factor) == pytest.approx(1000, rel=1e-12)
    with pytest.raises(UnitError) as caught:
        convert_for_item("bilirubin", 1, "mg/dL", "umol/L", bridges)
    assert caught.value.details["field"] == "bilirubin.unit"
