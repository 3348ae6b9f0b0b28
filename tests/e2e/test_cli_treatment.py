"""`cmvtrial dose gcv` and `cmvtrial schedule show` through the real CLI (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app
from cmvtrial.protocols import read_shipped_text

runner = CliRunner()
SHIPPED = ["sle-cmv-il2", "nct04225780"]


def invoke(*args):
    return runner.invoke(app, list(args), prog_name="cmvtrial")


def dose_json(*args):
    result = invoke("dose", "gcv", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ------------------------------------------------------------------------------------------------
# dose gcv


@pytest.mark.parametrize("protocol", SHIPPED)
def test_json_has_exactly_the_five_keys(protocol):
    out = dose_json("--protocol", protocol, "--weight-kg", "70", "--crcl", "80",
                    "--anc", "2500", "--platelets", "180000", "--hb", "12.5")
    assert set(out) == {"dose_mg", "dose_mg_per_kg", "interval_h", "hold", "reasons"}
    assert (out["dose_mg"], out["dose_mg_per_kg"], out["interval_h"], out["hold"]) == (350, 5, 24, False)
    assert out["reasons"][0].startswith("CrCl 80 mL/min")


@pytest.mark.parametrize(
    ("crcl", "mg", "per_kg", "interval"),
    [("70", 300, 5, 24), ("69.9", 150, 2.5, 24), ("50", 150, 2.5, 24), ("49", 75, 1.25, 24),
     ("25", 75, 1.25, 24), ("24", 40, 0.625, 24), ("10", 40, 0.625, 24), ("9", 40, 0.625, None)],
)
def test_label_table_through_the_cli(crcl, mg, per_kg, interval):
    out = dose_json("--protocol", "sle-cmv-il2", "--weight-kg", "60", "--crcl", crcl)
    assert (out["dose_mg"], out["dose_mg_per_kg"], out["interval_h"]) == (mg, per_kg, interval)


@pytest.mark.parametrize(
    ("option", "held", "not_held"),
    [("--anc", "499", "500"), ("--platelets", "24999", "25000"), ("--hb", "7.9", "8"),
     ("--anc", "0.49 10^9/L", "0.5 10^9/L"), ("--platelets", "24 10^9/L", "25 10^9/L"), ("--hb", "79 g/L", "80 g/L")],
)
def test_holds_at_each_threshold(option, held, not_held):
    base = ("--protocol", "nct04225780", "--weight-kg", "70", "--crcl", "90")
    assert dose_json(*base, option, held)["hold"] is True
    assert dose_json(*base, option, not_held)["hold"] is False


def test_human_output_says_dose_interval_and_hold():
    result = invoke("dose", "gcv", "--protocol", "sle-cmv-il2", "--weight-kg", "63.3", "--crcl", "45", "--anc", "400")
    assert result.exit_code == 0, result.output
    assert "ganciclovir under sle-cmv-il2: 80 mg (1.25 mg/kg) intravenous every 24 h" in result.stdout
    assert "interval: 24 h" in result.stdout
    assert "HOLD: do not give this dose" in result.stdout
    assert "Absolute neutrophil count below 500 cells/uL" in result.stdout


def test_weight_may_carry_a_unit():
    assert dose_json("--protocol", "sle-cmv-il2", "--weight-kg", "70000 g", "--crcl", "80")["dose_mg"] == 350


def test_a_protocol_file_works_like_an_id(tmp_path):
    path = tmp_path / "copy.yaml"
    path.write_text(read_shipped_text("sle-cmv-il2"), encoding="utf-8")
    assert dose_json("--protocol", str(path), "--weight-kg", "70", "--crcl", "80")["dose_mg"] == 350


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weight-kg", "-70", "--crcl", "80"], "weight_kg must be greater than 0"),
        (["--weight-kg", "0", "--crcl", "80"], "weight_kg must be greater than 0"),
        (["--weight-kg", "70"], "Missing option '--crcl'"),
        (["--crcl", "80"], "Missing option '--weight-kg'"),
        (["--weight-kg", "70 lb", "--crcl", "80"], "unknown unit 'lb'"),
        (["--weight-kg", "70 mL", "--crcl", "80"], "--weight-kg: cannot convert mL to kg"),
        (["--weight-kg", "heavy", "--crcl", "80"], "--weight-kg must be a number"),
        (["--weight-kg", "70", "--crcl", "-3"], "0 or more"),
        (["--weight-kg", "70", "--crcl", "80", "--anc", "-1"], "--anc cannot be negative"),
        (["--weight-kg", "70", "--crcl", "80", "--hb", "8 furlongs"], "unknown unit 'furlongs'"),
        (["--weight-kg", "70", "--crcl", "80", "--hb", "8 mg"], "hemoglobin cannot be given in mg"),
    ],
)
def test_bad_input_exits_2_with_a_message(args, message):
    result = invoke("dose", "gcv", "--protocol", "sle-cmv-il2", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_unknown_protocol_is_refused():
    result = invoke("dose", "gcv", "--protocol", "no-such-trial", "--weight-kg", "70", "--crcl", "80")
    assert result.exit_code in (1, 2) and "no-such-trial" in result.output


# ------------------------------------------------------------------------------------------------
# schedule show


@pytest.mark.parametrize("protocol", SHIPPED)
def test_schedule_json_follows_the_randomization_date(protocol):
    result = invoke("schedule", "show", "--protocol", protocol, "--randomized", "2024-02-26", "--today", "2024-03-20",
                    "--negative-on", "2024-03-11", "--done", "BL=2024-02-26", "--done", "TW1=2024-03-04", "--json")
    assert result.exit_code == 0, result.output
    calendar = json.loads(result.stdout)
    rows = {visit["visit"]: visit for visit in calendar["visits"]}
    assert list(rows) == ["BL", "TW1", "TW2", "W12", "FU3M"]
    assert (rows["TW1"]["target_date"], rows["TW1"]["status"]) == ("2024-03-04", "done")
    assert rows["TW2"]["end_of_treatment"] is True and rows["TW2"]["status"] == "done"
    assert rows["W12"]["target_date"] == "2024-05-20"
    assert rows["FU3M"]["target_date"] == "2024-06-09"


def test_schedule_table_and_ics_file(tmp_path):
    path = tmp_path / "s001.ics"
    result = invoke("schedule", "show", "--protocol", "sle-cmv-il2", "--randomized", "2024-02-26",
                    "--today", "2024-03-09", "--missed", "TW1", "--subject", "S-001", "--ics", str(path))
    assert result.exit_code == 0, result.output
    assert "missed" in result.stdout and "pending" in result.stdout
    assert f"calendar written to {path}" in result.stdout
    text = path.read_bytes().decode("utf-8")
    assert text.startswith("BEGIN:VCALENDAR\r\n") and "UID:sle-cmv-il2.S-001.TW1@cmvtrial\r\n" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--randomized", "2024-02-30"], "--randomized must be a date YYYY-MM-DD"),
        (["--randomized", "2024-02-26", "--today", "tomorrow"], "--today must be a date"),
        (["--randomized", "2024-02-26", "--negative-on", "2024-02-01"], "before randomization"),
        (["--randomized", "2024-02-26", "--done", "TW1"], "--done takes VISIT=YYYY-MM-DD"),
        (["--randomized", "2024-02-26", "--missed", "XX9"], "'XX9' is not a visit"),
        ([], "Missing option '--randomized'"),
    ],
)
def test_schedule_bad_input_exits_2(args, message):
    result = invoke("schedule", "show", "--protocol", "sle-cmv-il2", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_schedule_cannot_write_the_file(tmp_path):
    result = invoke("schedule", "show", "--protocol", "sle-cmv-il2", "--randomized", "2024-02-26",
                    "--today", "2024-03-01", "--ics", str(tmp_path / "missing" / "x.ics"))
    assert result.exit_code == 2 and "cannot write" in result.output
