"""`cmvtrial ae …` and `cmvtrial sae …` through the real CLI: every refusal exits with one line and
changes nothing (no row, no audit event)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
from cli_support import ADMIN_PASSWORD as PASSWORD
from cli_support import CliTrial, as_admin, init_trial, one_line_error
from sqlalchemy import func, select

from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AdverseEvent, AuditEvent, LabSafetyProposal, Subject

DRUGS = [{"drug": "interleukin-2", "relatedness": "possible", "action_taken": "DRUG INTERRUPTED"},
         {"drug": "ganciclovir", "relatedness": "not_related", "action_taken": "DOSE NOT CHANGED"}]
RECENT = (date.today() - timedelta(days=3)).isoformat()


def _safety_rows(uow: UnitOfWork) -> tuple[int, int, int]:
    with uow.session_factory() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (AdverseEvent, LabSafetyProposal, AuditEvent))


class Trial(CliTrial):
    """A CLI-initialised database with sites PKUPH and OTHER, users per role, one subject per site."""

    def counts(self) -> tuple[int, int, int]:
        return self.read(_safety_rows)


@pytest.fixture
def trial(database_url, protocol_id, tmp_path) -> Trial:
    init_trial(database_url, protocol_id)
    with as_admin(database_url) as (_, uow, admin):
        sites = {code: trial_setup.add_site(uow, admin, code, f"Hospital {code}").id for code in ("PKUPH", "OTHER")}
        for username, role, site in [("inv", "investigator", "PKUPH"), ("coord", "coordinator", "PKUPH"),
                                     ("stat", "statistician", None), ("inv2", "investigator", "OTHER")]:
            accounts.add_user(uow, admin, username, PASSWORD, role, site)
        with uow:
            trial_row = uow.trial.current()
            for code, number in (("PKUPH", "PKUPH-001"), ("OTHER", "OTHER-001")):
                uow.subjects.add(Subject(site_id=sites[code], screening_number="S-001", subject_number=number,
                                         protocol_version_id=trial_row.protocol_version_id, status="randomized",
                                         created_at=datetime.now(UTC), created_by_user_id=admin.user_id))
            uow.commit()
    return Trial(database_url, tmp_path, user="inv")


def neutropenia(**changes: object) -> dict[str, object]:
    return {"term": "Neutrophil count decreased", "start_date": RECENT, "grade": 3,
            "outcome": "RECOVERING/RESOLVING", "drugs": DRUGS, **changes}


def serious(**changes: object) -> dict[str, object]:
    aware = (datetime.now(UTC) - timedelta(hours=30)).replace(microsecond=0).isoformat()
    return {"term": "Pneumonia", "start_date": RECENT, "grade": 3, "outcome": "NOT RECOVERED/NOT RESOLVED",
            "seriousness": ["hospitalisation"], "awareness_time": aware, "drugs": DRUGS,
            "narrative": "Admitted with pneumonia <b>not bold</b>; µ-level detail.", **changes}


def record(trial: Trial, data: dict[str, object], subject: str = "PKUPH-001", user: str = "inv") -> dict:
    result = trial.run("ae", "record", subject, trial.file("ae.json", data), "--json", user=user)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_recording_prints_the_event_and_its_findings(trial):
    result = trial.run("ae", "record", "PKUPH-001", trial.file("ae.json", neutropenia(end_date=RECENT)))
    assert result.exit_code == 0, result.output
    assert "Recorded PKUPH-001 AE 1 (id 1): Neutrophil count decreased, grade 3" in result.stdout
    assert "finding [end_date_but_ongoing]" in result.stdout
    listed = trial.run("ae", "list", "--subject", "PKUPH-001", "--json", user="coord")
    assert [e["term"] for e in json.loads(listed.stdout)] == ["Neutrophil count decreased"]


def test_a_serious_event_prints_its_deadline_and_appears_overdue(trial):
    event = record(trial, serious())
    result = trial.run("ae", "list", user="coord")
    assert "Pneumonia" in result.stdout
    overdue = trial.run("sae", "list", "--overdue", "--json", user="coord")
    assert overdue.exit_code == 0, overdue.output
    assert [(s["adverse_event"]["id"], s["status"]) for s in json.loads(overdue.stdout)] == [(event["id"], "overdue")]
    table = trial.run("sae", "list", user="admin")
    assert "overdue" in table.stdout and "PKUPH-001" in table.stdout


@pytest.mark.parametrize(
    ("user", "subject", "data", "code", "exit_code"),
    [
        ("stat", "PKUPH-001", neutropenia(), "forbidden", 1),                                  # wrong role
        ("admin", "PKUPH-001", neutropenia(), "forbidden", 1),
        ("inv", "OTHER-001", neutropenia(), "forbidden", 1),                                   # other site's subject
        ("inv", "PKUPH-001", neutropenia(end_date=(date.today() - timedelta(days=9)).isoformat()),
         "invalid_input", 2),                                                                  # end before start
        ("inv", "PKUPH-001", neutropenia(grade=5), "invalid_input", 2),                         # grade 5 without death
        ("inv", "PKUPH-001", {"term": "Fever"}, "invalid_input", 2),                           # incomplete
        ("inv", "NOBODY", neutropenia(), "not_found", 1),
    ],
)
def test_refused_records_exit_with_one_line_and_change_nothing(trial, user, subject, data, code, exit_code):
    before = trial.counts()
    result = trial.run("ae", "record", subject, trial.file("ae.json", data), user=user)
    one_line_error(result, code, exit_code)
    assert trial.counts() == before


def test_unreadable_input_is_refused(trial):
    before = trial.counts()
    bad = trial.tmp / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert "not valid JSON" in one_line_error(trial.run("ae", "record", "PKUPH-001", str(bad)), "invalid_input", 2)
    assert "cannot read" in one_line_error(trial.run("ae", "record", "PKUPH-001", str(trial.tmp / "missing.json")),
                                           "invalid_input", 2)
    listed = trial.file("list.json", [1, 2])
    assert "one JSON object" in one_line_error(trial.run("ae", "record", "PKUPH-001", listed), "invalid_input", 2)
    assert trial.counts() == before


def test_record_from_standard_input_and_update_with_a_reason(trial):
    result = trial.run("ae", "record", "PKUPH-001", "-", input=json.dumps(neutropenia()))
    assert result.exit_code == 0, result.output
    before = trial.counts()
    no_reason = trial.run("ae", "update", "1", trial.file("c.json", {"grade": 4}), "--reason", " ")
    one_line_error(no_reason, "invalid_input", 2)
    assert trial.counts() == before
    updated = trial.run("ae", "update", "1", trial.file("c.json", {"grade": 4}), "--reason", "worse", "--json")
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["grade"] == 4


def test_the_lab_proposal_flow(trial):
    reviewed = trial.run("ae", "review-lab", "PKUPH-001", "--term", "751-8", "--value", "800", "--unit", "cells/uL",
                         "--lln", "1800", "--date", RECENT, user="coord")
    assert reviewed.exit_code == 0, reviewed.output
    assert "grade 3" in reviewed.stdout and "Proposal 1 (pending)" in reviewed.stdout
    assert trial.counts()[0] == 0  # nothing created silently
    listed = trial.run("ae", "proposals", "--json", user="coord")
    assert [(p["id"], p["action"], p["grade"]) for p in json.loads(listed.stdout)] == [(1, "new_event", 3)]

    before = trial.counts()
    one_line_error(trial.run("ae", "confirm", "1", trial.file("d.json", {"drugs": DRUGS}), user="coord"),
                   "forbidden", 1)  # the investigator decides
    one_line_error(trial.run("ae", "confirm", "1", trial.file("d.json", {"drugs": DRUGS})), "invalid_input", 2)
    assert trial.counts() == before

    details = trial.file("d.json", {"drugs": DRUGS, "outcome": "NOT RECOVERED/NOT RESOLVED"})
    confirmed = trial.run("ae", "confirm", "1", details, "--reason", "ANC 0.8")
    assert confirmed.exit_code == 0, confirmed.output
    assert "Proposal 1 (confirmed)" in confirmed.stdout and "Recorded PKUPH-001 AE 1" in confirmed.stdout
    again = trial.run("ae", "confirm", "1", details)
    assert "already confirmed" in one_line_error(again, "refused", 1)

    worse = trial.run("ae", "review-lab", "PKUPH-001", "--term", "Neutropenia", "--value", "0.4", "--unit",
                      "10^9/L", "--date", RECENT, "--json", user="coord")
    proposal = json.loads(worse.stdout)["proposal"]
    assert (proposal["action"], proposal["current_grade"], proposal["grade"]) == ("raise_grade", 3, 4)
    dismissed = trial.run("ae", "dismiss", str(proposal["id"]), "--reason", "repeat pending")
    assert dismissed.exit_code == 0 and "(dismissed)" in dismissed.stdout
    everything = trial.run("ae", "proposals", "--all", user="admin")
    assert "confirmed" in everything.stdout and "dismissed" in everything.stdout


def test_an_unknown_lab_term_or_unit_is_refused_and_changes_nothing(trial):
    before = trial.counts()
    for args in (["--term", "Neutropaenia typo", "--unit", "10^9/L"], ["--term", "751-8", "--unit", "furlongs"]):
        result = trial.run("ae", "review-lab", "PKUPH-001", *args, "--value", "0.8", "--lln", "1.8", "--date", RECENT)
        assert result.exit_code == 2, result.output
    one_line_error(trial.run("ae", "review-lab", "PKUPH-001", "--term", "751-8", "--value", "0.8", "--unit",
                             "10^9/L", "--date", "yesterday"), "invalid_input", 2)
    assert trial.counts() == before


def test_submitting_a_report_once(trial):
    event = record(trial, serious())
    before = trial.counts()
    one_line_error(trial.run("sae", "submit", str(event["id"]), user="coord"), "forbidden", 1)
    one_line_error(trial.run("sae", "submit", str(event["id"]), "--at", "2026-01-01T10:00"), "invalid_input", 2)
    one_line_error(trial.run("sae", "submit", str(event["id"]), "--at", "soon"), "invalid_input", 2)
    assert trial.counts() == before
    done = trial.run("sae", "submit", str(event["id"]), "--reference", "CASE-7", "--reason", "faxed to sponsor")
    assert done.exit_code == 0, done.output
    assert "reported late" in done.stdout  # 30 h after awareness, past the protocol's window
    after = trial.counts()
    assert "already submitted" in one_line_error(trial.run("sae", "submit", str(event["id"])), "already_exists", 1)
    assert trial.counts() == after
    assert json.loads(trial.run("sae", "list", "--overdue", "--json").stdout) == []


def test_the_report_form_as_html_and_pdf(trial):
    event = record(trial, serious())
    html = trial.tmp / "sae.html"
    result = trial.run("sae", "report", str(event["id"]), "--out", str(html), user="coord")
    assert result.exit_code == 0, result.output
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "PKUPH-001 AE 1" in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page  # user text escaped
    assert "hospitalisation" in page and "interleukin-2" in page and "<link" not in page and "<script" not in page
    pdf = trial.tmp / "sae.pdf"
    result = trial.run("sae", "report", str(event["id"]), "--out", str(pdf), user="coord")
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes().startswith(b"%PDF-")
    one_line_error(trial.run("sae", "report", str(event["id"]), "--out", str(trial.tmp / "sae.txt")),
                   "invalid_input", 2)
    one_line_error(trial.run("sae", "report", str(event["id"]), "--out", str(html), user="inv2"), "forbidden", 1)
    plain = record(trial, neutropenia())
    one_line_error(trial.run("sae", "report", str(plain["id"]), "--out", str(html)), "refused", 1)
