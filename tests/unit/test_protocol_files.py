"""The shipped protocol files: both load, round-trip, carry a source for every number, and say
what the seed records say (issue 2 item 3, issue 3 eligibility)."""

from __future__ import annotations

import ast

import pytest
import yaml

from cmvtrial.core.protocol import Protocol
from cmvtrial.core.protocol_parsing import parse_protocol
from cmvtrial.protocols import load_protocol, load_shipped_protocol, read_shipped_text, shipped_ids

SHIPPED = ["nct04225780", "sle-cmv-il2"]
#: The keys of issue 3's screening record; the screening form's items must be exactly these.
SCREENING_KEYS = (
    "screening_date birth_date sex weight_kg diagnosis cmv_dna serum_creatinine alt ast alt_uln ast_uln "
    "total_bilirubin total_bilirubin_uln corticosteroid nyha_class other_infections il2_allergy malignancy "
    "uncontrolled_psychiatric pregnant_or_breastfeeding severe_comorbidities"
).split()


@pytest.fixture(params=SHIPPED)
def shipped(request: pytest.FixtureRequest) -> tuple[Protocol, str]:
    return load_shipped_protocol(request.param)


def test_both_seed_protocols_are_shipped():
    assert shipped_ids() == SHIPPED


def test_each_loads_with_its_text(shipped):
    protocol, text = shipped
    assert text == read_shipped_text(protocol.id)
    assert protocol.schema_version == 1 and protocol.version


def test_load_protocol_takes_an_id_or_a_path(tmp_path):
    path = tmp_path / "copy.yaml"
    path.write_text(read_shipped_text("sle-cmv-il2"), encoding="utf-8")
    from_file, text = load_protocol(path)
    assert from_file == load_protocol("sle-cmv-il2")[0]
    assert text == read_shipped_text("sle-cmv-il2")


def test_round_trip_through_json_and_yaml(shipped):
    protocol, _ = shipped
    dumped = protocol.model_dump(mode="json")
    assert Protocol.model_validate(dumped) == protocol
    assert parse_protocol(yaml.safe_dump(dumped, allow_unicode=True), "dump.yaml") == protocol
    assert Protocol.model_validate_json(protocol.model_dump_json()) == protocol


def test_every_number_names_its_source(shipped):
    """Every numeric value in the file sits on a line whose comment names a source."""
    _, text = shipped
    lines = text.splitlines()
    unsourced = []

    def walk(node: yaml.Node) -> None:
        if isinstance(node, yaml.ScalarNode):
            if node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
                line = lines[node.start_mark.line]
                if "# source:" not in line:
                    unsourced.append(f"{node.start_mark.line + 1}: {line.strip()}")
        elif isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                walk(key)
                walk(child)
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                walk(child)

    walk(yaml.compose(text, Loader=yaml.SafeLoader))
    assert unsourced == []


def test_numbers_inside_expressions_name_their_source_too(shipped):
    protocol, text = shipped
    expressions = [criterion.expression for criterion in protocol.criteria]
    expressions += [check.expression for check in protocol.edit_checks]
    expressions += [hold.expression for arm in protocol.arms for regimen in arm.regimens for hold in regimen.holds]
    for expression in expressions:
        numbers = [
            node for node in ast.walk(ast.parse(expression, mode="eval"))
            if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        ]
        if numbers:
            for line in (line for line in text.splitlines() if expression in line):
                assert "# source:" in line, expression


def test_screening_form_items_are_the_screening_record_keys(shipped):
    protocol, _ = shipped
    assert sorted(protocol.item_ids("screening")) == sorted(SCREENING_KEYS)
    assert protocol.item("screening", "corticosteroid.drug").codelist == "corticosteroid"
    assert protocol.item("screening", "corticosteroid.daily_dose_mg").unit == "mg"


def test_units_are_stored_as_ucum_codes(shipped):
    protocol, _ = shipped
    cmv = protocol.item("screening", "cmv_dna")
    assert cmv.unit == "copies/mL"
    assert [(alt.unit, alt.factor) for alt in cmv.alternative_units] == [("[IU]/mL", protocol.assay.cmv_dna.iu_to_copies_factor)]
    creatinine = protocol.item("screening", "serum_creatinine").alternative_units[0]
    assert creatinine.unit == "umol/L" and creatinine.to_primary(88.4) == 1.0


