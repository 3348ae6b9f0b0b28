"""CTCAE v5.0 grading: every threshold of every graded term, units feeding the grader, bad input.

The expected grades below are written from the CTCAE v5.0 text in reference/domain.md §6, not read
back from the YAML table, so a wrong number in the table fails a test.
"""

import copy
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmvtrial import reference_data
from cmvtrial.core import ctcae, units
from cmvtrial.errors import InvalidInput, OutOfRange, UnitError

NEUTRO = "Neutrophil count decreased"
WBC = "White blood cell decreased"
LYMPH = "Lymphocyte count decreased"
ANEMIA = "Anemia"
PLT = "Platelet count decreased"
CREAT = "Creatinine increased"
ALT = "Alanine aminotransferase increased"
AST = "Aspartate aminotransferase increased"
BILI = "Blood bilirubin increased"
FEVER = "Fever"
YAML = Path(reference_data.__file__).with_name("ctcae_v5.yaml")


def g(term, value, unit, **limits):
    return ctcae.grade(term, value, unit, **limits).grade


# --- the table -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "code"),
    [
        (NEUTRO, "10029366"), (WBC, "10049182"), (LYMPH, "10025256"), (ANEMIA, "10002272"),
        (PLT, "10035528"), (CREAT, "10011368"), (ALT, "10001551"), (AST, "10003481"),
        (BILI, "10005364"), (FEVER, "10016558"), ("Injection site reaction", "10022095"),
        ("Flu like symptoms", "10016791"),
    ],
)
def test_shipped_terms_carry_the_meddra_codes_of_the_reference(term, code):
    assert ctcae.shipped_table().find(term).meddra_code == code


def test_the_ten_lab_terms_of_issue_5_are_graded_from_lab_values():
    graded = {t.term for t in ctcae.shipped_table().lab_terms()}
    assert graded == {NEUTRO, WBC, LYMPH, ANEMIA, PLT, CREAT, ALT, AST, BILI, FEVER}


def test_every_number_in_the_table_names_its_source():
    text = YAML.read_text(encoding="utf-8")
    unsourced = [
        line.strip()
        for line in text.splitlines()
        if re.search(r"(limit: [\d.]+|times: (?!1\.0\b)[\d.]+|meddra_code: \"\d+\")", line) and "#" not in line
    ]
    assert unsourced == []


def test_a_lab_item_finds_its_term_by_loinc():
    table = ctcae.shipped_table()
    assert [t.term for t in table.terms_for_loinc("751-8")] == [NEUTRO]
    assert [t.term for t in table.terms_for_loinc("14682-9")] == [CREAT]
    assert table.terms_for_loinc("0000-0") == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["terms"][0]["lab"]["criteria"].append({"grade": 2, "op": ">", "limit": 9}), "lab"),
        (lambda d: d["terms"][0]["lab"].update(unit="furlongs"), "unit"),
        (lambda d: d["terms"][0]["grades"].pop(5), "terms.0"),
        (lambda d: d["terms"][1]["synonyms"].append("neutropenia"), "table"),
        (lambda d: d["terms"][0]["lab"]["criteria"].append({"grade": 5, "op": "<", "limit": 0.1}), "terms.0"),
        (lambda d: d["terms"][0]["lab"]["criteria"].append({"grade": 2, "op": "<", "limit": 1, "of": "lln"}),
         "criteria"),
        (lambda d: d["terms"][0].update(meddra_code="1234"), "meddra_code"),
        (lambda d: d["terms"][0]["lab"].update(also_accepts=["g/L"]), "lab"),
        (lambda d: d.update(colour="red"), "colour"),
    ],
)
def test_a_broken_table_is_refused_with_the_location(mutate, where):
    data = copy.deepcopy(reference_data.ctcae_v5_mapping())
    mutate(data)
    with pytest.raises(InvalidInput) as caught:
        ctcae.table_from_mapping(data)
    assert any(where in p["location"] for p in caught.value.details["problems"])


# --- every boundary: just beyond, at, just short of each threshold ---------------------------------

