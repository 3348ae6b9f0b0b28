"""`cmvtrial analyze tte` through the real CLI: R's numbers on R's datasets, and every bad input.

Reference: ``Rscript tests/reference/survival/make_reference.R`` — survfit (conf.type as asked),
survdiff and coxph (Efron ties; ``+ strata(strata)`` when --strata is given) on the committed CSV
files, the arm releveled to the reference. Asserted to 1e-6 relative.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli.main import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from r_reference import REFERENCE, assert_close, load  # noqa: E402

CLEAN = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["analyze", "tte", *args], env=CLEAN, catch_exceptions=False)


@pytest.mark.parametrize(
    ("name", "stratified", "km_ci"),
    [("trial", True, "log"), ("trial", False, "log-log"), ("lung", False, "log"), ("veteran", True, "plain"),
     ("ovarian", False, "log")],
)
def test_json_equals_r(name, stratified, km_ci):
    """R: survfit(Surv(time, event) ~ arm, conf.type = km_ci); survdiff(... [+ strata(strata)]);
    coxph(Surv(time, event) ~ arm [+ strata(strata)], ties = "efron")."""
    ref = load("survival")[name]
    args = [str(REFERENCE / "survival" / f"{name}.csv"), "--time", "time", "--event", "event", "--arm", "arm",
            "--reference", ref["reference"], "--km-ci", km_ci, "--json"]
    if stratified:
        args += ["--strata", "strata"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["km", "logrank", "cox"]
    assert list(out["km"]) == ref["arms"]
    for arm, summary in out["km"].items():
        expected = ref["km"][km_ci][arm]
        assert set(summary) == {"n", "events", "median", "median_ci"}
        assert (summary["n"], summary["events"]) == (expected["n"], expected["events"])
        assert_close([summary["median"], *summary["median_ci"]], [expected["median"], expected["lcl"], expected["ucl"]],
                     what=arm)
    logrank = ref["logrank_stratified" if stratified else "logrank"]
    assert_close([out["logrank"]["chisq"], out["logrank"]["p"]], [logrank["chisq"], logrank["p"]], what="logrank")
    cox = ref["cox"]["efron_stratified" if stratified else "efron"]
    assert set(out["cox"]) == {"coef", "se", "hr", "hr_ci", "p"}
    assert_close([out["cox"]["coef"], out["cox"]["se"], out["cox"]["hr"], *out["cox"]["hr_ci"], out["cox"]["p"]],
                 [cox["coef"], cox["se"], cox["hr"], cox["hr_lower"], cox["hr_upper"], cox["p"]], what="cox")


def test_not_reached_is_null():
    result = run(str(REFERENCE / "survival" / "ovarian.csv"), "--time", "time", "--event", "event", "--arm", "arm",
                 "--reference", "A", "--json")
    out = json.loads(result.stdout)
    assert out["km"]["B"]["median"] is None and out["km"]["A"]["median_ci"][1] is None


def test_the_table_names_the_tests_and_the_arms():
    result = run(str(REFERENCE / "survival" / "trial.csv"), "--time", "time", "--event", "event", "--arm", "arm",
                 "--strata", "strata", "--reference", "control")
    assert result.exit_code == 0, result.output
    assert "Kaplan-Meier median" in result.stdout and "il2" in result.stdout and "control" in result.stdout
    assert "Stratified log-rank test: chi-square" in result.stdout
    assert "hazard ratio" in result.stdout and "il2 vs control" in result.stdout


GOOD = "t,e,arm,s\n3,1,a,x\n5,0,a,y\n8,1,b,x\n2,1,b,y\n9,1,a,x\n4,0,b,y\n"


@pytest.mark.parametrize(
    ("csv", "options", "message"),
    [
        (GOOD, ["--time", "days"], "column 'days' is not in the table"),
        (GOOD, ["--strata", "site"], "column 'site' is not in the table"),
        (GOOD.replace("5,0,a", "x,0,a"), [], "t must be numeric; row 2 holds 'x'"),
        (GOOD.replace("5,0,a", "-5,0,a"), [], "t must not be negative; row 2 holds -5"),
        (GOOD.replace("5,0,a", "5,2,a"), [], r"e must be 0 \(censored\) or 1 \(event\); row 2 holds 2"),
        (GOOD.replace(",b,", ",a,"), [], "arm has a single value \\('a'\\)"),
        (GOOD.replace("9,1,a", "9,1,c"), [], "arm has 3 values"),
        (GOOD, ["--reference", "z"], "reference 'z' is not a value of arm"),
        (GOOD, ["--km-ci", "arcsin"], "unknown --km-ci 'arcsin'"),
        (GOOD.replace("5,0,a", "5,,a"), [], "e is missing in row 2"),
        ("t,e,arm\n", [], "the table has no rows"),
        ("", [], "is empty"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(tmp_path, csv, options, message):
    path = tmp_path / "data.csv"
    path.write_text(csv)
    result = run(str(path), "--time", "t", "--event", "e", "--arm", "arm", *options)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error [invalid_input]: ")
    assert __import__("re").search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output


def test_a_missing_file_exits_2(tmp_path):
    result = run(str(tmp_path / "nothing.csv"), "--time", "t", "--event", "e", "--arm", "arm")
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_a_folder_is_not_a_csv(tmp_path):
    result = run(str(tmp_path), "--time", "t", "--event", "e", "--arm", "arm")
    assert result.exit_code == 2 and "is a directory" in result.stderr


def test_missing_required_options_exit_2():
    result = run(str(REFERENCE / "survival" / "trial.csv"), "--time", "time")
    assert result.exit_code == 2 and "--event" in result.output
