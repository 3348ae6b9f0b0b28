"""`cmvtrial simulate trial` and `cmvtrial simulate power` through the real CLI (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli.main import app

CLEAN = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["simulate", *args], env=CLEAN, catch_exceptions=False)


def test_trial_json_is_seeded_and_complete():
    args = ("trial", "--protocol", "nct04225780", "--seed", "4", "--start-date", "2026-02-02", "--json")
    first, again = run(*args), run(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    trial = json.loads(first.stdout)
    assert trial["protocol"] == "nct04225780" and trial["seed"] == 4 and trial["start_date"] == "2026-02-02"
    assert trial["summary"]["randomized"] == 10
    patient = next(c for c in trial["candidates"] if c["randomized"])
    assert set(patient["courses"]) == {"il2_gcv", "gcv"}


def test_trial_table_and_out_file(tmp_path):
    out = tmp_path / "trial.json"
    result = run("trial", "--protocol", "sle-cmv-il2", "--n", "20", "--start-date", "2026-02-02", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "20 randomized" in result.stdout and "Screen failures" in result.stdout
    assert json.loads(out.read_text())["summary"]["randomized"] == 20


def test_power_json_has_the_documented_shape():
    result = run("power", "--protocol", "nct04225780", "--scenario", "null", "--n-trials", "200", "--sizes", "5,20", "--seed", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"protocol", "scenario", "trials", "seed", "seconds", "results"} <= set(report)
    assert (report["protocol"], report["scenario"], report["trials"], report["seed"]) == ("nct04225780", "null", 200, 2)
    assert {(row["n_per_arm"], row["endpoint"], row["test"]) for row in report["results"]} == {
        (n, endpoint, test)
        for n in (5, 20)
        for endpoint, test in (("viremia_duration", "logrank"), ("viremia_duration", "cox"), ("nk_change", "ancova"), ("cmv_decline", "welch"))
    }
    assert all(0 <= row["power"] <= 1 and row["mc_se"] >= 0 for row in report["results"])


def test_power_with_workers_gives_the_same_numbers():
    args = ("power", "--protocol", "nct04225780", "--n-trials", "300", "--sizes", "6", "--json")
    one, two = run(*args), run(*args, "--workers", "2")
    assert one.exit_code == two.exit_code == 0, two.output
    assert json.loads(one.stdout)["results"] == json.loads(two.stdout)["results"]


def test_power_defaults_to_the_protocols_planned_size():
    result = run("power", "--protocol", "nct04225780", "--trials", "100", "--json")
    assert result.exit_code == 0, result.output
    assert {row["n_per_arm"] for row in json.loads(result.stdout)["results"]} == {5}


def test_power_table():
    result = run("power", "--protocol", "sle-cmv-il2", "--n-trials", "200", "--n-per-arm", "30")
    assert result.exit_code == 0, result.output
    assert "viremia_duration" in result.stdout and "Schoenfeld" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "40,abc"), 2, "--sizes must be whole numbers"),
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "1"), 2, "between 2 and"),
        (("power", "--protocol", "sle-cmv-il2", "--n-trials", "0"), 2, "number of trials"),
        (("power", "--protocol", "sle-cmv-il2", "--workers", "0"), 2, "--workers must be"),
        (("power", "--protocol", "sle-cmv-il2", "--sizes", "40,40"), 2, "twice"),
        (("power", "--protocol", "sle-cmv-il2", "--scenario", "rosy"), 1, "no scenario 'rosy'"),
        (("trial", "--protocol", "no-such-trial"), 1, "no shipped protocol"),
        (("trial", "--protocol", "sle-cmv-il2", "--start-date", "02/03/2026"), 2, "ISO date"),
    ],
)
def test_bad_input_gets_one_line_and_the_right_exit_code(args, code, message):
    result = run(*args)
    assert result.exit_code == code
    assert message in result.stderr
    assert "Traceback" not in result.output