BOUNDARIES = [
    # term, unit, limits, [(value, grade), ...]
    (NEUTRO, "10*9/L", {"lln": 2.0}, [(2.01, 0), (2.0, 0), (1.99, 1), (1.51, 1), (1.5, 1), (1.49, 2),
                                      (1.01, 2), (1.0, 2), (0.99, 3), (0.51, 3), (0.5, 3), (0.49, 4)]),
    (WBC, "10*9/L", {"lln": 4.0}, [(4.01, 0), (4.0, 0), (3.99, 1), (3.01, 1), (3.0, 1), (2.99, 2),
                                   (2.01, 2), (2.0, 2), (1.99, 3), (1.01, 3), (1.0, 3), (0.99, 4)]),
    (LYMPH, "10*9/L", {"lln": 1.0}, [(1.01, 0), (1.0, 0), (0.99, 1), (0.81, 1), (0.8, 1), (0.79, 2),
                                     (0.51, 2), (0.5, 2), (0.49, 3), (0.21, 3), (0.2, 3), (0.19, 4)]),
    (PLT, "10*9/L", {"lln": 150}, [(151, 0), (150, 0), (149, 1), (75.1, 1), (75, 1), (74.9, 2),
                                   (50.1, 2), (50, 2), (49.9, 3), (25.1, 3), (25, 3), (24.9, 4)]),
    (ANEMIA, "g/dL", {"lln": 12.0}, [(12.1, 0), (12.0, 0), (11.9, 1), (10.1, 1), (10.0, 1), (9.9, 2),
                                     (8.1, 2), (8.0, 2), (7.9, 3), (0.5, 3)]),
    (CREAT, "mg/dL", {"uln": 1.2}, [(1.19, 0), (1.2, 0), (1.21, 1), (1.79, 1), (1.8, 1), (1.81, 2),
                                    (3.59, 2), (3.6, 2), (3.61, 3), (7.19, 3), (7.2, 3), (7.21, 4)]),
    # creatinine x baseline: 1.5 x 0.5 = 0.75 and 3.0 x 0.5 = 1.5, both below ULN x 1.5 = 1.8
    (CREAT, "mg/dL", {"uln": 1.2, "baseline": 0.5}, [(0.74, 0), (0.75, 0), (0.76, 2), (1.49, 2), (1.5, 2),
                                                     (1.51, 3), (7.2, 3), (7.21, 4)]),
    (ALT, "U/L", {"uln": 40}, [(39, 0), (40, 0), (41, 1), (119, 1), (120, 1), (121, 2), (199, 2),
                               (200, 2), (201, 3), (799, 3), (800, 3), (801, 4)]),
    (ALT, "U/L", {"uln": 40, "baseline": 35}, [(40, 0), (41, 1), (120, 1), (121, 2), (801, 4)]),
    # abnormal baseline 50 > ULN 40: grade against the baseline, G1 starts AT 1.5 x baseline
    (ALT, "U/L", {"uln": 40, "baseline": 50}, [(41, 0), (74.9, 0), (75, 1), (75.1, 1), (149, 1),
                                               (150, 1), (151, 2), (249, 2), (250, 2), (251, 3),
                                               (999, 3), (1000, 3), (1001, 4)]),
    (AST, "U/L", {"uln": 35}, [(35, 0), (35.1, 1), (105, 1), (105.1, 2), (175, 2), (175.1, 3), (700, 3),
                               (700.1, 4)]),
    (AST, "U/L", {"uln": 35, "baseline": 70}, [(104.9, 0), (105, 1), (210, 1), (210.1, 2), (350, 2),
                                               (350.1, 3), (1400, 3), (1400.1, 4)]),
    (BILI, "mg/dL", {"uln": 1.0}, [(0.99, 0), (1.0, 0), (1.01, 1), (1.5, 1), (1.51, 2), (3.0, 2), (3.01, 3),
                                   (10.0, 3), (10.01, 4)]),
    # v5's abnormal-baseline rule: baseline 30 > ULN 20, G1 starts ABOVE 1.0 x baseline
    (BILI, "umol/L", {"uln": 20, "baseline": 30}, [(25, 0), (29.9, 0), (30, 0), (30.1, 1), (45, 1),
                                                   (45.1, 2), (90, 2), (90.1, 3), (300, 3), (300.1, 4)]),
    (FEVER, "Cel", {}, [(37.9, 0), (38.0, 1), (38.1, 1), (39.0, 1), (39.1, 2), (40.0, 2), (40.1, 3),
                        (42.0, 3)]),
]


