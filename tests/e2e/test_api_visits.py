"""Visits through the API: the calendar (JSON and iCalendar), the site's worklist, recording visits,
entering visit data until CMV-DNA is negative, signatures, labs and the CMV-DNA series."""

from __future__ import annotations

from datetime import date

import pytest
from trial_flow import HEMATOLOGY, cmv_load, enter, randomized_subject, week
from web_support import PASSWORD, web_trial  # noqa: F401

from cmvtrial.store.tables import ItemValue, Signature, StudyEvent

CONSENT = date(2025, 3, 10)
DAY0 = date(2025, 3, 14)  # the web trial's clock: randomization day


@pytest.fixture
def subject(web_trial):
    client = web_trial.client()
    allocation = randomized_subject(client, web_trial.bearer("coord-a"), "SITEA", "S-001", consent_on=CONSENT)
    return allocation["subject_id"]


def test_weekly_visits_until_cmv_dna_is_negative_end_treatment(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    baseline = enter(client, coord, subject, "BL", {"cmv_load": cmv_load(DAY0, 42000), "hematology": HEMATOLOGY},
                     complete=True)
    assert baseline.status_code == 200, baseline.text
    assert baseline.json()["changed"] and baseline.json()["end_of_treatment"] is None
    for n, load in ((1, 5000), (2, None)):
        web_trial.clock.advance(days=7)
        entry = enter(client, coord, subject, f"TW{n}", {"cmv_load": cmv_load(week(DAY0, n), load)}, complete=True)
        assert entry.status_code == 200, entry.text
    eot = entry.json()["end_of_treatment"]
    assert eot["after"] == week(DAY0, 2).isoformat() and "FU3M" in eot["scheduled"]

    calendar = client.get(f"/api/v1/subjects/{subject}/calendar", headers=coord).json()
    statuses = {visit["visit"]: visit["status"] for visit in calendar["visits"]}
    assert statuses["BL"] == statuses["TW1"] == statuses["TW2"] == "done" and statuses["FU3M"] == "scheduled"
    assert calendar["end_of_treatment"] == week(DAY0, 2).isoformat()

    series = client.get(f"/api/v1/subjects/{subject}/cmv-dna", headers=coord).json()
    assert [p["negative"] for p in series["points"]] == [False, False, True]
    assert series["unit"] == "copies/mL" and series["lloq"] == pytest.approx(150.7)
    labs = {lab["item"]: lab for lab in client.get(f"/api/v1/subjects/{subject}/labs", headers=coord).json()}
    assert labs["anc"]["value"] == 3.1 and labs["anc"]["visit"] == "BL"
    stored = client.get(f"/api/v1/subjects/{subject}/visits/BL", headers=coord).json()
    assert stored["status"] == "done" and {f["form_id"] for f in stored["forms"]} == {"cmv_load", "hematology"}


def test_the_calendar_downloads_as_icalendar_with_only_the_subject_code(web_trial, subject):
    response = web_trial.client().get(f"/api/v1/subjects/{subject}/calendar.ics", headers=web_trial.bearer("coord-a"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/calendar")
    text = response.text
    assert text.startswith("BEGIN:VCALENDAR") and "SITEA-" in text and "S-001" not in text


def test_the_site_worklist_shows_what_is_due_and_overdue(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    due = client.get("/api/v1/sites/SITEA/visits-due", headers=coord).json()
    assert [entry["visit"] for entry in due["due_this_week"]][:1] == ["BL"]
    web_trial.clock.advance(days=10)
    later = client.get("/api/v1/sites/SITEA/visits-due", headers=coord).json()
    assert "BL" in [entry["visit"] for entry in later["overdue"] + later["missed"]]
    assert client.get("/api/v1/sites/SITEA/visits-due", headers=web_trial.bearer("coord-b")).status_code == 403
    assert client.get("/api/v1/sites/NOPE/visits-due", headers=coord).status_code == 404


def test_a_visit_is_recorded_done_or_missed_and_a_change_needs_a_reason(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    done = client.post(f"/api/v1/subjects/{subject}/visits/BL", json={"date": DAY0.isoformat()}, headers=coord)
    assert done.status_code == 200 and done.json()["status"] == "done" and done.json()["deviation"] is None
    web_trial.clock.advance(days=8)
    missed = client.post(f"/api/v1/subjects/{subject}/visits/TW1", json={"missed": True}, headers=coord)
    assert missed.status_code == 422 and missed.json()["errors"][0]["field"] == "reason"
    missed = client.post(f"/api/v1/subjects/{subject}/visits/TW1", json={"missed": True, "reason": "in hospital"},
                         headers=coord)
    assert missed.status_code == 200 and missed.json()["status"] == "missed"
    unknown = client.post(f"/api/v1/subjects/{subject}/visits/XX9", json={"date": DAY0.isoformat()}, headers=coord)
    assert unknown.status_code in (404, 422)


def test_values_outside_hard_limits_or_in_a_foreign_unit_are_refused_naming_each_item(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    before = (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count())
    response = enter(client, coord, subject, "BL", {"hematology": {**HEMATOLOGY, "wbc": -1, "anc": "3 furlongs"},
                                                    "vitals": {"weight_kg": 600}})
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"wbc", "anc", "weight_kg"} <= fields
    assert "hard limit 500 kg" in str(response.json())
    assert (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count()) == before


def test_a_soft_limit_opens_a_query_and_the_answer_says_so(web_trial, subject):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    response = enter(client, coord, subject, "BL", {"vitals": {"weight_kg": 20, "height_cm": 160}})
    assert response.status_code == 200
    findings = response.json()["forms"][0]["findings"]
    assert findings[0]["items"] == ["weight_kg"] and "expected limit" in findings[0]["message"]
    assert len(response.json()["queries_opened"]) == 1


def test_an_investigator_signs_a_complete_visit_with_the_password_again(web_trial, subject):
    client, coord, inv = web_trial.client(), web_trial.bearer("coord-a"), web_trial.bearer("inv-a")
    assert enter(client, coord, subject, "BL", {"hematology": HEMATOLOGY}).status_code == 200
    incomplete = client.post(f"/api/v1/subjects/{subject}/visits/BL/signatures", json={"password": PASSWORD},
                             headers=inv)
    assert incomplete.status_code == 409
    assert enter(client, coord, subject, "BL", {"hematology": HEMATOLOGY}, complete=True).status_code == 200
    events = web_trial.audit_count()
    wrong = client.post(f"/api/v1/subjects/{subject}/visits/BL/signatures", json={"password": "not-my-password"},
                        headers=inv)
    assert wrong.status_code == 401 and web_trial.count(Signature) == 0
    assert web_trial.audit_count() == events + 1  # the refused attempt is on record
    by_coordinator = client.post(f"/api/v1/subjects/{subject}/visits/BL/signatures", json={"password": PASSWORD},
                                 headers=coord)
    assert by_coordinator.status_code == 403
    signed = client.post(f"/api/v1/subjects/{subject}/visits/BL/signatures",
                         json={"password": PASSWORD, "meaning": "review"}, headers=inv)
    assert signed.status_code == 201 and signed.json()["valid"] and signed.json()["meaning"] == "review"
    again = client.post(f"/api/v1/subjects/{subject}/visits/BL/signatures", json={"password": PASSWORD}, headers=inv)
    assert again.status_code == 409 and web_trial.count(Signature) == 1
    changed = enter(client, coord, subject, "BL", {"hematology": {"wbc": 5.4}}, reason="transcription error")
    assert changed.json()["signatures_invalidated"]
    listed = client.get(f"/api/v1/subjects/{subject}/visits/BL/signatures", headers=web_trial.bearer("mon-a")).json()
    assert [signature["valid"] for signature in listed] == [False]


def test_another_site_and_other_roles_are_refused_and_nothing_changes(web_trial, subject):
    client = web_trial.client()
    tokens = {username: web_trial.bearer(username) for username in ("coord-b", "mon-a", "stat", "dm")}
    before = (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count())
    for username, status in (("coord-b", 403), ("mon-a", 403), ("stat", 403), ("dm", 403)):
        headers = tokens[username]
        assert enter(client, headers, subject, "BL", {"hematology": HEMATOLOGY}).status_code == status, username
        assert client.post(f"/api/v1/subjects/{subject}/visits/BL", json={"date": DAY0.isoformat()},
                           headers=headers).status_code == status
    other = tokens["coord-b"]
    for path in ("calendar", "calendar.ics", "labs", "cmv-dna", "visits/BL"):
        assert client.get(f"/api/v1/subjects/{subject}/{path}", headers=other).status_code == 403, path
    assert (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count()) == before


def test_a_subject_not_yet_randomized_has_no_calendar(web_trial):
    from trial_flow import register

    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject_id = register(client, coord, "SITEA", "S-099")
    response = client.get(f"/api/v1/subjects/{subject_id}/calendar", headers=coord)
    assert response.status_code == 409 and "not randomized" in response.json()["detail"]
    assert client.get("/api/v1/subjects/999999/calendar", headers=coord).status_code == 404
