"""Safety pages: the AE form with CTCAE grade wording, errors beside the fields, an event's page
with its update and SAE report, the lab-grade proposals an investigator confirms or dismisses."""

from __future__ import annotations

from datetime import date

import pytest
from test_web_subjects import error_next_to, signed_in
from trial_flow import enter, randomized_subject
from web_support import csrf_in, web_trial  # noqa: F401

from cmvtrial.store.tables import AdverseEvent, LabSafetyProposal

FORM = {"term": "Neutropenia", "start_date": "2025-03-13", "grade": "3", "outcome": "RECOVERING/RESOLVING",
        "drug_0_relatedness": "unlikely", "drug_0_action": "DOSE NOT CHANGED",
        "drug_1_relatedness": "probable", "drug_1_action": "DRUG INTERRUPTED"}


@pytest.fixture
def subject(web_trial):
    return randomized_subject(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-1",
                              consent_on=date(2025, 3, 10))["subject_id"]


def test_the_grade_wording_follows_the_term_typed(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    page = client.get(f"/subjects/{subject}/adverse-events/new")
    assert page.status_code == 200 and 'data-live-url="/adverse-events/grade-text"' in page.text
    token = csrf_in(page.text)
    live = client.post("/adverse-events/grade-text", data={"term": "neutropenia", "grade": "3", "csrf_token": token},
                       headers={"X-Fragment": "1"})
    assert "Neutrophil count decreased" in live.text and 'class="chosen">&lt;1000 - 500/mm3' in live.text
    free = client.post("/adverse-events/grade-text", data={"term": "odd feeling", "csrf_token": token},
                       headers={"X-Fragment": "1"})
    assert "is not a CTCAE term" in free.text and "Mild; asymptomatic" in free.text


def test_an_adverse_event_is_recorded_and_a_hard_problem_shows_beside_its_field(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/adverse-events/new").text)
    bad = client.post(f"/subjects/{subject}/adverse-events", data={**FORM, "end_date": "2025-03-01", "csrf_token": token})
    assert bad.status_code == 422 and "before the start date" in error_next_to(bad.text, "f-end-date")
    missing = client.post(f"/subjects/{subject}/adverse-events", data={**FORM, "drug_1_relatedness": "",
                                                                        "drug_1_action": "", "csrf_token": token})
    assert missing.status_code == 422 and "ganciclovir" in error_next_to(missing.text, "f-drugs")
    assert web_trial.count(AdverseEvent) == 0
    made = client.post(f"/subjects/{subject}/adverse-events", data={**FORM, "csrf_token": token})
    assert made.status_code == 303 and web_trial.count(AdverseEvent) == 1
    page = client.get(made.headers["location"]).text
    assert "Adverse event recorded." in page and "Neutrophil count decreased" in page and "0.5 x 10e9 /L" in page
    no_reason = client.post(made.headers["location"].split("?")[0], data={"grade": "4", "csrf_token": token})
    assert no_reason.status_code == 422 and "reason" in error_next_to(no_reason.text, "f-update-reason")
    updated = client.post(made.headers["location"].split("?")[0], data={"grade": "4", "reason": "worse",
                                                                        "csrf_token": token})
    assert updated.status_code == 303


def test_a_serious_event_shows_its_clock_and_the_investigator_marks_the_report_sent_once(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/adverse-events/new").text)
    made = client.post(f"/subjects/{subject}/adverse-events", data={
        **FORM, "seriousness": "hospitalisation", "awareness_time": "2025-03-14T08:00", "narrative": "admitted",
        "csrf_token": token})
    assert made.status_code == 303
    event_path = made.headers["location"].split("?")[0]
    page = client.get(event_path).text
    assert "Expedited report" in page and "sae-report.pdf" in page and "Mark the report" not in page
    assert "awaiting a report" in client.get("/").text
    investigator = signed_in(web_trial, "inv-a")
    token = csrf_in(investigator.get(event_path).text)
    sent = investigator.post(event_path + "/sae-report", data={"reference": "CASE-1", "csrf_token": token})
    assert sent.status_code == 303
    twice = investigator.post(event_path + "/sae-report", data={"csrf_token": token})
    assert twice.status_code == 409
    assert "reported on time" in investigator.get(event_path).text


def test_a_lab_proposal_is_confirmed_or_dismissed_by_the_investigator(web_trial, subject):
    chemistry = {"serum_creatinine": 0.8, "alt": 300, "ast": 30, "alt_uln": 40, "ast_uln": 40, "total_bilirubin": 10,
                 "total_bilirubin_uln": 21}
    assert enter(web_trial.client(), web_trial.bearer("coord-a"), subject, "BL", {"chemistry": chemistry}).status_code == 200
    proposal = web_trial.client().get("/api/v1/lab-proposals", headers=web_trial.bearer("inv-a")).json()[0]["id"]
    coordinator = signed_in(web_trial, "coord-a")
    page = coordinator.get("/safety").text
    assert "Alanine aminotransferase increased grade 3" in page and f"/lab-proposals/{proposal}/confirm" not in page
    investigator = signed_in(web_trial, "inv-a")
    page = investigator.get("/safety").text
    token = csrf_in(page)
    empty = investigator.post(f"/lab-proposals/{proposal}/dismiss", data={"reason": "", "csrf_token": token})
    assert empty.status_code == 422 and web_trial.count(LabSafetyProposal) == 1
    confirmed = investigator.post(f"/lab-proposals/{proposal}/confirm", data={
        "outcome": "NOT RECOVERED/NOT RESOLVED", **{k: v for k, v in FORM.items() if k.startswith("drug_")},
        "csrf_token": token})
    assert confirmed.status_code == 303 and web_trial.count(AdverseEvent) == 1
    again = investigator.post(f"/lab-proposals/{proposal}/dismiss", data={"reason": "no", "csrf_token": token})
    assert again.status_code == 409


def test_roles_and_sites_without_safety_work_are_refused(web_trial, subject):
    assert signed_in(web_trial, "mon-a").get(f"/subjects/{subject}/adverse-events/new").status_code == 403
    assert signed_in(web_trial, "coord-b").get(f"/subjects/{subject}/adverse-events/new").status_code == 403
    assert signed_in(web_trial, "stat").get("/safety").status_code == 403
