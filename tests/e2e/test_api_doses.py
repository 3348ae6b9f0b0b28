"""Doses through the API: given, held, refused for the wrong drug or twice a day, by role and site."""

from __future__ import annotations

from datetime import date

from trial_flow import randomized_subject
from web_support import web_trial  # noqa: F401

from cmvtrial.store.tables import DoseAdministration

DAY0 = date(2025, 3, 14)


def test_doses_are_recorded_listed_and_refused_when_they_do_not_fit(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    allocation = randomized_subject(client, coord, "SITEA", "S-001", consent_on=date(2025, 3, 10))
    subject = allocation["subject_id"]
    given = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord, json={
        "drug": "ganciclovir", "dose": 295, "unit": "mg", "route": "intravenous", "date": DAY0.isoformat(),
        "given_by": "nurse Liu", "basis": {"weight_kg": 58.5, "crcl_ml_min": 96}})
    assert given.status_code == 201, given.text
    assert given.json()["study_day"] == 0 and given.json()["planned_dose"] == 295
    before = (web_trial.count(DoseAdministration), web_trial.audit_count())
    twice = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord, json={
        "drug": "ganciclovir", "dose": 295, "unit": "mg", "route": "intravenous", "date": DAY0.isoformat(),
        "given_by": "nurse Liu", "basis": {"weight_kg": 58.5, "crcl_ml_min": 96}})
    assert twice.status_code == 409, twice.text
    future = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord,
                         json={"drug": "ganciclovir", "status": "held", "date": "2025-04-01", "reason": "x"})
    assert future.status_code == 422
    unknown = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord, json={"drug": "aspirin", "date": "2025-03-14"})
    assert unknown.status_code in (404, 409, 422)
    if allocation["arm"] == "gcv":
        il2 = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord,
                          json={"drug": "interleukin-2", "dose": 1, "unit": "MIU", "date": DAY0.isoformat()})
        assert il2.status_code in (409, 422)
    assert (web_trial.count(DoseAdministration), web_trial.audit_count()) == before
    web_trial.clock.advance(days=1)
    held = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord,
                       json={"drug": "ganciclovir", "status": "held", "date": "2025-03-15", "reason": "ANC 0.4"})
    assert held.status_code == 201 and held.json()["status"] == "held"
    listed = client.get(f"/api/v1/subjects/{subject}/doses", headers=web_trial.bearer("mon-a")).json()
    assert [(dose["date"], dose["status"]) for dose in listed] == [("2025-03-14", "given"), ("2025-03-15", "held")]


def test_only_the_subjects_site_staff_record_doses(web_trial):
    client = web_trial.client()
    subject = randomized_subject(client, web_trial.bearer("coord-a"), "SITEA", "S-002",
                                 consent_on=date(2025, 3, 10))["subject_id"]
    tokens = {name: web_trial.bearer(name) for name in ("coord-b", "mon-a", "dm", "stat")}
    before = (web_trial.count(DoseAdministration), web_trial.audit_count())
    for name, headers in tokens.items():
        response = client.post(f"/api/v1/subjects/{subject}/doses", headers=headers,
                               json={"drug": "ganciclovir", "dose": 290, "unit": "mg", "date": DAY0.isoformat()})
        assert response.status_code == 403, name
    assert client.get(f"/api/v1/subjects/{subject}/doses", headers=tokens["coord-b"]).status_code == 403
    assert client.post(f"/api/v1/subjects/{subject}/doses", headers=tokens["mon-a"],
                       json={"drug": "ganciclovir", "colour": "blue"}).status_code == 422
    assert (web_trial.count(DoseAdministration), web_trial.audit_count()) == before
