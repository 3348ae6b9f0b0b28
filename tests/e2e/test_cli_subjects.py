"""`cmvtrial subject | screening | consent | randomize | randomization` end to end through the CLI."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from cli_support import cli, init_trial, ok, one_line_error

USER_PASSWORD = "cli-user-passphrase"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"


def audit_count(db: str) -> int:
    output = ok(cli("audit", "verify", "--db", db))
    match = re.search(r"(\d+) events verified", output)
    assert match, output
    return int(match.group(1))


@pytest.fixture
def db(database_url, protocol_id) -> str:
    init_trial(database_url, protocol_id)
    ok(cli("site", "add", "PKUPH", "Peking University People's Hospital", "--db", database_url))
    for name, role, site in (("inv", "investigator", "PKUPH"), ("stat", "statistician", None)):
        args = ["user", "add", name, "--role", role, "--db", database_url] + (["--site", site] if site else [])
        ok(cli(*args, CMVTRIAL_USER_PASSWORD=USER_PASSWORD))
    return database_url


def register(db: str, number: str = "S001") -> None:
    ok(cli("subject", "register", "--site", "PKUPH", "--screening-number", number, "--db", db, "--as", "inv"))


def test_screening_consent_and_randomization_from_the_command_line(db, tmp_path):
    assert "Registered candidate PKUPH:S001 (id 1)" in ok(
        cli("subject", "register", "--site", "PKUPH", "--screening-number", "S001", "--db", db, "--as", "inv"))
    entered = ok(cli("screening", "enter", "PKUPH:S001", str(FIXTURES / "eligible.json"), "--db", db, "--as", "inv"))
    assert "22 entered, 0 changed, 0 removed" in entered and "ELIGIBLE" in entered
    assert "Consent of PKUPH:S001 (id 1) recorded: 2024-05-18." in ok(
        cli("consent", "S001", "--date", "2024-05-18", "--db", db, "--as", "inv"))
    randomized = ok(cli("randomize", "S001", "--reason", "baseline visit", "--db", db, "--as", "inv"))
    assert re.search(r"Subject PKUPH-001 \(PKUPH:S001\) randomized to .+ \((il2_gcv|gcv)\); stratum site=PKUPH, "
                     r"position 1\.", randomized), randomized

    shown = json.loads(ok(cli("subject", "show", "PKUPH-001", "--json", "--db", db, "--as", "inv")))
    assert shown["subject"]["status"] == "randomized" and shown["eligibility"]["eligible"] is True
    assert shown["allocation"]["sequence"] == 1 and shown["screening_data"]["nyha_class"] == 1
    listed = json.loads(ok(cli("subject", "list", "--json", "--db", db, "--as", "inv")))
    assert [s["subject_number"] for s in listed] == ["PKUPH-001"]
    log = json.loads(ok(cli("screening", "log", "--json", "--db", db, "--as", "inv")))
    assert log["counts"]["assessed_for_eligibility"] == 1 and log["counts"]["randomized"] == 1
    assert "CONSORT enrolment, site PKUPH" in ok(cli("screening", "log", "--db", db, "--as", "inv"))

    balance = json.loads(ok(cli("randomization", "balance", "--json", "--db", db, "--as", "stat")))
    assert balance["total"] == 1 and balance["by_stratum"]["site=PKUPH"][shown["allocation"]["arm"]] == 1
    out = tmp_path / "lists.json"
    assert "It holds the secret seed" in ok(cli("randomization", "export", "--out", str(out), "--n", "8", "--db", db))
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert exported["strata"]["site=PKUPH"][0]["arm"] == shown["allocation"]["arm"]
    assert len(exported["strata"]["site=PKUPH"]) == 8 and len(exported["seed"]) == 64
    verified = ok(cli("randomization", "verify", "--db", db))
    assert "Randomization intact" in verified and "1 allocations in 1 strata verified" in verified
    assert "Existing randomization scheme" in ok(cli("randomization", "setup", "--db", db))
    assert audit_count(db) > 0


def test_a_correction_needs_a_reason_and_a_not_eligible_candidate_is_a_screen_failure(db, tmp_path):
    register(db)
    ok(cli("screening", "enter", "S001", str(FIXTURES / "eligible.json"), "--db", db, "--as", "inv"))
    change = tmp_path / "nyha.json"
    change.write_text('{"nyha_class": 3}', encoding="utf-8")
    events = audit_count(db)
    one_line_error(cli("screening", "enter", "S001", str(change), "--db", db, "--as", "inv"), "invalid_input", 2)
    assert audit_count(db) == events
    corrected = ok(cli("screening", "enter", "S001", str(change), "--reason", "source says III", "--db", db, "--as", "inv"))
    assert "1 changed" in corrected and "NOT ELIGIBLE (screen failure): EXC4a" in corrected
    error = one_line_error(cli("randomize", "S001", "--db", db, "--as", "inv"), "not_consented")
    assert "no informed consent" in error
    ok(cli("consent", "S001", "--date", "2024-05-18", "--db", db, "--as", "inv"))
    assert "EXC4a" in one_line_error(cli("randomize", "S001", "--db", db, "--as", "inv"), "not_eligible")
    ok(cli("screening", "fail", "S001", "--category", "declined", "--detail", "moved", "--db", db, "--as", "inv"))
    log = json.loads(ok(cli("screening", "log", "--json", "--db", db)))
    assert log["counts"]["excluded"] == 1 and log["counts"]["declined_to_participate"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"nyha_class": 2,', "malformed JSON at line 1"),
        ('{"nyha": 2}', "nyha: unknown key"),
        ('{"cmv_dna": {"value": 1, "unit": "furlongs"}}', "unknown unit"),
        ('[1, 2]', "must be a JSON object"),
    ],
)
def test_bad_screening_files_exit_2_with_one_line_and_change_nothing(db, tmp_path, content, message):
    register(db)
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    events = audit_count(db)
    result = cli("screening", "enter", "S001", str(bad), "--db", db, "--as", "inv")
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output
    assert audit_count(db) == events


def test_refusals_are_one_line_with_the_families_exit_code(db, tmp_path):
    register(db)
    ok(cli("screening", "enter", "S001", str(FIXTURES / "eligible.json"), "--db", db, "--as", "inv"))
    ok(cli("consent", "S001", "--date", "2024-05-18", "--db", db, "--as", "inv"))
    events = audit_count(db)
    one_line_error(cli("consent", "S001", "--date", "18/05/2024", "--db", db, "--as", "inv"), "invalid_input", 2)
    one_line_error(cli("randomize", "S999", "--db", db, "--as", "inv"), "not_found")
    one_line_error(cli("randomize", "S001", "--db", db), "forbidden")  # the administrator does not randomize
    one_line_error(cli("randomization", "balance", "--db", db, "--as", "inv"), "forbidden")
    one_line_error(cli("randomization", "export", "--out", str(tmp_path / "x.json"), "--db", db, "--as", "inv"),
                   "forbidden")
    one_line_error(cli("subject", "register", "--site", "PKUPH", "--screening-number", "S001", "--db", db, "--as", "inv"),
                   "already_exists")
    assert audit_count(db) == events
    assert not (tmp_path / "x.json").exists()
    ok(cli("randomize", "S001", "--db", db, "--as", "inv"))
    one_line_error(cli("randomize", "S001", "--db", db, "--as", "inv"), "already_randomized")
    existing = tmp_path / "existing.json"
    existing.write_text("{}", encoding="utf-8")
    one_line_error(cli("randomization", "export", "--out", str(existing), "--db", db), "invalid_input", 2)
    assert existing.read_text(encoding="utf-8") == "{}"
