"""The services through the API: trial status, sites, users, audit, protocol, and the calculators,
with refusals by role and by site that change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from web_support import PASSWORD, web_trial  # noqa: F401

from cmvtrial.store.tables import Site, User

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"


def record(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def test_trial_status_counts_what_the_caller_may_see(web_trial):
    client = web_trial.client()
    status = client.get("/api/v1/trial", headers=web_trial.bearer("coord-b")).json()
    assert status["protocol_id"] == "sle-cmv-il2" and len(status["sha256"]) == 64
    assert [site["code"] for site in status["sites"]] == ["SITEB"]
    everything = client.get("/api/v1/trial", headers=web_trial.bearer("dm")).json()
    assert [site["code"] for site in everything["sites"]] == ["SITEA", "SITEB"]


def test_an_admin_adds_a_site_and_a_user_each_audited_with_the_reason(web_trial):
    client, admin = web_trial.client(), web_trial.bearer("admin")
    events = web_trial.audit_count()
    site = client.post("/api/v1/sites", json={"code": "sitec", "name": "Site C", "reason": "third site"}, headers=admin)
    assert site.status_code == 201 and site.json()["code"] == "SITEC"
    user = client.post(
        "/api/v1/users",
        json={"username": "Li.Wei", "password": PASSWORD, "role": "investigator", "site_code": "SITEC", "full_name": "Li Wei"},
        headers=admin,
    )
    assert user.status_code == 201
    assert user.json() == {**user.json(), "username": "li.wei", "site_code": "SITEC", "active": True}
    trail = client.get("/api/v1/audit/events?limit=2", headers=admin).json()
    assert [event["action"] for event in trail] == ["user.create", "site.create"]
    assert trail[1]["reason"] == "third site" and trail[1]["after"]["code"] == "SITEC"
    assert "password_hash" not in json.dumps(trail[0]["after"])
    assert web_trial.audit_count() == events + 2


@pytest.mark.parametrize(
    ("username", "method", "path", "payload"),
    [
        ("coord-a", "POST", "/api/v1/sites", {"code": "SITEC", "name": "C"}),
        ("stat", "POST", "/api/v1/users", {"username": "x.y", "password": PASSWORD, "role": "monitor"}),
        ("coord-a", "GET", "/api/v1/users", None),
        ("stat", "GET", "/api/v1/audit/events", None),
        ("coord-a", "GET", "/api/v1/audit/verification", None),
        ("stat", "GET", "/api/v1/tokens?all=true", None),
    ],
)
def test_a_wrong_role_is_refused_and_nothing_changes(web_trial, username, method, path, payload):
    client, headers = web_trial.client(), web_trial.bearer(username)
    before = (web_trial.count(Site), web_trial.count(User), web_trial.audit_count())
    response = client.request(method, path, json=payload, headers=headers)
    assert response.status_code == 403 and response.json()["code"] == "forbidden"
    assert (web_trial.count(Site), web_trial.count(User), web_trial.audit_count()) == before


def test_site_users_see_only_their_own_site(web_trial):
    client = web_trial.client()
    assert [s["code"] for s in client.get("/api/v1/sites", headers=web_trial.bearer("coord-b")).json()] == ["SITEB"]
    users = client.get("/api/v1/users", headers=web_trial.bearer("mon-a")).json()
    assert {user["username"] for user in users} == {"coord-a", "inv-a", "mon-a"}
    events = client.get("/api/v1/audit/events?limit=100", headers=web_trial.bearer("mon-a")).json()
    assert events and {event["site_id"] for event in events} == {web_trial.sites["SITEA"]}


def test_the_audit_chain_verifies(web_trial):
    result = web_trial.client().get("/api/v1/audit/verification", headers=web_trial.bearer("dm")).json()
    assert result["ok"] is True and result["count"] == web_trial.audit_count() and len(result["last_hash"]) == 64


def test_the_protocol_in_force_is_the_stored_text(web_trial):
    protocol = web_trial.client().get("/api/v1/protocol", headers=web_trial.bearer("stat")).json()
    assert protocol["id"] == "sle-cmv-il2"
    assert {"arms", "eligibility", "visits", "forms", "endpoints"} <= set(protocol)
    with web_trial.uow().reading() as uow:
        assert protocol["sha256"] == uow.protocols.list()[0].sha256


@pytest.mark.parametrize(
    ("fixture", "eligible"),
    [("eligible.json", True), ("not_eligible_nyha3.json", False), ("undetermined_no_creatinine.json", None)],
)
def test_the_eligibility_check_judges_a_screening_record(web_trial, fixture, eligible):
    response = web_trial.client().post("/api/v1/eligibility/check", json=record(fixture), headers=web_trial.bearer("coord-a"))
    assert response.status_code == 200
    body = response.json()
    assert body["eligible"] is eligible
    assert {criterion["verdict"] for criterion in body["criteria"]} <= {"met", "not_met", "unknown"}


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"cmv_dna": {"value": 4200, "unit": "furlongs"}}, "unit_error", "cmv_dna.unit"),
        ({"weight_kg": 600}, "out_of_range", "weight_kg"),
        ({"weight_kg": -3}, "invalid_input", "weight_kg"),
        ({"favourite_colour": "blue"}, "invalid_input", "favourite_colour"),
    ],
)
def test_a_bad_screening_record_names_the_field_and_stores_nothing(web_trial, change, code, field):
    headers = web_trial.bearer("coord-a")
    events = web_trial.audit_count()
    response = web_trial.client().post("/api/v1/eligibility/check", json={**record("eligible.json"), **change}, headers=headers)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == code and body["errors"][0]["field"] == field
    assert web_trial.audit_count() == events


def test_a_screening_record_must_be_an_object(web_trial):
    response = web_trial.client().post("/api/v1/eligibility/check", json=[1, 2], headers=web_trial.bearer("coord-a"))
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"


def test_the_ctcae_grade_of_a_lab_value(web_trial):
    client, headers = web_trial.client(), web_trial.bearer("inv-a")
    graded = client.post(
        "/api/v1/ctcae/grade", json={"term": "Neutrophil count decreased", "value": 0.8, "unit": "10^9/L", "lln": 2.0},
        headers=headers,
    )
    assert graded.status_code == 200
    assert graded.json()["grade"] == 3 and graded.json()["criterion"]
    bad = client.post("/api/v1/ctcae/grade", json={"term": "Neutrophil count decreased", "value": 0.8, "unit": "parsecs"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "unit_error"
    unknown = client.post("/api/v1/ctcae/grade", json={"term": "Feeling blue", "value": 1, "unit": "g/L"}, headers=headers)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "term"
