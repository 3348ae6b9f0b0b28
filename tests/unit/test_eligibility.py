"""The eligibility engine on both shipped protocols: every boundary of issue 3, the overall verdict,
missing data, and the proof that the numbers come from the protocol.

Boundaries (issue 3, "follow the records literally"): age 18 to 70 inclusive; CMV-DNA strictly
above 10^3 copies/mL; steroid strictly below 1.0 mg/kg/d; CrCl at or below 30 mL/min excludes;
ALT/AST strictly above 3x ULN excludes; bilirubin strictly above ULN excludes; NYHA III or IV excludes.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from cmvtrial.core.derived_values import UnitBridge
from cmvtrial.core.eligibility import derivation_parameters, evaluate_eligibility
from cmvtrial.core.screening_record import screening_record_from_data
from cmvtrial.errors import InvalidInput, OutOfRange, UnitError
from cmvtrial.protocols import load_shipped_protocol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
ELIGIBLE = json.loads((FIXTURES / "eligible.json").read_text(encoding="utf-8"))
PROTOCOL_IDS = ["sle-cmv-il2", "nct04225780"]
SOURCE = Path(__file__).resolve().parents[2] / "src" / "cmvtrial" / "core"


@pytest.fixture(scope="module", params=PROTOCOL_IDS)
def protocol(request):
    return load_shipped_protocol(request.param)[0]


def judge(protocol, **changes):
    record = {**ELIGIBLE, **changes}
    for key in [k for k, v in changes.items() if v is ABSENT]:
        del record[key]
    return evaluate_eligibility(protocol, record)


ABSENT = object()


def verdict(result, criterion_id):
    return next(v for v in result.criteria if v.id == criterion_id)


def by_name(protocol, result, name):
    """The verdicts of the criteria whose expression reads ``name`` (found through the protocol)."""
    reading = {c.id for c in protocol.eligibility if name in c.compiled.names}
    return [v for v in result.criteria if v.id in reading]


def test_the_example_record_is_eligible(protocol):
    result = judge(protocol)
    assert result.eligible is True
    assert all(not v.excludes for v in result.criteria)
    assert result.unknown == () and result.missing == ()
    assert {"age_years", "creatinine_clearance_ml_min", "prednisone_equivalent_mg_per_kg_day", "alt_x_uln",
            "ast_x_uln", "total_bilirubin_x_uln", "cmv_dna_copies_per_ml"} <= set(result.derived)


# ------------------------------------------------------------------------------------- age

@pytest.mark.parametrize(
    ("birth", "screening", "expected"),
    [
        ("2006-05-21", "2024-05-20", "not_met"),  # 17: the day before the 18th birthday
        ("2006-05-20", "2024-05-20", "met"),      # 18 on the birthday
        ("1954-05-20", "2024-05-20", "met"),      # 70 on the birthday
        ("1953-05-21", "2024-05-20", "met"),      # last day aged 70
        ("1953-05-20", "2024-05-20", "not_met"),  # 71
        ("2004-02-29", "2022-02-28", "not_met"),  # leap-day birth: still 17 on 28 February
        ("2004-02-29", "2022-03-01", "met"),      # ... 18 on 1 March
    ],
)
def test_age_18_to_70_inclusive(protocol, birth, screening, expected):
    result = judge(protocol, birth_date=birth, screening_date=screening)
    (criterion,) = by_name(protocol, result, "age_years")
    assert criterion.kind == "inclusion" and criterion.verdict == expected


# ------------------------------------------------------------------------------------- CMV

@pytest.mark.parametrize(
    ("load", "expected"),
    [
        ({"value": 1000, "unit": "copies/mL"}, "not_met"),   # not strictly above 10^3
        ({"value": 1001, "unit": "copies/mL"}, "met"),
        ({"value": 909, "unit": "IU/mL"}, "not_met"),        # 909 x 1.1 = 999.9 copies/mL
        ({"value": 910, "unit": "IU/mL"}, "met"),            # 910 x 1.1 = 1001 copies/mL
    ],
)
def test_cmv_dna_strictly_above_a_thousand_copies(protocol, load, expected):
    result = judge(protocol, cmv_dna=load)
    inclusion = [v for v in by_name(protocol, result, "cmv_dna_copies_per_ml") if v.kind == "inclusion"]
    assert [v.verdict for v in inclusion] == [expected]


def test_negative_cmv_dna_excludes(protocol):
    result = judge(protocol, cmv_dna={"value": 0, "unit": "copies/mL"})
    exclusion = [v for v in by_name(protocol, result, "cmv_dna_copies_per_ml") if v.kind == "exclusion"]
    assert [v.verdict for v in exclusion] == ["met"]
    assert result.eligible is False


# --------------------------------------------------------------------------------- steroids

@pytest.mark.parametrize(
    ("steroid", "expected"),
    [
        ({"drug": "prednisone", "daily_dose_mg": 60}, "not_met"),          # 60/60 = 1.0: not below 1.0
        ({"drug": "prednisone", "daily_dose_mg": 59.4}, "met"),            # 0.99
        ({"drug": "methylprednisolone", "daily_dose_mg": 48}, "not_met"),  # 48 x 1.25 / 60 = 1.0
        ({"drug": "dexamethasone", "daily_dose_mg": 9}, "not_met"),        # 9 x 6.67 / 60 = 1.0005
        ({"drug": "hydrocortisone", "daily_dose_mg": 236}, "met"),         # 236 x 0.25 / 60 = 0.983
        (None, "met"),                                                     # none taken: 0
    ],
)
def test_steroid_strictly_below_one_mg_per_kg(protocol, steroid, expected):
    result = judge(protocol, corticosteroid=steroid, weight_kg=60)
    (criterion,) = by_name(protocol, result, "prednisone_equivalent_mg_per_kg_day")
    assert criterion.verdict == expected


def test_an_absent_steroid_is_unknown_not_none(protocol):
    result = judge(protocol, corticosteroid=ABSENT)
    (criterion,) = by_name(protocol, result, "prednisone_equivalent_mg_per_kg_day")
    assert criterion.verdict == "unknown" and criterion.missing == ("corticosteroid",)
    assert result.eligible is None


# ---------------------------------------------------------------------------------- kidneys

MAN_OF_50 = {"sex": "M", "birth_date": "1974-01-01", "screening_date": "2024-06-01", "weight_kg": 72,
             "pregnant_or_breastfeeding": False}


@pytest.mark.parametrize(
    ("creatinine", "expected"),
    [
        ({"value": 3, "unit": "mg/dL"}, "met"),          # (140-50) x 72 / (72 x 3) = 30.0: excludes
        ({"value": 265.2, "unit": "umol/L"}, "met"),     # 265.2 / 88.4 = 3 mg/dL -> 30.0
        ({"value": 2.99, "unit": "mg/dL"}, "not_met"),   # 90 / 2.99 = 30.1
        ({"value": 30, "unit": "mg/L"}, "met"),          # 30 mg/L = 3 mg/dL (pint)
    ],
)
def test_creatinine_clearance_at_or_below_30_excludes(protocol, creatinine, expected):
    result = judge(protocol, **MAN_OF_50, serum_creatinine=creatinine)
    (criterion,) = by_name(protocol, result, "creatinine_clearance_ml_min")
    assert criterion.kind == "exclusion" and criterion.verdict == expected


def test_the_female_factor_applies_to_women(protocol):
    """Woman, otherwise the man above with 2.6 mg/dL: 90 x 72 / (72 x 2.6) = 34.615; x 0.85 = 29.423."""
    result = judge(protocol, **{**MAN_OF_50, "sex": "F"}, serum_creatinine={"value": 2.6, "unit": "mg/dL"})
    assert result.derived["creatinine_clearance_ml_min"].value == pytest.approx(29.423076923, abs=1e-9)
    assert by_name(protocol, result, "creatinine_clearance_ml_min")[0].verdict == "met"


# ------------------------------------------------------------------------------------- liver

@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"alt": {"value": 120, "unit": "U/L"}}, "not_met"),   # 120/40 = 3.0: not above 3x
        ({"alt": {"value": 121, "unit": "U/L"}}, "met"),       # 3.025
        ({"ast": {"value": 120, "unit": "U/L"}}, "not_met"),
        ({"ast": {"value": 120.4, "unit": "U/L"}}, "met"),     # 3.01
        ({"total_bilirubin": {"value": 21, "unit": "umol/L"}}, "not_met"),    # = ULN 21
        ({"total_bilirubin": {"value": 21.1, "unit": "umol/L"}}, "met"),      # > ULN
        ({"total_bilirubin": {"value": 1.2, "unit": "mg/dL"}, "total_bilirubin_uln": 1.2}, "not_met"),
        ({"total_bilirubin": {"value": 1.3, "unit": "mg/dL"}, "total_bilirubin_uln": 1.2}, "met"),
        ({"total_bilirubin": {"value": 1.3, "unit": "mg/dL"},
          "total_bilirubin_uln": {"value": 13, "unit": "mg/L"}}, "not_met"),  # 13 mg/L = 1.3 mg/dL
    ],
)
def test_liver_boundaries(protocol, changes, expected):
    result = judge(protocol, **changes)
    (criterion,) = by_name(protocol, result, "alt_x_uln")
    assert criterion.verdict == expected


def test_kleene_logic_one_bad_liver_value_is_enough(protocol):
    """ALT 4x ULN excludes although AST is absent (True or unknown = True); ALT normal with AST
    absent leaves the criterion unknown and names the missing key."""
    high = judge(protocol, alt={"value": 160, "unit": "U/L"}, ast=ABSENT)
    (criterion,) = by_name(protocol, high, "alt_x_uln")
    assert criterion.verdict == "met" and high.eligible is False
    normal = judge(protocol, ast=ABSENT)
    (criterion,) = by_name(protocol, normal, "alt_x_uln")
    assert criterion.verdict == "unknown" and criterion.missing == ("ast",)
    assert normal.eligible is None


# ------------------------------------------------------------------------- other exclusions

@pytest.mark.parametrize(("nyha", "expected"), [(1, "not_met"), (2, "not_met"), (3, "met"), (4, "met")])
def test_nyha_three_or_four_excludes(protocol, nyha, expected):
    (criterion,) = by_name(protocol, judge(protocol, nyha_class=nyha), "nyha_class")
    assert criterion.verdict == expected


@pytest.mark.parametrize(
    "changes",
    [
        {"other_infections": ["hiv"]},
        {"other_infections": ["bacteremia", "ebv"]},
        {"il2_allergy": True},
        {"severe_comorbidities": ["pulmonary"]},
        {"malignancy": True},
        {"uncontrolled_psychiatric": True},
        {"pregnant_or_breastfeeding": True},
        {"nyha_class": 3},
    ],
)
def test_each_exclusion_excludes_and_is_named(protocol, changes):
    result = judge(protocol, **changes)
    assert result.eligible is False
    (reason,) = result.reasons_not_eligible
    assert reason.kind == "exclusion" and set(changes) <= set(reason.values)


def test_diagnosis_is_narrowed_to_sle_in_the_sle_protocol():
    sle = load_shipped_protocol("sle-cmv-il2")[0]
    rheumatic = load_shipped_protocol("nct04225780")[0]
    assert judge(sle, diagnosis="RA").eligible is False
    assert judge(rheumatic, diagnosis="RA").eligible is True
    assert judge(rheumatic, diagnosis="none").eligible is False


# --------------------------------------------------------------------------------- overall

def test_unknown_plus_an_exclusion_is_not_eligible(protocol):
    result = judge(protocol, serum_creatinine=ABSENT, malignancy=True)
    assert result.eligible is False
    assert [v.verdict for v in by_name(protocol, result, "creatinine_clearance_ml_min")] == ["unknown"]


def test_missing_derived_inputs_are_reported_as_record_keys(protocol):
    result = judge(protocol, serum_creatinine=ABSENT)
    assert result.eligible is None
    (criterion,) = result.unknown
    assert criterion.missing == ("serum_creatinine",)
    assert result.derived["creatinine_clearance_ml_min"].missing == {"serum_creatinine"}


def test_an_empty_record_is_undetermined_and_lists_what_is_missing(protocol):
    result = evaluate_eligibility(protocol, {})
    assert result.eligible is None
    assert all(v.verdict == "unknown" for v in result.criteria)
    assert {"birth_date", "cmv_dna", "serum_creatinine", "nyha_class", "corticosteroid"} <= set(result.missing)


def test_a_null_value_is_unknown_like_an_absent_one(protocol):
    assert judge(protocol, nyha_class=None).eligible is None


def test_model_and_mapping_inputs_agree(protocol):
    assert evaluate_eligibility(protocol, screening_record_from_data(ELIGIBLE)) == evaluate_eligibility(protocol, ELIGIBLE)


def test_result_as_json(protocol):
    data = judge(protocol, serum_creatinine=ABSENT).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["eligible"] is None
    assert set(data["criteria"][0]) >= {"id", "kind", "text", "verdict", "values"}
    crcl = data["derived"]["creatinine_clearance_ml_min"]
    assert crcl["value"] is None and crcl["missing"] == ["serum_creatinine"] and crcl["unit"] == "mL/min"
    assert data["derived"]["age_years"]["used"]["birth_date"] == ELIGIBLE["birth_date"]


# ------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    ("changes", "error", "field"),
    [
        ({"weight_kg": 600}, OutOfRange, "weight_kg"),                                   # hard max of the item
        ({"serum_creatinine": {"value": 5000, "unit": "umol/L"}}, OutOfRange, "serum_creatinine"),
        ({"weight_kg": -1}, InvalidInput, "weight_kg"),
        ({"screening_date": "1980-01-01"}, InvalidInput, "screening_date"),
        ({"cmv_dna": {"value": 1, "unit": "kg"}}, UnitError, "cmv_dna.unit"),
    ],
)
def test_bad_input_is_refused_naming_the_field(protocol, changes, error, field):
    with pytest.raises(error) as caught:
        judge(protocol, **changes)
    assert caught.value.details["field"] == field


# ------------------------------------------------------------------- numbers from the protocol

def test_derivation_parameters_come_from_the_protocol(protocol):
    params = derivation_parameters(protocol)
    clearance = protocol.derivations.creatinine_clearance
    assert (params.cg_age_offset_years, params.cg_divisor, params.cg_female_factor) == (
        clearance.age_offset_years, clearance.divisor, clearance.female_factor
    )
    assert params.prednisone_factors == dict(protocol.derivations.prednisone_equivalence)
    assert params.iu_to_copies_factor == protocol.assay.cmv_dna.iu_to_copies_factor
    assert params.unit_bridges["serum_creatinine"] == (UnitBridge("umol/L", "mg/dL", divisor=88.4),)


def test_changing_the_protocol_changes_the_verdict(protocol):
    """A threshold moved in the protocol file moves the verdict; a constant changed moves the value."""
    criteria = tuple(
        c.model_copy(update={"expression": "creatinine_clearance_ml_min <= 100"})
        if "creatinine_clearance_ml_min" in c.expression else c
        for c in protocol.eligibility
    )
    stricter = protocol.model_copy(update={"eligibility": criteria})
    assert judge(protocol).eligible is True and judge(stricter).eligible is False

    clearance = protocol.derivations.creatinine_clearance.model_copy(update={"female_factor": 0.5})
    derivations = protocol.derivations.model_copy(update={"creatinine_clearance": clearance})
    halved = protocol.model_copy(update={"derivations": derivations})
    base = judge(protocol).derived["creatinine_clearance_ml_min"].value
    assert judge(halved).derived["creatinine_clearance_ml_min"].value == pytest.approx(base / 0.85 * 0.5)


def _numbers_in_code(text):
    return {
        node.value for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
    }


def _numbers_in(data):
    if isinstance(data, dict):
        return set().union(*(_numbers_in(v) for v in data.values())) if data else set()
    if isinstance(data, (list, tuple)):
        return set().union(*(_numbers_in(v) for v in data)) if data else set()
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return {data}
    return set()


@pytest.mark.parametrize("module", ["eligibility.py", "derived_values.py", "screening_record.py"])
def test_no_trial_numbers_in_the_engine(protocol, module):
    """Protocol as data: no threshold of a criterion and no formula constant of the protocol
    (140, 72, 0.85, the steroid and assay factors, 1000, 30, 3, 18, 70 ...) appears in the engine."""
    trial_numbers = _numbers_in(protocol.derivations.model_dump()) | _numbers_in(protocol.assay.model_dump())
    for criterion in protocol.eligibility:
        trial_numbers |= _numbers_in_code(criterion.expression)
    for item in protocol.screening.item_paths().values():
        trial_numbers |= _numbers_in([a.model_dump() for a in item.alternative_units])
    assert {1000, 30, 3, 18, 70, 140, 72, 0.85, 88.4, 1.1, 6.67} <= trial_numbers
    in_code = _numbers_in_code((SOURCE / module).read_text(encoding="utf-8"))
    assert in_code & trial_numbers <= {0, 1}
