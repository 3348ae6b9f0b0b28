"""Reading protocol files: every malformed case is refused with each problem located at its line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cmvtrial.core.protocol import Protocol
from cmvtrial.core.protocol_parsing import parse_protocol
from cmvtrial.errors import NotFound, ProtocolInvalid
from cmvtrial.protocols import read_shipped_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocols"
MINIMAL = (FIXTURES / "minimal.yaml").read_text(encoding="utf-8")
EXPECT = re.compile(r"^# expect: (\d+) (\S+) \| (.+)$")


def problems_of(text: str, source: str = "p.yaml") -> list[dict[str, str]]:
    with pytest.raises(ProtocolInvalid) as raised:
        parse_protocol(text, source)
    return raised.value.problems


def line_of(text: str, marker: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if marker in line)


def test_the_minimal_fixture_is_valid():
    assert parse_protocol(MINIMAL, "minimal.yaml").id == "minimal-test"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("bad_*.yaml")), ids=lambda p: p.stem)
def test_each_malformed_fixture_reports_exactly_its_planted_problems(path: Path):
    text = path.read_text(encoding="utf-8")
    expected = [EXPECT.match(line).groups() for line in text.splitlines() if EXPECT.match(line)]  # type: ignore[union-attr]
    assert expected, f"{path.name} has no '# expect:' lines"
    problems = problems_of(text, path.name)
    assert len(problems) == len(expected), problems
    for line, dotted, fragment in expected:
        matching = [
            p for p in problems
            if p["location"].startswith(f"{path.name}:{line}:")
            and (dotted == "(top)" or p["location"].endswith(f" {dotted}"))
            and fragment in p["message"]
        ]
        assert matching, f"no problem at line {line} {dotted} with '{fragment}' in {problems}"


# --- the malformed cases, planted in a shipped file ---------------------------------------

SHIPPED_TEXT = read_shipped_text("sle-cmv-il2")
SHIPPED_CASES = [
    pytest.param("    route: subcutaneous             #", "    route: subcutaneous\n        colour: blue #",
                 "colour: blue", "arms.0.regimens.0.colour", "unknown field 'colour'", id="unknown-field"),
    pytest.param("dose: {value: 1, unit: MIU}", "dose: {value: -1, unit: MIU}",
                 "value: -1", "arms.0.regimens.0.dose.value", "greater than 0", id="negative-dose"),
    pytest.param("dose: {value: 1, unit: MIU}", "dose: {value: 0, unit: MIU}",
                 "value: 0, unit: MIU", "arms.0.regimens.0.dose.value", "greater than 0", id="zero-dose"),
    pytest.param("unit: 10^9/L\n        hard_limits: {min: 0}                # source: a count cannot be negative\n        soft_limits: {min: 0.5",
                 "unit: giga-furlongs\n        hard_limits: {min: 0}                # source: a count cannot be negative\n        soft_limits: {min: 0.5",
                 "giga-furlongs", "forms.2.items.0.unit", "unknown unit 'giga-furlongs'", id="unknown-unit"),
    pytest.param('expression: "nyha_class >= 3"', 'expression: "nyha_klass >= 3"',
                 "nyha_klass", "eligibility.7.expression", "'nyha_klass'", id="unknown-name"),
    pytest.param("window: {before_days: 2, after_days: 2}", "window: {before_days: 4, after_days: 4}",
                 "before_days: 4", "visits.2.window", "not narrower", id="window-wider-than-spacing"),
    pytest.param("  - id: EXC7\n", "  - id: EXC6\n", "- id: EXC6\n    kind: exclusion\n    text: Pregnant",
                 "eligibility.13.id", "duplicate criterion id 'EXC6'", id="duplicate-criterion"),
    pytest.param("  - code: W12\n", "  - code: TW\n", "- code: TW\n    name: Week 12",
                 "visits.3.code", "duplicate visit code 'TW'", id="duplicate-visit"),
    pytest.param("  - id: gcv\n", "  - id: il2_gcv\n", "- id: il2_gcv\n    label: Ganciclovir alone",
                 "arms.1.id", "duplicate arm id 'il2_gcv'", id="duplicate-arm"),
    pytest.param("expression: \"diagnosis == 'SLE'\"", "expression: \"diagnosis == 'SLEE'\"",
                 "'SLEE'", "eligibility.0.expression", "'SLEE' is not a code of codelist 'diagnosis'", id="unknown-code"),
    pytest.param("expression: \"18 <= age_years <= 70\"", "expression: \"18 <= age_years <=\"",
                 "age_years <=\"", "eligibility.3.expression", "is not valid", id="expression-syntax"),
]


def _locate_multiline(text: str, marker: str) -> int:
    index = text.index(marker)
    return text.count("\n", 0, index) + 1


@pytest.mark.parametrize(("old", "new", "marker", "dotted", "fragment"), SHIPPED_CASES)
def test_a_planted_problem_in_a_shipped_file_is_located(old, new, marker, dotted, fragment):
    assert old in SHIPPED_TEXT
    text = SHIPPED_TEXT.replace(old, new, 1)
    problems = problems_of(text, "sle.yaml")
    line = _locate_multiline(text, marker)
    wanted = [p for p in problems if p["location"].startswith(f"sle.yaml:{line}:") and p["location"].endswith(f" {dotted}")]
    assert wanted and fragment in wanted[0]["message"], problems


def test_all_problems_are_listed_in_one_run_sorted_by_line():
    text = SHIPPED_TEXT
    for old, new in [
        ("dose: {value: 1, unit: MIU}", "dose: {value: -1, unit: MIU}"),
        ('expression: "nyha_class >= 3"', 'expression: "nyha_klass >= 3"'),
        ("window: {before_days: 2, after_days: 2}", "window: {before_days: 4, after_days: 4}"),
        ("ratio: {il2_gcv: 1, gcv: 1}", "ratio: {il2_gcv: 1, gvc: 1}"),
    ]:
        text = text.replace(old, new, 1)
    problems = problems_of(text)
    lines = [int(p["location"].split(":")[1]) for p in problems]
    assert lines == sorted(lines)
    messages = " | ".join(p["message"] for p in problems)
    for fragment in ("greater than 0", "'nyha_klass'", "not narrower", "unknown arm 'gvc'", "no share to arm 'gcv'"):
        assert fragment in messages


# --- YAML-level problems -------------------------------------------------------------------------


def test_a_yaml_syntax_error_is_one_problem_with_line_and_column():
    problems = problems_of("id: x\ntitle: [unclosed\nversion: '1'\n")
    assert len(problems) == 1
    assert re.match(r"p\.yaml:\d+:\d+$", problems[0]["location"])
    assert problems[0]["message"].startswith("YAML syntax error")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_refused(text):
    problems = problems_of(text)
    assert problems == [{"location": "p.yaml:1:1", "message": "the file must be a YAML mapping of protocol fields"}]


def test_a_key_given_twice_is_a_problem_not_a_silent_override():
    text = MINIMAL.replace("title: Minimal test protocol", "title: Minimal test protocol\ntitle: Other")
    problems = problems_of(text)
    assert [p["message"] for p in problems] == ["key 'title' appears twice in the same mapping"]
    assert problems[0]["location"] == f"p.yaml:{line_of(text, 'title: Other')}:1 title"


def test_a_missing_field_is_located_at_its_mapping():
    text = MINIMAL.replace("    role: experimental\n", "", 1)
    [problem] = problems_of(text)
    assert problem["message"] == "required field 'role' is missing"
    assert problem["location"].endswith(" arms.0.role")


def test_a_wrong_type_is_located():
    text = MINIMAL.replace('version: "0.1"', "version: 0.1")
    [problem] = problems_of(text)
    assert problem["location"] == f"p.yaml:{line_of(text, 'version: 0.1')}:10 version"
    assert "string" in problem["message"]


# --- cross-part checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ("ratio: {active: 1, control: 1}", "ratio: {active: 1, contrl: 1}", "ratio names unknown arm 'contrl'"),
        ("ratio: {active: 1, control: 1}", "ratio: {active: 1}", "ratio gives no share to arm 'control'"),
        ("block_sizes: [2, 4]", "block_sizes: [2, 3]", "block sizes [3] are not multiples of the ratio sum 2"),
        ("strata: [site]", "strata: [region]", "factor 'region' is not 'site'"),
        ("strata: [site]", "strata: [screening_date]", "factor 'screening_date' needs levels"),
        ("strata: [site]", "strata: [site, site]", "duplicate factor 'site'"),
        ("forms: [labs]}", "forms: [lab]}", "names unknown form 'lab' (did you mean 'labs'?)"),
        ("inputs: [birth_date, screening_date]", "inputs: [birth_day, screening_date]", "input 'birth_day'"),
        ("inputs: [birth_date, screening_date]", "inputs: [sex, screening_date]", "is a code item; method needs date"),
        ("inputs: [birth_date, screening_date]", "inputs: [birth_date]", "takes 2 inputs"),
        ("{name: age_years,", "{name: sex,", "has the name of a screening item"),
        ("codelist: sex}", "codelist: gender}", "unknown codelist 'gender'"),
        ("{code: M, label: Male}", "{code: F, label: Male}", "duplicate code 'F'"),
        ("{id: anc, type", "{id: anc, loinc: 751-9, type", "wrong check digit"),
        ("{id: anc, type", "{id: and, type", "reserved word"),
        ("{id: anc, type: quantity, unit: 10^9/L, hard_limits: {min: 0}}",
         "{id: anc, type: quantity, unit: 10^9/L, hard_limits: {min: 0}, soft_limits: {min: -1}}", "soft min -1.0 is below hard min 0.0"),
        ("{id: anc, type: quantity, unit: 10^9/L, hard_limits: {min: 0}}", "{id: anc, type: quantity, hard_limits: {min: 0}}",
         "needs a unit"),
        ("{id: sex, type: code, codelist: sex}", "{id: sex, type: code}", "name a codelist"),
        ("{id: sex, type: code, codelist: sex}", "{id: sex, type: group}", "hold items"),
        ("alternative_units: [{unit: IU/mL, factor: 1.1}]", "alternative_units: [{unit: IU/mL, factor: 1.2}]",
         "differs from the assay's iu_to_copies_factor 1.1"),
        ("alternative_units: [{unit: IU/mL, factor: 1.1}]", "alternative_units: [{unit: copies/mL, factor: 1.1}]",
         "is the item's own unit"),
        ("alternative_units: [{unit: IU/mL, factor: 1.1}]", "alternative_units: [{unit: IU/mL, factor: 1.1, divisor: 2}]",
         "disagree"),
        ("{id: anc, type: quantity, unit: 10^9/L,", "{id: anc, type: quantity, unit: 10^9/L, alternative_units: [{unit: /uL, factor: 0.001}],",
         "converts to 10*9/L by its dimension"),
        ("stop: {rule: cmv_negativity}\n  - id: control", "stop: {rule: fixed_days}\n  - id: control", "fixed_days needs days"),
        ("frequency: {every_hours: 24}\n        start: {anchor: randomization}\n        stop: {rule: cmv_negativity}\n  - id: control",
         "frequency: {every_hours: 24, every_days: 1}\n        start: {anchor: randomization}\n        stop: {rule: cmv_negativity}\n  - id: control",
         "exactly one of"),
        ("dose_basis: actual_body_weight", "dose_basis: flat", "disagree"),
        ("prednisone_equivalence: {prednisone: 1.0}", "prednisone_equivalence: {prednisone: -1.0}", "greater than 0"),
        ("min_age_years: 18, max_age_years: 70", "min_age_years: 80, max_age_years: 70", "above max_age_years"),
        ("repeat: {every_days: 7, first_day: 7, until: cmv_negative}", "day: 3\n    repeat: {every_days: 7, first_day: 7, until: cmv_negative}",
         "either day or repeat"),
        ("source: test, analysis", "source: test, measures: [labs.wbc], visits: [W99], analysis", "measure 'labs.wbc'"),
        ("source: test, analysis", "source: test, visits: [W99], analysis", "unknown visit 'W99'"),
        ("lloq: {value: 137, unit: IU/mL}", "lloq: {value: 137, unit: mg/dL}", "cannot be expressed in copies/mL"),
        ("schema_version: 1", "schema_version: 2", "Input should be 1"),
    ],
)
def test_cross_and_part_problems_are_refused(old, new, fragment):
    assert old in MINIMAL, old
    problems = problems_of(MINIMAL.replace(old, new, 1))
    assert any(fragment in p["message"] for p in problems), problems


def test_edit_checks_and_holds_name_items_of_their_form():
    text = MINIMAL.replace(
        "codelists:",
        'edit_checks:\n  - {id: E1, form: labs, expression: "anc < wbc", message: m, severity: soft}\n'
        '  - {id: E2, form: lab, expression: "anc > 0", message: m, severity: soft}\ncodelists:',
    ).replace(
        "        stop: {rule: cmv_negativity}\n  - id: control",
        '        stop: {rule: cmv_negativity}\n        holds: [{id: H1, form: labs, expression: "platelets < 25", reason: r}]\n  - id: control',
    )
    messages = [p["message"] for p in problems_of(text)]
    assert any("'wbc', which is not an item of form 'labs'" in m for m in messages)
    assert any("unknown form 'lab'" in m for m in messages)
    assert any("'platelets', which is not an item of form 'labs'" in m for m in messages)


def test_the_steroid_table_must_cover_every_corticosteroid_code():
    text = SHIPPED_TEXT.replace("    betamethasone: 6.67 ", "    # betamethasone removed ", 1)
    messages = [p["message"] for p in problems_of(text)]
    assert messages == ["no prednisone factor for corticosteroid code 'betamethasone'"]


@given(st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_damaged_file_gives_a_protocol_error_never_a_traceback(data):
    lines = MINIMAL.splitlines()
    index = data.draw(st.integers(0, len(lines) - 1))
    replacement = data.draw(st.sampled_from(["", "  x: 1", "- -", "{", "key: [1, 2", "  id: 5", "\t", "a: b: c"]))
    damaged = "\n".join([*lines[:index], replacement, *lines[index + 1:]])
    try:
        parse_protocol(damaged, "damaged.yaml")
    except ProtocolInvalid as error:
        assert error.problems and all(p["location"].startswith("damaged.yaml") for p in error.problems)


# --- the model used directly --------------------------------------------------------------------


def test_constructing_the_model_directly_runs_the_cross_checks_too():
    import yaml

    data = yaml.safe_load(MINIMAL.replace('expression: "cmv_dna > 1000"', 'expression: "cmv_dnaa > 1000"'))
    with pytest.raises(ValidationError, match="eligibility.1.expression: expression names 'cmv_dnaa'"):
        Protocol.model_validate(data)


def test_models_are_frozen():
    protocol = parse_protocol(MINIMAL)
    with pytest.raises(ValidationError):
        protocol.title = "changed"  # type: ignore[misc]


def test_accessors():
    protocol = parse_protocol(MINIMAL)
    assert protocol.arm("active").label == "Active"
    assert protocol.form("labs").name == "Laboratory"
    assert protocol.visit("TW").repeat.every_days == 7  # type: ignore[union-attr]
    assert protocol.criterion("INC2").compiled.names == frozenset({"cmv_dna"})
    assert [c.id for c in protocol.criteria] == ["INC1", "INC2"]
    assert protocol.derived_value_names == frozenset({"age_years", "cmv_copies"})
    assert protocol.derived_value("age_years").method == "age_in_years"
    assert protocol.codelist("sex").codes == ("F", "M")
    assert protocol.endpoint("clearance").kind == "primary"
    assert protocol.item_ids("screening") == ("screening_date", "birth_date", "sex", "cmv_dna")
    assert protocol.item("labs", "anc").unit == "10*9/L"
    assert protocol.screening.id == "screening"
    assert protocol.assay.cmv_dna.in_primary_unit(protocol.assay.cmv_dna.lloq) == pytest.approx(150.7)
    with pytest.raises(NotFound, match="no arm 'placebo'; known: active, control"):
        protocol.arm("placebo")
    with pytest.raises(NotFound, match="no item 'wbc'"):
        protocol.item("labs", "wbc")


def test_the_json_schema_describes_the_file():
    schema = Protocol.model_json_schema()
    assert schema["additionalProperties"] is False
    assert {"arms", "eligibility", "visits", "forms", "randomization", "endpoints", "assay"} <= set(schema["properties"])
    assert "Item" in schema["$defs"] and "Regimen" in schema["$defs"]
