"""Subjects, screening, consent and randomization through the API, with every refusal changing nothing."""

from __future__ import annotations

from datetime import date

import pytest
from trial_flow import randomized_subject, register, screen, screening_record
from web_support import web_trial  # noqa: F401

from cmvtrial.store.tables import Allocation, ItemValue, Subject

CONSENT = date(2025, 3, 10)


def test_a_candidate_is_registered_screened_consented_and_randomized(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject_id = register(client, coord, "sitea", "s-001")
    shown = client.get(f"/api/v1/subjects/{subject_id}", headers=coord).json()
    assert shown["subject"]["site_code"] == "SITEA" and shown["subject"]["screening_number"] == "S-001"
    assert shown["subject"]["status"] == "screening" and shown["eligibility"] is None

    partial = screen(client, coord, subject_id, {"screening_date": "2024-05-20", "birth_date": "1985-09-12"})
    assert partial["eligibility"]["eligible"] is None and "cmv_dna" in partial["missing_required"]
    entry = screen(client, coord, subject_id, screening_record())
    assert entry["eligibility"]["eligible"] is True and entry["subject"]["status"] == "eligible"
    verdicts = {c["id"]: c["verdict"] for c in client.get(f"/api/v1/subjects/{subject_id}/eligibility",
                                                          headers=coord).json()["criteria"]}
    assert verdicts and set(verdicts.values()) <= {"met", "not_met"}

    consent = client.post(f"/api/v1/subjects/{subject_id}/consent", json={"date": "2025-03-10"}, headers=coord)
    assert consent.status_code == 200 and consent.json()["consent_date"] == "2025-03-10"
    allocation = client.post(f"/api/v1/subjects/{subject_id}/randomization", json={"reason": "eligible"}, headers=coord)
    assert allocation.status_code == 201
    body = allocation.json()
    assert body["arm"] in {"il2_gcv", "gcv"} and body["subject_number"] and body["allocated_by"] == "coord-a"
    detail = client.get(f"/api/v1/subjects/{subject_id}", headers=coord).json()
    assert detail["subject"]["status"] == "randomized" and detail["allocation"]["arm"] == body["arm"]


def test_an_ineligible_candidate_becomes_a_screen_failure_naming_the_criterion(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject_id = register(client, coord, "SITEA", "S-002")
    entry = screen(client, coord, subject_id, screening_record("not_eligible_nyha3.json"))
    assert entry["eligibility"]["eligible"] is False and entry["subject"]["status"] == "screen_failed"
    reasons = entry["subject"]["screen_failure_reasons"]
    assert reasons and reasons[0]["category"] == "eligibility"
    assert client.post(f"/api/v1/subjects/{subject_id}/consent", json={"date": "2025-03-10"},
                       headers=coord).status_code == 200
    refused = client.post(f"/api/v1/subjects/{subject_id}/randomization", json={}, headers=coord)
    assert refused.status_code == 409 and refused.json()["code"] == "not_eligible"


def test_a_declined_candidate_is_recorded_and_listed_in_the_screening_log(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject_id = register(client, coord, "SITEA", "S-003")
    failed = client.post(f"/api/v1/subjects/{subject_id}/screen-failure",
                         json={"category": "declined", "detail": "declined after the information visit"}, headers=coord)
    assert failed.status_code == 200 and failed.json()["status"] == "screen_failed"
    log = client.get("/api/v1/screening-log", headers=web_trial.bearer("stat")).json()
    assert log["counts"]["declined_to_participate"] == 1
    assert [c["screening_number"] for c in log["candidates"]] == ["S-003"]
    assert "weight_kg" not in str(log)  # the log carries no clinical values


def test_subjects_are_listed_by_site_status_and_search(web_trial):
    client, coord_a, coord_b = web_trial.client(), web_trial.bearer("coord-a"), web_trial.bearer("coord-b")
    for number in ("A-100", "A-200"):
        register(client, coord_a, "SITEA", number)
    register(client, coord_b, "SITEB", "B-100")
    assert [s["screening_number"] for s in client.get("/api/v1/subjects", headers=coord_a).json()] == ["A-100", "A-200"]
    everyone = client.get("/api/v1/subjects", headers=web_trial.bearer("dm")).json()
    assert len(everyone) == 3
    found = client.get("/api/v1/subjects?search=100", headers=web_trial.bearer("dm")).json()
    assert sorted(s["screening_number"] for s in found) == ["A-100", "B-100"]
    assert client.get("/api/v1/subjects?search=a-2", headers=coord_a).json()[0]["screening_number"] == "A-200"
    assert client.get("/api/v1/subjects?search=%25", headers=coord_a).json() == []  # a wildcard is a character
    assert client.get("/api/v1/subjects?status=eligible", headers=coord_a).json() == []
    refused = client.get("/api/v1/subjects?site=SITEB", headers=coord_a)
    assert refused.status_code == 403


def test_another_sites_subject_is_refused_everywhere_and_nothing_changes(web_trial):
    client = web_trial.client()
    subject_id = register(client, web_trial.bearer("coord-a"), "SITEA", "S-010")
    other = web_trial.bearer("coord-b")
    before = (web_trial.count(ItemValue), web_trial.audit_count())
    calls = [
        ("GET", f"/api/v1/subjects/{subject_id}", None),
        ("POST", f"/api/v1/subjects/{subject_id}/screening", {"record": screening_record()}),
        ("POST", f"/api/v1/subjects/{subject_id}/consent", {"date": "2025-03-10"}),
        ("POST", f"/api/v1/subjects/{subject_id}/screen-failure", {"category": "other", "detail": "x"}),
        ("POST", f"/api/v1/subjects/{subject_id}/randomization", {}),
        ("GET", f"/api/v1/subjects/{subject_id}/eligibility", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, json=body, headers=other)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["code"] == "forbidden"
    assert (web_trial.count(ItemValue), web_trial.audit_count()) == before


@pytest.mark.parametrize("username", ["mon-a", "stat", "dm", "admin"])
def test_roles_without_site_work_cannot_register_or_randomize(web_trial, username):
    client = web_trial.client()
    subject_id = register(client, web_trial.bearer("coord-a"), "SITEA", "S-020")
    headers = web_trial.bearer(username)
    before = (web_trial.count(Subject), web_trial.audit_count())
    assert client.post("/api/v1/subjects", json={"site_code": "SITEA", "screening_number": "X-1"},
                       headers=headers).status_code == 403
    assert client.post(f"/api/v1/subjects/{subject_id}/randomization", json={}, headers=headers).status_code == 403
    assert (web_trial.count(Subject), web_trial.audit_count()) == before


def test_a_statistician_sees_no_individual_subject(web_trial):
    client = web_trial.client()
    subject_id = register(client, web_trial.bearer("coord-a"), "SITEA", "S-030")
    stat = web_trial.bearer("stat")
    assert client.get("/api/v1/subjects", headers=stat).status_code == 403
    assert client.get(f"/api/v1/subjects/{subject_id}", headers=stat).status_code == 403


def test_bad_screening_input_names_the_field_and_stores_nothing(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject_id = register(client, coord, "SITEA", "S-040")
    before = (web_trial.count(ItemValue), web_trial.audit_count())
    bad = client.post(f"/api/v1/subjects/{subject_id}/screening",
                      json={"record": screening_record(weight_kg=-5)}, headers=coord)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("weight_kg")
    unknown = client.post(f"/api/v1/subjects/{subject_id}/screening",
                          json={"record": {"cmv_dna": {"value": 10, "unit": "furlongs"}}}, headers=coord)
    assert unknown.status_code == 422 and unknown.json()["code"] in ("unit_error", "invalid_input")
    typo = client.post(f"/api/v1/subjects/{subject_id}/screening", json={"recrod": {}}, headers=coord)
    assert typo.status_code == 422 and {e["field"] for e in typo.json()["errors"]} == {"record", "recrod"}
    assert (web_trial.count(ItemValue), web_trial.audit_count()) == before
    future = client.post(f"/api/v1/subjects/{subject_id}/consent", json={"date": "2099-01-01"}, headers=coord)
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "date"


def test_a_double_submit_neither_registers_nor_randomizes_twice(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    allocation = randomized_subject(client, coord, "SITEA", "S-050", consent_on=CONSENT)
    again = client.post("/api/v1/subjects", json={"site_code": "SITEA", "screening_number": "S-050"}, headers=coord)
    assert again.status_code == 409 and again.json()["code"] == "already_exists"
    before = (web_trial.count(Allocation), web_trial.audit_count())
    twice = client.post(f"/api/v1/subjects/{allocation['subject_id']}/randomization", json={}, headers=coord)
    assert twice.status_code == 409 and twice.json()["code"] == "already_randomized"
    assert (web_trial.count(Allocation), web_trial.audit_count()) == before
    same = client.post(f"/api/v1/subjects/{allocation['subject_id']}/consent", json={"date": "2025-03-10"},
                       headers=coord)
    assert same.status_code == 200 and web_trial.audit_count() == before[1]  # the same date again records nothing


def test_a_browser_session_needs_the_csrf_header_to_change_anything(web_trial):
    client = web_trial.client()
    csrf = web_trial.api_login(client, "coord-a")
    body = {"site_code": "SITEA", "screening_number": "S-060"}
    refused = client.post("/api/v1/subjects", json=body)
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_rejected"
    assert web_trial.count(Subject) == 0
    assert client.post("/api/v1/subjects", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201


def test_every_request_body_shows_an_example_in_the_schema(web_trial):
    schema = web_trial.client().get("/api/v1/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            ref = body["schema"].get("$ref", "")
            shown = body["schema"].get("examples") or body.get("examples") or components.get(
                ref.rpartition("/")[2], {}).get("examples")
            assert shown, (method, path)