def test_arms_and_regimens_follow_the_records():
    sle, _ = load_shipped_protocol("sle-cmv-il2")
    nct, _ = load_shipped_protocol("nct04225780")
    il2_sle = sle.arm("il2_gcv").regimens[0]
    il2_nct = nct.arm("il2_gcv").regimens[0]
    assert (il2_sle.drug, il2_sle.dose.value, il2_sle.dose.unit, il2_sle.route) == ("interleukin-2", 1, "[MIU]", "subcutaneous")
    assert il2_sle.frequency.every_days == 2  # every other day (seed 000)
    assert il2_nct.frequency.every_days == 1  # daily (seed 001)
    for protocol in (sle, nct):
        gcv = protocol.arm("gcv").regimens[0]
        assert (gcv.dose.value, gcv.dose.unit, gcv.dose.per, gcv.dose_basis) == (5, "mg/kg", "day", "actual_body_weight")
        assert gcv.stop.rule == "cmv_negativity" and gcv.infusion_minutes == 60
        assert [regimen.drug for regimen in protocol.arm("il2_gcv").regimens] == ["interleukin-2", "ganciclovir"]
        assert protocol.arm("gcv").role == "active_comparator"
        assert protocol.randomization.ratio == {"il2_gcv": 1, "gcv": 1}
        assert protocol.design.allocation == "randomized" and protocol.design.masking == "none"
    assert nct.arm("gcv").registry_group_type == "Placebo Comparator"
    assert any("Non-Randomized" in note for note in nct.design.notes)
    assert (sle.population.target_enrollment, nct.population.target_enrollment) == (100, 10)
    assert sle.randomization.block_sizes == (2, 4, 6)


def test_eligibility_follows_issue_3():
    sle, _ = load_shipped_protocol("sle-cmv-il2")
    nct, _ = load_shipped_protocol("nct04225780")
    assert sle.criterion("INC1").expression == "diagnosis == 'SLE'"
    assert "RA" in nct.criterion("INC1").expression and "none" not in nct.criterion("INC1").expression
    for protocol in (sle, nct):
        expressions = {criterion.id: criterion.expression for criterion in protocol.criteria}
        assert expressions["INC2"] == "cmv_dna_copies_per_ml > 1000"
        assert expressions["INC3"] == "prednisone_equivalent_mg_per_kg_day < 1.0"
        assert expressions["INC4"] == "18 <= age_years <= 70"
        assert expressions["EXC4a"] == "nyha_class >= 3"
        assert expressions["EXC4b"] == "creatinine_clearance_ml_min <= 30"
        assert expressions["EXC4c"] == "alt_x_uln > 3 or ast_x_uln > 3 or total_bilirubin_x_uln > 1"
        assert {c.id for c in protocol.criteria if c.kind == "exclusion"} >= {"EXC1", "EXC2", "EXC3", "EXC5", "EXC6", "EXC7"}


def test_visits_follow_the_design():
    for protocol_id in SHIPPED:
        protocol, _ = load_shipped_protocol(protocol_id)
        weekly = protocol.visit("TW")
        assert weekly.repeat is not None and weekly.repeat.every_days == 7 and weekly.repeat.until == "cmv_negative"
        assert protocol.visit("W12").day == 84 and protocol.visit("W12").anchor == "randomization"
        assert protocol.visit("FU3M").anchor == "end_of_treatment" and protocol.visit("FU3M").day == 90
    sle, _ = load_shipped_protocol("sle-cmv-il2")
    nct, _ = load_shipped_protocol("nct04225780")
    assert "sledai" in sle.visit("BL").forms
    assert "sledai" not in {form.id for form in nct.forms}


def test_loinc_codes_come_from_the_reference_table(shipped):
    """Only codes listed in reference/domain.md §9 (checked by hand when written; frozen here)."""
    reference_codes = {
        "30247-1", "29463-7", "2160-0", "1742-6", "1920-8", "1975-2", "6690-2", "751-8", "731-0", "777-3",
        "718-7", "8302-2", "8122-4", "8124-0", "24467-3", "8123-2", "14135-8", "8101-8", "54218-3", "8116-6",
        "8117-4", "20402-4", "18267-5", "2465-3", "2458-8", "2472-9", "4485-9", "4498-2", "27415-9", "3074-2",
    }
    protocol, _ = shipped
    used = {item.loinc for form in protocol.forms for _, item in form.item_paths().items() if item.loinc}
    assert used <= reference_codes
    assert protocol.item("lymphocyte_subsets", "nk_abs").loinc == "20402-4"


def test_endpoints_cover_every_seed_outcome():
    sle, _ = load_shipped_protocol("sle-cmv-il2")
    nct, _ = load_shipped_protocol("nct04225780")
    assert {e.id for e in sle.endpoints} == {
        "duration_viremia", "nk_change", "cmv_titer_change", "immune_responses", "complement_levels", "adverse_events"
    }
    assert sle.endpoint("nk_change").time_frame == "Baseline and week 12"
    assert {e.id for e in nct.endpoints} >= {"time_to_cmv_negativity", "innate_immune_response",
                                            "adaptive_immune_response", "rescue_ganciclovir"}
    for protocol in (sle, nct):
        assert [e.kind for e in protocol.endpoints].count("primary") == 1
