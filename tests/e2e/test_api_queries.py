"""Queries through the API: a monitor opens one on a stored value, the site answers, the monitor
closes it; every step out of turn is refused and changes nothing."""

from __future__ import annotations

from datetime import date

from trial_flow import HEMATOLOGY, enter, randomized_subject
from web_support import web_trial  # noqa: F401

from cmvtrial.store.tables import Query


def test_a_query_is_opened_answered_and_closed(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject = randomized_subject(client, coord, "SITEA", "S-001", consent_on=date(2025, 3, 10))["subject_id"]
    assert enter(client, coord, subject, "BL", {"hematology": HEMATOLOGY}).status_code == 200
    monitor, other_coord, dm = web_trial.bearer("mon-a"), web_trial.bearer("coord-b"), web_trial.bearer("dm")
    body = {"subject_id": subject, "visit": "BL", "form": "hematology", "item": "anc", "text": "Please confirm the ANC."}
    assert client.post("/api/v1/queries", json=body, headers=coord).status_code == 403
    missing = client.post("/api/v1/queries", json={**body, "item": "wbc_typo"}, headers=monitor)
    assert missing.status_code == 404
    opened = client.post("/api/v1/queries", json=body, headers=monitor)
    assert opened.status_code == 201 and opened.json()["status"] == "open" and opened.json()["value"] == "3.1 10*9/L"
    query_id = opened.json()["id"]

    before = (web_trial.count(Query), web_trial.audit_count())
    assert client.post(f"/api/v1/queries/{query_id}/answer", json={"answer": "ok"}, headers=other_coord).status_code == 403
    assert client.post(f"/api/v1/queries/{query_id}/answer", json={"answer": " "}, headers=coord).status_code == 422
    assert client.post(f"/api/v1/queries/{query_id}/close", json={}, headers=monitor).status_code == 422
    assert (web_trial.count(Query), web_trial.audit_count()) == before

    answered = client.post(f"/api/v1/queries/{query_id}/answer", json={"answer": "Confirmed with the lab."},
                           headers=coord)
    assert answered.status_code == 200 and answered.json()["answered_by"] == "coord-a"
    twice = client.post(f"/api/v1/queries/{query_id}/answer", json={"answer": "again"}, headers=coord)
    assert twice.status_code == 409
    assert client.post(f"/api/v1/queries/{query_id}/close", json={}, headers=dm).status_code == 403  # not the opener
    reopened = client.post(f"/api/v1/queries/{query_id}/reopen", json={"text": "Attach the report."}, headers=monitor)
    assert reopened.status_code == 200 and reopened.json()["status"] == "open"
    client.post(f"/api/v1/queries/{query_id}/answer", json={"answer": "Attached."}, headers=coord)
    closed = client.post(f"/api/v1/queries/{query_id}/close", json={}, headers=monitor)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"

    assert [q["id"] for q in client.get("/api/v1/queries?status=closed", headers=coord).json()] == [query_id]
    assert client.get("/api/v1/queries", headers=other_coord).json() == []
    assert client.get(f"/api/v1/queries?subject_id={subject}", headers=other_coord).status_code == 403
    assert client.get("/api/v1/queries", headers=web_trial.bearer("stat")).status_code == 403
    assert client.get("/api/v1/queries?status=lost", headers=coord).status_code == 422
