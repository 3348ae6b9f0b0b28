"""Safety through the API: adverse events, lab-grade proposals, SAE clock, submission and report form."""

from __future__ import annotations

from datetime import date

import pytest
from trial_flow import enter, randomized_subject
from web_support import web_trial  # noqa: F401

from cmvtrial.store.tables import AdverseEvent, LabSafetyProposal

DAY0 = date(2025, 3, 14)
DRUGS = [{"drug": "interleukin-2", "relatedness": "unlikely", "action_taken": "DOSE NOT CHANGED"},
         {"drug": "ganciclovir", "relatedness": "probable", "action_taken": "DRUG INTERRUPTED"}]
EVENT = {"term": "Neutropenia", "start_date": "2025-03-13", "grade": 3, "outcome": "RECOVERING/RESOLVING",
         "drugs": DRUGS}


@pytest.fixture
def subject(web_trial):
    return randomized_subject(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-001",
                              consent_on=date(2025, 3, 10))["subject_id"]


def test_an_adverse_event_is_recorded_with_the_ctcae_wording_and_updated_with_a_reason(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    made = client.post(f"/api/v1/subjects/{subject}/adverse-events", json={"event": EVENT}, headers=coord)
    assert made.status_code == 201, made.text
    event = made.json()
    assert event["term"] == "Neutrophil count decreased" and event["ctcae_term"] and "0.5 x 10e9 /L" in event["grade_text"]
    no_reason = client.request("PATCH", f"/api/v1/adverse-events/{event['id']}", json={"changes": {"grade": 4}}, headers=coord)
    assert no_reason.status_code == 422
    raised = client.request("PATCH", f"/api/v1/adverse-events/{event['id']}", json={"changes": {"grade": 4}, "reason": "worse"},
                          headers=coord)
    assert raised.status_code == 200 and raised.json()["grade"] == 4
    assert [e["id"] for e in client.get(f"/api/v1/adverse-events?subject_id={subject}",
                                        headers=web_trial.bearer("mon-a")).json()] == [event["id"]]
    assert client.get(f"/api/v1/adverse-events/{event['id']}", headers=web_trial.bearer("coord-b")).status_code == 403
    assert client.get("/api/v1/adverse-events?site=SITEB", headers=coord).status_code == 403


def test_a_hard_problem_is_refused_naming_its_field_and_nothing_is_stored(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    events = web_trial.audit_count()
    bad = client.post(f"/api/v1/subjects/{subject}/adverse-events",
                      json={"event": {**EVENT, "end_date": "2025-03-01"}}, headers=coord)
    assert bad.status_code == 422 and "end_date" in {e["field"] for e in bad.json()["errors"]}
    other = web_trial.bearer("coord-b")
    before = (web_trial.count(AdverseEvent), web_trial.audit_count())
    assert before[1] > events  # the token made above
    assert client.post(f"/api/v1/subjects/{subject}/adverse-events", json={"event": EVENT},
                       headers=other).status_code == 403
    assert (web_trial.count(AdverseEvent), web_trial.audit_count()) == before


def test_a_serious_event_runs_the_report_clock_until_the_investigator_submits(web_trial, subject):
    client, coord, inv = web_trial.client(), web_trial.bearer("coord-a"), web_trial.bearer("inv-a")
    serious = {**EVENT, "seriousness": ["hospitalisation"], "awareness_time": "2025-03-14T08:00:00Z",
               "narrative": "Admitted with febrile neutropenia."}
    event = client.post(f"/api/v1/subjects/{subject}/adverse-events", json={"event": serious}, headers=coord).json()
    listed = client.get("/api/v1/serious-adverse-events", headers=coord).json()
    assert [(s["adverse_event"]["id"], s["status"]) for s in listed] == [(event["id"], "due")]
    web_trial.clock.advance(days=1)
    assert [s["adverse_event"]["id"] for s in client.get("/api/v1/serious-adverse-events?overdue=true",
                                                         headers=coord).json()] == [event["id"]]
    html = client.get(f"/api/v1/adverse-events/{event['id']}/sae-report.html", headers=coord)
    assert html.status_code == 200 and "Serious adverse event report" in html.text
    pdf = client.get(f"/api/v1/adverse-events/{event['id']}/sae-report.pdf", headers=coord)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert client.post(f"/api/v1/adverse-events/{event['id']}/sae-report", json={}, headers=coord).status_code == 403
    sent = client.post(f"/api/v1/adverse-events/{event['id']}/sae-report", json={"reference": "CASE-1"}, headers=inv)
    assert sent.status_code == 200 and sent.json()["status"] == "reported_late"
    twice = client.post(f"/api/v1/adverse-events/{event['id']}/sae-report", json={}, headers=inv)
    assert twice.status_code == 409
    assert client.get("/api/v1/serious-adverse-events?overdue=true", headers=coord).json() == []


def test_a_lab_value_proposes_an_event_the_investigator_confirms_or_dismisses(web_trial, subject):
    client, coord, inv = web_trial.client(), web_trial.bearer("coord-a"), web_trial.bearer("inv-a")
    chemistry = {"serum_creatinine": 0.8, "alt": 300, "ast": 30, "alt_uln": 40, "ast_uln": 40, "total_bilirubin": 10,
                 "total_bilirubin_uln": 21}
    entry = enter(client, coord, subject, "BL", {"chemistry": chemistry})
    assert entry.status_code == 200 and entry.json()["lab_reviews"], entry.text
    proposals = client.get("/api/v1/lab-proposals", headers=inv).json()
    assert len(proposals) == 1 and proposals[0]["term"] == "Alanine aminotransferase increased"
    proposal = proposals[0]["id"]
    assert client.post(f"/api/v1/lab-proposals/{proposal}/confirm", json={"details": {}},
                       headers=coord).status_code == 403
    before = (web_trial.count(AdverseEvent), web_trial.count(LabSafetyProposal))
    incomplete = client.post(f"/api/v1/lab-proposals/{proposal}/confirm", json={"details": {}}, headers=inv)
    assert incomplete.status_code == 422 and (web_trial.count(AdverseEvent), web_trial.count(LabSafetyProposal)) == before
    confirmed = client.post(f"/api/v1/lab-proposals/{proposal}/confirm", headers=inv, json={
        "details": {"outcome": "NOT RECOVERED/NOT RESOLVED", "drugs": DRUGS}})
    assert confirmed.status_code == 200 and confirmed.json()["adverse_event"]["source"] == "lab_grading"
    again = client.post(f"/api/v1/lab-proposals/{proposal}/dismiss", json={"reason": "no"}, headers=inv)
    assert again.status_code == 409
    assert client.get("/api/v1/lab-proposals", headers=inv).json() == []
    assert len(client.get("/api/v1/lab-proposals?status=all", headers=inv).json()) == 1
