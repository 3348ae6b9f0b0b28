"""`cmvtrial subject withdraw | complete` end to end: the investigator's record, one line per refusal
(exit 2 for bad input, 1 otherwise), and nothing written by a refused command."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_support import cli, init_trial, ok, one_line_error

USER_PASSWORD = "cli-user-passphrase"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
RANDOMIZED = datetime.now(UTC).date()  # `randomize` allocates on the real clock (UTC)
TODAY = ("--today", RANDOMIZED.isoformat())


def audit_count(db: str) -> int:
    match = re.search(r"(\d+) events verified", ok(cli("audit", "verify", "--db", db)))
    assert match
    return int(match.group(1))


@pytest.fixture
def db(database_url, protocol_id) -> str:
    """PKUPH-001 randomized today by the coordinator; an investigator at PKUPH and one at OTHER."""
    init_trial(database_url, protocol_id)
    for code in ("PKUPH", "OTHER"):
        ok(cli("site", "add", code, f"Hospital {code}", "--db", database_url))
    for name, role, site in (("inv", "investigator", "PKUPH"), ("coord", "coordinator", "PKUPH"),
                             ("inv2", "investigator", "OTHER")):
        ok(cli("user", "add", name, "--role", role, "--site", site, "--db", database_url,
               CMVTRIAL_USER_PASSWORD=USER_PASSWORD))
    as_coord = ("--db", database_url, "--as", "coord")
    ok(cli("subject", "register", "--site", "PKUPH", "--screening-number", "S001", *as_coord))
    ok(cli("screening", "enter", "S001", str(FIXTURES / "eligible.json"), *as_coord))
    ok(cli("consent", "S001", "--date", (RANDOMIZED - timedelta(days=1)).isoformat(), *as_coord))
    ok(cli("randomize", "S001", *as_coord))
    ok(cli("subject", "register", "--site", "PKUPH", "--screening-number", "S002", *as_coord))
    return database_url


def test_the_investigator_withdraws_a_subject_once(db):
    day = RANDOMIZED.isoformat()
    out = ok(cli("subject", "withdraw", "PKUPH-001", "--date", day, "--reason", "other", "--details", "moved abroad",
                 *TODAY, "--db", db, "--as", "inv"))
    assert out.strip() == f"Subject PKUPH-001 withdrawn on {day} (other: moved abroad; CDISC OTHER)."
    shown = json.loads(ok(cli("subject", "show", "PKUPH-001", "--json", "--db", db, "--as", "inv")))
    assert (shown["subject"]["status"], shown["subject"]["end_of_study_reason"]) == ("withdrawn", "other")
    before = audit_count(db)
    again = cli("subject", "withdraw", "PKUPH-001", "--date", day, "--reason", "death", *TODAY, "--db", db, "--as",
                "inv")
    assert "already ended the study" in one_line_error(again, "study_ended")
    assert audit_count(db) == before


def test_withdrawal_as_json_and_completion_waits_for_the_final_visit(db):
    refused = cli("subject", "complete", "PKUPH-001", *TODAY, "--db", db, "--as", "inv")
    assert "has no date" in one_line_error(refused, "final_visit_not_done")
    body = json.loads(ok(cli("subject", "withdraw", "PKUPH-001", "--date", RANDOMIZED.isoformat(), "--reason",
                             "lost to follow-up", "--json", *TODAY, "--db", db, "--as", "inv")))
    assert (body["status"], body["reason"], body["dsdecod"]) == ("lost_to_follow_up", "lost_to_follow_up",
                                                                 "LOST TO FOLLOW-UP")


@pytest.mark.parametrize(("args", "code", "exit_code"), [
    (["--date", "2000-01-01", "--reason", "death"], "invalid_input", 2),                      # before randomization
    (["--date", "tomorrow", "--reason", "death"], "invalid_input", 2),                        # not a date
    (["--date", RANDOMIZED.isoformat(), "--reason", "bored"], "invalid_input", 2),            # not a reason
    (["--date", RANDOMIZED.isoformat(), "--reason", "other"], "invalid_input", 2),            # other without words
    (["--date", (RANDOMIZED + timedelta(days=1)).isoformat(), "--reason", "death"], "invalid_input", 2),  # future
    (["--date", RANDOMIZED.isoformat(), "--reason", "death", "--as", "coord"], "forbidden", 1),
    (["--date", RANDOMIZED.isoformat(), "--reason", "death", "--as", "inv2"], "forbidden", 1),  # another site's
])
def test_refused_withdrawals_print_one_line_and_change_nothing(db, args, code, exit_code):
    before = audit_count(db)
    user = [] if "--as" in args else ["--as", "inv"]
    result = cli("subject", "withdraw", "PKUPH-001", *args, *user, *TODAY, "--db", db)
    one_line_error(result, code, exit_code)
    assert audit_count(db) == before
    assert json.loads(ok(cli("subject", "show", "PKUPH-001", "--json", "--db", db, "--as", "inv")))["subject"][
        "status"] == "randomized"


def test_a_candidate_is_not_withdrawn(db):
    before = audit_count(db)
    result = cli("subject", "withdraw", "PKUPH:S002", "--date", RANDOMIZED.isoformat(), "--reason", "death",
                 *TODAY, "--db", db, "--as", "inv")
    assert "not randomized" in one_line_error(result, "not_randomized")
    assert audit_count(db) == before
