"""`cmvtrial visits | enter | queries | sign | calendar | dose record|list | subject show` through the
real CLI: what they print, and that every refusal exits with one line and changes nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_support import CliTrial, as_admin, init_trial, one_line_error
from typer.testing import Result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from data_capture_support import HEMATOLOGY, PASSWORD, cmv, counts, make_capture_trial  # noqa: E402

TODAY = "2025-03-14"


class Trial(CliTrial):
    def counts(self) -> dict[str, object]:
        return self.read(counts)


@pytest.fixture
def trial(database_url, protocol_id, tmp_path) -> Trial:
    init_trial(database_url, protocol_id)
    with as_admin(database_url) as (_, uow, admin):
        make_capture_trial(uow, admin)
    return Trial(database_url, tmp_path, user="coord")


def baseline(trial: Trial, **forms: object) -> Result:
    data = {"date": "2025-03-03", "forms": forms or {"hematology": HEMATOLOGY, "cmv_load": cmv_json("2025-03-03")}}
    return trial.run("enter", "R-S-001", "BL", trial.file("bl.json", data), "--today", TODAY, "--complete")


def cmv_json(on: str, **changes: object) -> dict[str, object]:
    from datetime import date

    return cmv(date.fromisoformat(on), **changes)


def test_enter_prints_what_was_stored_and_the_queries_opened(trial):
    result = baseline(trial, hematology={**HEMATOLOGY, "anc": 6.0})
    assert result.exit_code == 0, result.output
    assert "R-S-001 BL (2025-03-03):" in result.stdout and "hematology: complete; 5 entered" in result.stdout
    assert "query: The neutrophil count exceeds the white cell count" in result.stdout
    assert "Queries opened: 1" in result.stdout
    again = baseline(trial, hematology={**HEMATOLOGY, "anc": 6.0})
    assert again.exit_code == 0 and "nothing changed" in again.stdout


def test_enter_json_and_a_correction_needs_a_reason(trial):
    assert baseline(trial).exit_code == 0
    before = trial.counts()
    path = trial.file("fix.json", {"forms": {"hematology": {"platelets": 190}}})
    refused = trial.run("enter", "R-S-001", "BL", path, "--today", TODAY)
    assert "give a reason" in one_line_error(refused, "invalid_input", 2)
    assert trial.counts() == before
    fixed = trial.run("enter", "R-S-001", "BL", path, "--today", TODAY, "--reason", "lab report", "--json")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["forms"][0]["updated"] == ["platelets"]


@pytest.mark.parametrize(("data", "code", "exit_code", "message"), [
    ({"forms": {"vitals": {"weight_kg": 600}}}, "out_of_range", 2, "above the hard limit 500 kg"),
    ({"forms": {"hematology": {"anc": "3 parsec"}}}, "unit_error", 2, "unknown unit"),
    ({"forms": {"sledai": {}}}, "invalid_input", 2, "not collected at TW1"),
    ({"visit": "BL", "forms": {"vitals": {}}}, "invalid_input", 2, "for visit BL"),
    ({"forms": {}}, "invalid_input", 2, '"forms"'),
    ("{not json", "invalid_input", 2, "not valid JSON"),
])
def test_bad_visit_files_exit_2_with_one_line_and_change_nothing(trial, data, code, exit_code, message):
    before = trial.counts()
    result = trial.run("enter", "R-S-001", "TW1", trial.file("bad.json", data), "--today", TODAY)
    assert message in one_line_error(result, code, exit_code)
    assert trial.counts() == before


def test_refusals_exit_1(trial):
    before = trial.counts()
    path = trial.file("v.json", {"forms": {"vitals": {"weight_kg": 60}}})
    assert "another site" in one_line_error(trial.run("enter", "R-S-001", "BL", path, "--today", TODAY, user="coord2"),
                                            "forbidden", 1)
    assert "not randomized" in one_line_error(trial.run("enter", "PKUPH:S-003", "BL", path, "--today", TODAY),
                                              "refused", 1)
    assert one_line_error(trial.run("enter", "NOBODY", "BL", path), "not_found", 1)
    assert "--today" in one_line_error(trial.run("enter", "R-S-001", "BL", path, "--today", "14/03/2025"),
                                       "invalid_input", 2)
    assert trial.counts() == before


def test_the_stop_rule_through_the_cli(trial):
    assert baseline(trial).exit_code == 0
    path = trial.file("tw1.json", {"date": "2025-03-10", "forms": {"cmv_load": cmv_json("2025-03-10",
                                                                                         result="not_detected")}})
    result = trial.run("enter", "R-S-001", "TW1", path, "--today", TODAY)
    assert result.exit_code == 0, result.output
    assert "END OF TREATMENT on 2025-03-10; scheduled FU3M" in result.stdout
    dose = trial.file("dose.json", {"drug": "interleukin-2", "dose": 1, "unit": "MIU", "route": "subcutaneous",
                                    "date": "2025-03-12", "given_by": "Nurse Li"})
    refused = trial.run("dose", "record", "R-S-001", dose, "--today", TODAY)
    assert "treatment ended on 2025-03-10" in one_line_error(refused, "outside_treatment_period", 1)


def test_visits_due_record_and_calendar(trial):
    due = trial.run("visits", "due", "--site", "PKUPH", "--today", "2025-03-20", "--json")
    assert due.exit_code == 0, due.output
    data = json.loads(due.stdout)
    assert {(e["subject"], e["visit"]) for e in data["due_this_week"]} == {("R-S-001", "TW3"), ("R-S-002", "TW3")}
    table = trial.run("visits", "due", "--site", "PKUPH", "--today", "2025-03-20")
    assert "Overdue (4)" in table.stdout and "Missed (2)" in table.stdout
    late = trial.run("visits", "record", "R-S-001", "TW1", "--date", "2025-03-13", "--today", TODAY)
    assert late.exit_code == 0 and "PROTOCOL DEVIATION: TW1 done on 2025-03-13" in late.stdout
    missed = trial.run("visits", "record", "R-S-002", "TW1", "--missed", "--today", TODAY)
    assert "give a reason" in one_line_error(missed, "invalid_input", 2)
    ics = trial.tmp / "s001.ics"
    calendar = trial.run("calendar", "R-S-001", "--today", TODAY, "--ics", str(ics))
    assert calendar.exit_code == 0, calendar.output
    assert "Calendar on 2025-03-14" in calendar.stdout and "TW1 done on 2025-03-13" in calendar.stdout
    assert ics.read_bytes().startswith(b"BEGIN:VCALENDAR\r\n")
    as_json = json.loads(trial.run("calendar", "R-S-001", "--today", TODAY, "--json").stdout)
    assert as_json["randomized_on"] == "2025-03-03" and as_json["visits"][0]["visit"] == "BL"


def test_query_lifecycle_through_the_cli(trial):
    assert baseline(trial).exit_code == 0
    opened = trial.run("queries", "open", "R-S-001", "BL", "hematology.platelets", "--text", "Confirm please",
                       user="mon")
    assert opened.exit_code == 0, opened.output
    assert opened.stdout.startswith("Query 1 (open) on R-S-001 BL.hematology.platelets: Confirm please")
    listed = json.loads(trial.run("queries", "list", "--status", "open", "--json", user="mon").stdout)
    assert [(q["id"], q["value"]) for q in listed] == [(1, "210 10*9/L")]
    assert trial.run("queries", "answer", "1", "--text", "Confirmed", user="coord").exit_code == 0
    refused = trial.run("queries", "answer", "1", "--text", "Again", user="coord")
    assert "only an open query" in one_line_error(refused, "refused", 1)
    assert "opened by someone else" in one_line_error(trial.run("queries", "close", "1", user="dm"), "forbidden", 1)
    closed = trial.run("queries", "close", "1", user="mon")
    assert closed.exit_code == 0 and "(closed)" in closed.stdout
    table = trial.run("queries", "list", user="dm")
    assert "Queries (1)" in table.stdout and "Confirmed" in table.stdout
    bad = trial.run("queries", "open", "R-S-001", "BL", "platelets", "--text", "x", user="mon")
    assert "FORM.ITEM" in one_line_error(bad, "invalid_input", 2)


def test_signing_through_the_cli(trial):
    assert baseline(trial).exit_code == 0
    wrong = trial.run("sign", "R-S-001", "BL", user="inv", env={"CMVTRIAL_SIGN_PASSWORD": "nope"})
    assert "not signed" in one_line_error(wrong, "authentication_failed", 1)
    signed = trial.run("sign", "R-S-001", "BL", user="inv", input=f"{PASSWORD}\n")
    assert signed.exit_code == 0, signed.output
    assert "Signed by inv (inv) on" in signed.stdout and ": approval" in signed.stdout
    assert "VALID" in trial.run("visits", "signatures", "R-S-001", "BL", user="mon").stdout
    path = trial.file("fix.json", {"forms": {"hematology": {"wbc": 5.5}}})
    changed = trial.run("enter", "R-S-001", "BL", path, "--today", TODAY, "--reason", "typo")
    assert "SIGNATURE INVALIDATED: the signature of BL by inv" in changed.stdout
    assert "INVALID: data changed after signing" in trial.run("visits", "signatures", "R-S-001", "BL").stdout
    coordinator = trial.run("sign", "R-S-001", "BL", env={"CMVTRIAL_SIGN_PASSWORD": PASSWORD})
    assert one_line_error(coordinator, "forbidden", 1)


def test_doses_and_subject_show(trial):
    assert baseline(trial).exit_code == 0
    dose = trial.file("dose.json", {"drug": "ganciclovir", "dose": 300, "unit": "mg", "route": "intravenous",
                                    "time": "2025-03-03T10:00:00+08:00", "given_by": "Nurse Li"})
    recorded = trial.run("dose", "record", "R-S-001", dose, "--today", TODAY)
    assert recorded.exit_code == 0, recorded.output
    assert recorded.stdout.startswith("R-S-001: ganciclovir given 300 mg on 2025-03-03 (day 0)")
    il2 = trial.file("il2.json", {"drug": "interleukin-2", "dose": 1, "unit": "MIU", "route": "subcutaneous",
                                  "date": "2025-03-03", "given_by": "Nurse Li"})
    refused = trial.run("dose", "record", "R-S-002", il2, "--today", TODAY)
    assert "does not receive interleukin-2" in one_line_error(refused, "drug_not_in_arm", 1)
    listed = json.loads(trial.run("dose", "list", "R-S-001", "--json").stdout)
    assert [(d["drug"], d["status"]) for d in listed] == [("ganciclovir", "given")]
    shown = trial.run("subject", "show", "R-S-001")
    assert shown.exit_code == 0, shown.output
    for text in ("Calendar on", "Doses (1)", "Latest labs", "Platelets"):
        assert text in shown.stdout
    as_json = json.loads(trial.run("subject", "show", "R-S-001", "--json").stdout)
    assert as_json["calendar"]["randomized_on"] == "2025-03-03" and as_json["doses"][0]["dose"] == 300
    assert {lab["item"] for lab in as_json["latest_labs"]} >= {"anc", "cmv_dna"}
    bad = trial.run("dose", "record", "R-S-001", trial.file("d.json", {"drug": "ganciclovir", "date": "x"}))
    assert "YYYY-MM-DD" in one_line_error(bad, "invalid_input", 2)


def test_the_report_reads_the_trial_from_the_database(trial):
    assert baseline(trial).exit_code == 0
    out, numbers = trial.tmp / "report.html", trial.tmp / "results.json"
    result = trial.run("report", "--out", str(out), "--json", str(numbers), "--cutoff", TODAY, user="stat")
    assert result.exit_code == 0, result.output
    assert "3 subjects" in result.stdout and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    refused = trial.run("report", "--out", str(out), "--cutoff", TODAY, user="coord")
    assert refused.exit_code == 1 and "error [forbidden]: coord (coordinator) may not analysis.run" in refused.stderr
