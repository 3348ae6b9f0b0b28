"""`cmvtrial protocol list | show | validate | schema` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app
from cmvtrial.protocols import read_shipped_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "protocols"
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_list_shows_both_protocols_with_arms_and_size():
    result = run("protocol", "list")
    assert result.exit_code == 0, result.output
    for expected in ("sle-cmv-il2", "nct04225780", "il2_gcv, gcv", "100", "10", "1.0"):
        assert expected in result.output


@pytest.mark.parametrize("protocol_id", ["sle-cmv-il2", "nct04225780"])
def test_show_summarises_arms_criteria_visits_forms_endpoints(protocol_id):
    result = run("protocol", "show", protocol_id)
    assert result.exit_code == 0, result.output
    for expected in ("Arms", "Eligibility", "Visits", "Forms", "Endpoints", "ganciclovir 5 mg/kg/day intravenous",
                     "creatinine_clearance_ml_min <= 30", "FU3M", "end_of_treatment", "screening"):
        assert expected in result.output


def test_show_distinguishes_every_other_day_from_daily():
    assert "interleukin-2 1 [MIU] subcutaneous every 2 days" in run("protocol", "show", "sle-cmv-il2").output
    assert "interleukin-2 1 [MIU] subcutaneous daily" in run("protocol", "show", "nct04225780").output


def test_show_json_is_the_full_model():
    result = run("protocol", "show", "nct04225780", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["id"] == "nct04225780" and data["population"]["target_enrollment"] == 10
    assert data["randomization"]["ratio"] == {"il2_gcv": 1, "gcv": 1}


def test_show_an_unknown_protocol_is_a_one_line_refusal():
    result = run("protocol", "show", "no-such-protocol")
    assert result.exit_code == 1
    assert "neither a protocol file nor a shipped protocol id" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("protocol_id", ["sle-cmv-il2", "nct04225780"])
def test_validate_a_shipped_id(protocol_id):
    result = run("protocol", "validate", protocol_id)
    assert result.exit_code == 0
    assert result.output.strip() == f"valid: {protocol_id} 1.0"


def test_validate_a_file(tmp_path):
    path = tmp_path / "draft.yaml"
    path.write_text(read_shipped_text("nct04225780"), encoding="utf-8")
    result = run("protocol", "validate", str(path))
    assert result.exit_code == 0 and result.output.strip() == "valid: nct04225780 1.0"


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("bad_*.yaml")), ids=lambda p: p.stem)
def test_validate_a_malformed_file_exits_2_listing_every_problem(path):
    result = run("protocol", "validate", str(path))
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("error [protocol_invalid]:")
    expected = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# expect:")]
    problem_lines = lines[1:]
    assert len(problem_lines) == len(expected)
    for expectation in expected:
        line = expectation.split()[2]
        assert any(f"{path}:{line}:" in problem for problem in problem_lines), (expectation, problem_lines)


def test_validate_a_file_that_cannot_be_read(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"title: \xff\xfe\n")
    result = run("protocol", "validate", str(path))
    assert result.exit_code == 2
    assert "cannot read protocol file" in result.output


def test_schema_prints_the_json_schema():
    result = run("protocol", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["title"] == "Protocol" and "eligibility" in schema["properties"]


def test_protocol_without_a_subcommand_shows_help():
    result = run("protocol")
    assert "list" in result.output and "validate" in result.output and "schema" in result.output