@pytest.mark.parametrize(
    ("term", "unit", "limits", "value", "expected"),
    [(t, u, lim, v, e) for t, u, lim, cases in BOUNDARIES for v, e in cases],
    ids=lambda x: str(x)[:14],
)
def test_every_grade_boundary(term, unit, limits, value, expected):
    assert g(term, value, unit, **limits) == expected


def test_the_abnormal_baseline_rule_changes_the_grade():
    # 100 U/L with ULN 40 is 2.5 x ULN: grade 1 on a normal baseline, nothing on a baseline of 80
    assert g(ALT, 100, "U/L", uln=40, baseline=30) == 1
    assert g(ALT, 100, "U/L", uln=40, baseline=80) == 0
    assert g(BILI, 2.0, "mg/dL", uln=1.0, baseline=0.8) == 2
    assert g(BILI, 2.0, "mg/dL", uln=1.0, baseline=1.9) == 1


def test_results_say_which_rule_decided_and_what_was_assumed():
    abnormal = ctcae.grade(ALT, 75, "U/L", uln=40, baseline=50)
    assert abnormal.reasons[0] == "grade 1: 75 U/L >= 1.5 x baseline (1.5 x 50 = 75 U/L)"
    assert any("abnormal baseline" in r for r in abnormal.reasons)
    no_baseline = ctcae.grade(ALT, 41, "U/L", uln=40)
    assert any("as if the baseline was normal" in r for r in no_baseline.reasons)
    creat = ctcae.grade(CREAT, 1.3, "mg/dL", uln=1.2)
    assert any("relative to baseline were not applied" in r for r in creat.reasons)


def test_clinical_parts_of_a_grade_are_named_not_guessed():
    anemia = ctcae.grade(ANEMIA, 6.0, "g/dL", lln=12)
    assert anemia.grade == 3 and "transfusion indicated" in anemia.criterion
    assert any("clinical judgement" in r for r in anemia.reasons)
    fever = ctcae.grade(FEVER, 41.0, "Cel")
    assert fever.grade == 3 and any("more than 24 hours" in r for r in fever.reasons)


def test_grade_zero_has_a_criterion_text_too():
    result = ctcae.grade(NEUTRO, 3.0, "10*9/L", lln=2.0)
    assert result.grade == 0
    assert result.criterion.startswith("no CTCAE grade met")
    assert result.summary() == {"term": NEUTRO, "grade": 0, "criterion": result.criterion}


@pytest.mark.parametrize("name", ["neutropenia", "NEUTROPHIL COUNT DECREASED", "  ANC  decreased ", "ALT increased",
                                  "Anaemia", "Pyrexia"])
def test_terms_are_found_by_name_or_synonym_in_any_case(name):
    assert ctcae.shipped_table().lookup(name) is not None


# --- units feeding the grader ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "value", "unit", "limits", "expected"),
    [
        (NEUTRO, 499, "cells/uL", {}, 4),
        (NEUTRO, 500, "/uL", {}, 3),
        (NEUTRO, 1800, "cells/µL", {"lln": 2000}, 1),
        (NEUTRO, 0.49, "10^9/L", {}, 4),
        (NEUTRO, 1.5, "10*3/uL", {"lln": 2}, 1),
        (PLT, 24999, "/uL", {}, 4),
        (PLT, 25000, "/uL", {}, 3),
        (ANEMIA, 79, "g/L", {}, 3),
        (ANEMIA, 80, "g/L", {}, 2),
        (ANEMIA, 115, "g/L", {"lln": 120}, 1),
        (FEVER, 100.3, "°F", {}, 0),
        (FEVER, 100.4, "[degF]", {}, 1),
        (FEVER, 102.2, "°F", {}, 1),
        (FEVER, 102.3, "°F", {}, 2),
        (FEVER, 104.0, "°F", {}, 2),
        (FEVER, 104.1, "°F", {}, 3),
        (FEVER, 38.0, "°C", {}, 1),
        (CREAT, 160, "µmol/L", {"uln": 106}, 2),
        (CREAT, 159, "umol/L", {"uln": 106}, 1),
        (BILI, 26, "umol/L", {"uln": 17}, 2),
        (ALT, 121, "U/L", {"uln": 40}, 2),
    ],
)
def test_units_feed_the_grader(term, value, unit, limits, expected):
    assert g(term, value, unit, **limits) == expected


