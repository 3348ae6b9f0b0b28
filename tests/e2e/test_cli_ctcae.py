"""`cmvtrial ctcae grade` and `cmvtrial ctcae terms` through the real CLI (CliRunner)."""

import json

import pytest
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["ctcae", *args], prog_name="cmvtrial")


def test_grade_as_json_has_exactly_term_grade_and_criterion():
    result = invoke("grade", "--term", "Neutrophil count decreased", "--value", "800", "--unit", "cells/uL",
                    "--lln", "1800", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "term": "Neutrophil count decreased",
        "grade": 3,
        "criterion": "<1000 - 500/mm3; <1.0 - 0.5 x 10e9 /L",
    }


def test_grade_zero_when_no_criterion_is_met():
    result = invoke("grade", "--term", "Platelet count decreased", "--value", "210", "--unit", "10^9/L",
                    "--lln", "150", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["grade"] == 0


@pytest.mark.parametrize(
    ("args", "grade"),
    [
        (["--term", "Fever", "--value", "38.0", "--unit", "°C"], 1),
        (["--term", "Fever", "--value", "104.1", "--unit", "°F"], 3),
        (["--term", "Anemia", "--value", "79", "--unit", "g/L", "--lln", "120"], 3),
        (["--term", "Creatinine increased", "--value", "160", "--unit", "umol/L", "--uln", "106"], 2),
        (["--term", "ALT increased", "--value", "75", "--unit", "U/L", "--uln", "40", "--baseline", "50"], 1),
        (["--term", "Blood bilirubin increased", "--value", "30.1", "--unit", "umol/L", "--uln", "20",
          "--baseline", "30"], 1),
    ],
)
def test_grade_through_units_and_baselines(args, grade):
    result = invoke("grade", *args, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["grade"] == grade


def test_grade_prints_the_grade_the_criterion_and_the_reasons():
    result = invoke("grade", "--term", "anemia", "--value", "7.5", "--unit", "g/dL")
    assert result.exit_code == 0
    assert "Anemia (MedDRA 10002272): grade 3" in result.stdout
    assert "criterion: Hgb <8.0 g/dL" in result.stdout
    assert "clinical judgement" in result.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--term", "Neutrophil count decrease", "--value", "1", "--unit", "10^9/L"], "unknown CTCAE v5.0 term"),
        (["--term", "Fever", "--value", "38", "--unit", "furlongs"], "unknown unit"),
        (["--term", "Fever", "--value", "38", "--unit", "g/L"], "[unit_error]"),
        (["--term", "Platelet count decreased", "--value", "-1", "--unit", "10^9/L"], "cannot be below 0"),
        (["--term", "ALT increased", "--value", "90", "--unit", "U/L"], "upper limit of normal"),
        (["--term", "Injection site reaction", "--value", "1", "--unit", "g/L"], "graded by the investigator"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, words):
    result = invoke("grade", *args)
    assert result.exit_code == 2
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_a_value_that_is_not_a_number_exits_2():
    assert invoke("grade", "--term", "Fever", "--value", "hot", "--unit", "Cel").exit_code == 2


def test_terms_lists_every_term_with_its_meddra_code():
    result = invoke("terms")
    assert result.exit_code == 0
    assert "Neutrophil count decreased" in result.stdout and "10029366" in result.stdout
    assert "Flu like symptoms" in result.stdout and "investigator" in result.stdout


def test_terms_as_json():
    rows = json.loads(invoke("terms", "--json").stdout)
    by_term = {r["term"]: r for r in rows}
    assert by_term["Creatinine increased"]["units"] == ["mg/dL", "umol/L"]
    assert by_term["Injection site reaction"]["graded_from"] == "investigator"
    assert len(rows) == 12
