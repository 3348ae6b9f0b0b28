"""`cmvtrial eligibility check` and `cmvtrial randomization list` through the real CLI (CliRunner).

Exit codes (issue 3): 0 eligible, 1 not eligible, 3 undetermined, 2 bad input with the field named.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app
from cmvtrial.core.randomization import UNSTRATIFIED
from cmvtrial.protocols import load_shipped_protocol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
runner = CliRunner()
PROTOCOLS = ["sle-cmv-il2", "nct04225780"]


def invoke(*args, stdin=None):
    return runner.invoke(app, list(args), prog_name="cmvtrial", input=stdin)


def check(protocol, fixture, *extra):
    return invoke("eligibility", "check", "--protocol", protocol, str(FIXTURES / fixture), *extra)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("fixture", "code", "eligible"),
    [
        ("eligible.json", 0, True),
        ("eligible_iu_mg_dl.json", 0, True),
        ("not_eligible_nyha3.json", 1, False),
        ("undetermined_no_creatinine.json", 3, None),
    ],
)
def test_exit_code_and_json_verdict(protocol, fixture, code, eligible):
    result = check(protocol, fixture, "--json")
    assert result.exit_code == code, result.output
    data = json.loads(result.stdout)
    assert data["eligible"] is eligible
    assert set(data) == {"eligible", "criteria", "derived"}
    for criterion in data["criteria"]:
        assert {"id", "kind", "text", "verdict", "values"} <= set(criterion)
        assert criterion["verdict"] in {"met", "not_met", "unknown"}
    assert len(data["criteria"]) == len(load_shipped_protocol(protocol)[0].eligibility)


def test_the_json_names_the_reason_and_the_missing_key():
    not_eligible = json.loads(check("nct04225780", "not_eligible_nyha3.json", "--json").stdout)
    failing = [c for c in not_eligible["criteria"] if c["kind"] == "exclusion" and c["verdict"] == "met"]
    assert [c["values"] for c in failing] == [{"nyha_class": 3}]
    undetermined = json.loads(check("nct04225780", "undetermined_no_creatinine.json", "--json").stdout)
    unknown = [c for c in undetermined["criteria"] if c["verdict"] == "unknown"]
    assert [c["missing"] for c in unknown] == [["serum_creatinine"]]
    assert undetermined["derived"]["creatinine_clearance_ml_min"]["value"] is None


def test_the_table_shows_each_criterion_and_the_verdict():
    result = check("sle-cmv-il2", "undetermined_no_creatinine.json")
    assert result.exit_code == 3
    for text in ("INC1", "EXC7", "UNDETERMINED", "serum_creatinine", "creatinine_clearance_ml_min"):
        assert text in result.stdout
    assert "ELIGIBLE" in check("sle-cmv-il2", "eligible.json").stdout
    assert "NOT ELIGIBLE: EXC4a" in check("nct04225780", "not_eligible_nyha3.json").stdout


def test_the_record_can_come_from_stdin():
    text = (FIXTURES / "eligible.json").read_text(encoding="utf-8")
    result = invoke("eligibility", "check", "--protocol", "nct04225780", "-", "--json", stdin=text)
    assert result.exit_code == 0 and json.loads(result.stdout)["eligible"] is True


@pytest.mark.parametrize(
    ("fixture", "fragment"),
    [
        ("bad_malformed.json", "malformed JSON at line 3"),
        ("bad_negative_weight.json", "weight_kg"),
        ("bad_screening_before_birth.json", "screening_date"),
        ("bad_unknown_unit.json", "cmv_dna.unit"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_field(fixture, fragment):
    result = check("nct04225780", fixture)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_a_value_outside_the_protocol_hard_limits_exits_2(tmp_path):
    record = json.loads((FIXTURES / "eligible.json").read_text(encoding="utf-8"))
    record["weight_kg"] = 900
    path = tmp_path / "heavy.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    result = invoke("eligibility", "check", "--protocol", "nct04225780", str(path))
    assert result.exit_code == 2 and "out_of_range" in result.stderr and "weight_kg" in result.stderr


def test_a_missing_file_and_an_unknown_protocol_are_refused(tmp_path):
    missing = invoke("eligibility", "check", "--protocol", "nct04225780", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "nope.json" in missing.stderr
    unknown = check("no-such-protocol", "eligible.json")
    assert unknown.exit_code == 1 and "no-such-protocol" in unknown.stderr


# ----------------------------------------------------------------------------- randomization


def list_json(*args):
    result = invoke("randomization", "list", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_list_uses_the_protocol_settings_and_is_reproducible(protocol):
    settings = load_shipped_protocol(protocol)[0].randomization
    entries = list_json("--protocol", protocol, "--seed", "s3cret", "--n", "60", "--stratum", "site-01")
    assert entries == list_json("--protocol", protocol, "--seed", "s3cret", "--n", "60", "--stratum", "site-01")
    assert [e["sequence"] for e in entries] == list(range(1, 61))
    assert all(set(e) == {"sequence", "stratum", "block", "block_size", "arm"} for e in entries)
    assert {e["stratum"] for e in entries} == {"site-01"}
    assert {e["block_size"] for e in entries} <= set(settings.block_sizes)
    assert {e["arm"] for e in entries} == set(settings.ratio)
    blocks: dict[int, list[dict]] = {}
    for entry in entries:
        blocks.setdefault(entry["block"], []).append(entry)
    total = sum(settings.ratio.values())
    for block in blocks.values():
        size = block[0]["block_size"]
        if len(block) == size:
            counts = Counter(e["arm"] for e in block)
            assert counts == {arm: weight * size // total for arm, weight in settings.ratio.items()}


def test_a_minimization_protocol_has_no_list(tmp_path):
    text = load_shipped_protocol("nct04225780")[1]
    assert "  method: permuted_blocks" in text
    path = tmp_path / "minimized.yaml"
    path.write_text(
        text.replace(
            "  method: permuted_blocks",
            "  method: minimization\n  factors: [site]\n  preferred_arm_probability: 0.8",
            1,
        ),
        encoding="utf-8",
    )
    result = invoke("randomization", "list", "--protocol", str(path), "--seed", "s", "--n", "4")
    assert result.exit_code == 2, result.output
    assert "minimization" in result.stderr


def test_strata_and_seeds_give_different_lists_and_the_default_stratum():
    base = list_json("--protocol", "sle-cmv-il2", "--seed", "a", "--n", "40")
    assert {e["stratum"] for e in base} == {UNSTRATIFIED}
    other = list_json("--protocol", "sle-cmv-il2", "--seed", "a", "--n", "40", "--stratum", "site-02")
    assert [e["arm"] for e in base] != [e["arm"] for e in other]


def test_the_list_as_a_table():
    result = invoke("randomization", "list", "--protocol", "nct04225780", "--seed", "x", "--n", "4")
    assert result.exit_code == 0
    assert "sequence" in result.stdout and "block size" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--n", "-1"], "n"),
        (["--n", "ten"], "--n"),
        (["--seed", ""], "seed"),
        (["--stratum", ""], "stratum"),
    ],
)
def test_bad_list_parameters_exit_2(args, fragment):
    base = {"--protocol": "nct04225780", "--seed": "s", "--n": "4"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [part for pair in base.items() for part in pair]
    result = invoke("randomization", "list", *flat, "--json")
    assert result.exit_code == 2
    assert fragment in result.stderr or fragment in result.output
    assert "Traceback" not in result.output