def test_a_converted_value_is_reported_in_both_units():
    result = ctcae.grade(ANEMIA, 79, "g/L")
    assert "value 79 g/L = 7.9 g/dL" in result.reasons
    assert result.unit == "g/L" and result.value == 79


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "limits", "error", "field"),
    [
        (("Neutrophil count decrease", 1, "10*9/L"), {}, InvalidInput, "term"),
        (("Nausea", 1, "10*9/L"), {}, InvalidInput, "term"),
        (("Injection site reaction", 1, "10*9/L"), {}, InvalidInput, "term"),
        ((NEUTRO, 1, "furlongs"), {}, UnitError, "unit"),
        ((NEUTRO, 1, "U/L"), {}, UnitError, "unit"),
        ((CREAT, 1, "U/L"), {"uln": 1}, UnitError, "unit"),
        ((ANEMIA, 10, "10*9/L"), {}, UnitError, "unit"),
        ((FEVER, 38, "g/L"), {}, UnitError, "unit"),
        ((PLT, -1, "10*9/L"), {}, OutOfRange, "value"),
        ((NEUTRO, -0.01, "/uL"), {}, OutOfRange, "value"),
        ((NEUTRO, 1, "10*9/L"), {"lln": -1}, OutOfRange, "lln"),
        ((ALT, 50, "U/L"), {}, InvalidInput, "uln"),
        ((BILI, 2, "mg/dL"), {}, InvalidInput, "uln"),
        ((CREAT, 2, "mg/dL"), {"baseline": 1}, InvalidInput, "uln"),
        ((ALT, 50, "U/L"), {"baseline": 60}, InvalidInput, "uln"),
        ((ALT, 50, "U/L"), {"uln": 0}, OutOfRange, "uln"),
        ((CREAT, 2, "mg/dL"), {"uln": 1.2, "baseline": 0}, OutOfRange, "baseline"),
        ((NEUTRO, 1.6, "10*9/L"), {}, InvalidInput, "lln"),
        ((NEUTRO, 1, "10*9/L"), {"lln": 4, "uln": 2}, InvalidInput, "lln"),
        ((NEUTRO, math.nan, "10*9/L"), {}, InvalidInput, "value"),
        ((NEUTRO, math.inf, "10*9/L"), {}, InvalidInput, "value"),
        ((NEUTRO, "1.2", "10*9/L"), {}, InvalidInput, "value"),
        ((NEUTRO, True, "10*9/L"), {}, InvalidInput, "value"),
        ((ALT, 50, "U/L"), {"uln": "40"}, InvalidInput, "uln"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(args, limits, error, field):
    with pytest.raises(error) as caught:
        ctcae.grade(*args, **limits)
    assert caught.value.details["field"] == field


def test_an_unknown_term_suggests_the_closest_names():
    with pytest.raises(InvalidInput, match="did you mean 'Neutrophil count decreased'"):
        ctcae.grade("Neutrophil count decrease", 1, "10*9/L")


def test_a_missing_lln_does_not_matter_when_a_fixed_cut_off_decides():
    assert g(NEUTRO, 1.4, "10*9/L") == 2
    assert g(PLT, 20, "10*9/L") == 4


def test_unused_limits_are_mentioned_not_silently_dropped():
    result = ctcae.grade(NEUTRO, 1.0, "10*9/L", lln=2, uln=7, baseline=3)
    assert any("uln, baseline not used" in r for r in result.reasons)


# --- laws ----------------------------------------------------------------------------------------

LAB_TERMS = [NEUTRO, WBC, LYMPH, ANEMIA, PLT, CREAT, ALT, AST, BILI, FEVER]


def _limits_strategy(term):
    lab = ctcae.shipped_table().find(term).lab
    positive = st.floats(min_value=0.01, max_value=500, allow_nan=False)
    if lab.direction == "decreased":
        return st.fixed_dictionaries({"lln": positive})
    if term == FEVER:
        return st.just({})
    return st.fixed_dictionaries({"uln": positive, "baseline": st.one_of(st.none(), positive)})


@st.composite
def _term_limits_and_two_values(draw):
    term = draw(st.sampled_from(LAB_TERMS))
    limits = draw(_limits_strategy(term))
    low_bound = 30.0 if term == FEVER else 0.0
    values = st.floats(min_value=low_bound, max_value=low_bound + 20_000, allow_nan=False)
    a, b = sorted((draw(values), draw(values)))
    return term, limits, a, b


@settings(max_examples=400, deadline=None)
@given(_term_limits_and_two_values())
def test_grade_never_falls_as_a_lab_worsens(case):
    term, limits, lower, higher = case
    lab = ctcae.shipped_table().find(term).lab
    better, worse = (higher, lower) if lab.direction == "decreased" else (lower, higher)
    assert g(term, worse, lab.unit, **limits) >= g(term, better, lab.unit, **limits)


ROUND_TRIPS = [
    (NEUTRO, "10*9/L", "/uL"), (WBC, "10*9/L", "10*3/uL"), (LYMPH, "/uL", "10*9/L"),
    (PLT, "10*9/L", "/uL"), (ANEMIA, "g/dL", "g/L"), (FEVER, "Cel", "[degF]"),
    (CREAT, "mg/dL", "mg/L"), (BILI, "mg/dL", "mg/L"), (ALT, "U/L", "U/L"),
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(ROUND_TRIPS),
    st.integers(min_value=0, max_value=500_000),
    st.integers(min_value=1, max_value=50_000),
    st.one_of(st.none(), st.integers(min_value=1, max_value=50_000)),
)
def test_unit_round_trips_give_the_same_grade(trip, value_cents, ref_cents, baseline_cents):
    term, unit_a, unit_b = trip
    lab = ctcae.shipped_table().find(term).lab
    value = value_cents / 100 + (30 if term == FEVER else 0)
    if lab.direction == "decreased":
        limits = {"lln": ref_cents / 100}
    elif term == FEVER:
        limits = {}
    else:
        limits = {"uln": ref_cents / 100, "baseline": None if baseline_cents is None else baseline_cents / 100}

    def to_b(number):
        return None if number is None else units.convert(number, unit_a, unit_b)

    in_a = ctcae.grade(term, value, unit_a, **limits).grade
    in_b = ctcae.grade(term, to_b(value), unit_b, **{k: to_b(v) for k, v in limits.items()}).grade
    back = units.convert(to_b(value), unit_b, unit_a)
    in_a_again = ctcae.grade(term, back, unit_a, **limits).grade
    assert in_a == in_b == in_a_again


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([(CREAT, 88.4), (BILI, 17.1)]),  # mg/dL -> umol/L, reference/domain.md §1.4, §8.3
    st.integers(min_value=1, max_value=5_000),
    st.integers(min_value=1, max_value=500),
    st.one_of(st.none(), st.integers(min_value=1, max_value=500)),
)
def test_molar_and_mass_units_give_the_same_grade(case, value_cents, uln_cents, baseline_cents):
    term, factor = case
    limits = {"uln": uln_cents / 100, "baseline": None if baseline_cents is None else baseline_cents / 100}
    in_mass = ctcae.grade(term, value_cents / 100, "mg/dL", **limits).grade
    molar = {k: None if v is None else v * factor for k, v in limits.items()}
    assert ctcae.grade(term, value_cents / 100 * factor, "umol/L", **molar).grade == in_mass
