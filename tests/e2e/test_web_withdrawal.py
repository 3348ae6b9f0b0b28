"""A subject's end of study through the API and the pages: the investigator withdraws (the page has a
confirmation step and a CSRF token) or records completion once the final visit is done; other roles,
other sites and bad input are refused with problem+json or an error beside the field, and change
nothing."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from test_web_subjects import signed_in
from trial_flow import cmv_load, enter, randomized_subject, register
from web_support import PASSWORD, csrf_in, web_trial  # noqa: F401

from cmvtrial.services import accounts
from cmvtrial.store.tables import StudyEvent, Subject

CONSENT = date(2025, 3, 10)
TODAY = date(2025, 3, 14)                 # the web trial's clock
WITHDRAWAL = {"date": "2025-03-14", "reason": "withdrew_consent"}


@pytest.fixture
def subject(web_trial):
    """A randomized subject at SITEA (randomized on the clock's day, 14 March 2025)."""
    client = web_trial.client()
    return randomized_subject(client, web_trial.bearer("coord-a"), "SITEA", "S-1", consent_on=CONSENT)["subject_id"]


@pytest.fixture
def other_site_investigator(web_trial):
    uow = web_trial.uow()
    accounts.add_user(uow, accounts.actor_for(uow, "admin"), "inv-b", PASSWORD, "investigator", "SITEB")
    return "inv-b"


def stored(web_trial, subject_id):
    with web_trial.database.session_factory() as session:
        row = session.get(Subject, subject_id)
        return row.status, row.end_of_study_date, row.end_of_study_reason


def end_treatment(web_trial, subject) -> None:
    """A week later, TW1's CMV-DNA is not detected: treatment ends and FU3M is planned 90 days on."""
    web_trial.clock.advance(days=7)
    response = enter(web_trial.client(), web_trial.bearer("coord-a"), subject, "TW1",
                     {"cmv_load": cmv_load(TODAY + timedelta(days=7), None)}, on=TODAY + timedelta(days=7))
    assert response.status_code == 200, response.text


def final_visit_done(web_trial, subject) -> date:
    """Ninety days after the end of treatment, FU3M is done; its date."""
    fu3m = TODAY + timedelta(days=97)
    web_trial.clock.advance(days=90)
    response = web_trial.client().post(f"/api/v1/subjects/{subject}/visits/FU3M", headers=web_trial.bearer("coord-a"),
                                       json={"date": fu3m.isoformat()})
    assert response.status_code == 200, response.text
    return fu3m


# ------------------------------------------------------------------------------------------------
# API


def test_the_investigator_withdraws_a_subject_and_a_second_submit_is_refused(web_trial, subject):
    client, inv = web_trial.client(), web_trial.bearer("inv-a")
    response = client.post(f"/api/v1/subjects/{subject}/withdrawal", headers=inv,
                           json={**WITHDRAWAL, "details": "moving away"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["date"], body["reason"], body["dsdecod"], body["details"]) == (
        "withdrawn", "2025-03-14", "withdrew_consent", "WITHDRAWAL BY SUBJECT", "moving away")
    shown = client.get(f"/api/v1/subjects/{subject}", headers=inv).json()["subject"]
    assert (shown["status"], shown["end_of_study_date"], shown["end_of_study_reason"]) == (
        "withdrawn", "2025-03-14", "withdrew_consent")
    coord = web_trial.bearer("coord-a")  # issuing a token is audited: before counting
    before = web_trial.audit_count()
    again = client.post(f"/api/v1/subjects/{subject}/withdrawal", headers=inv, json=WITHDRAWAL)
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "study_ended"
    dose = client.post(f"/api/v1/subjects/{subject}/doses", headers=coord, json={
        "drug": "ganciclovir", "dose": 300, "unit": "mg", "route": "intravenous", "date": "2025-03-15",
        "given_by": "Nurse Li"})
    assert dose.status_code in (409, 422)  # after the withdrawal (or after today): never stored
    assert web_trial.audit_count() == before


@pytest.mark.parametrize(("who", "body", "status", "code"), [
    ("coord-a", WITHDRAWAL, 403, "forbidden"),
    ("mon-a", WITHDRAWAL, 403, "forbidden"),
    ("inv-b", WITHDRAWAL, 403, "forbidden"),
    ("inv-a", {**WITHDRAWAL, "date": "2025-03-15"}, 422, "invalid_input"),
    ("inv-a", {**WITHDRAWAL, "date": "2025-03-13"}, 422, "invalid_input"),
    ("inv-a", {**WITHDRAWAL, "reason": "bored"}, 422, "invalid_input"),
    ("inv-a", {**WITHDRAWAL, "reason": "other"}, 422, "invalid_input"),
    ("inv-a", {"date": "2025-03-14"}, 422, "invalid_input"),
    ("inv-a", {**WITHDRAWAL, "extra": 1}, 422, "invalid_input"),
])
def test_refused_withdrawals_change_nothing(web_trial, subject, other_site_investigator, who, body, status, code):
    client, headers = web_trial.client(), web_trial.bearer(who)
    before = web_trial.audit_count()
    response = client.post(f"/api/v1/subjects/{subject}/withdrawal", headers=headers, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert web_trial.audit_count() == before and stored(web_trial, subject)[0] == "randomized"


def test_a_candidate_and_an_unknown_subject_cannot_be_withdrawn(web_trial):
    client, inv = web_trial.client(), web_trial.bearer("inv-a")
    candidate = register(client, web_trial.bearer("coord-a"), "SITEA", "S-9")
    before = web_trial.audit_count()
    refused = client.post(f"/api/v1/subjects/{candidate}/withdrawal", headers=inv, json=WITHDRAWAL)
    assert (refused.status_code, refused.json()["code"]) == (409, "not_randomized")
    missing = client.post("/api/v1/subjects/9999/withdrawal", headers=inv, json=WITHDRAWAL)
    assert missing.status_code == 404
    assert web_trial.audit_count() == before


def test_completion_waits_for_the_final_visit(web_trial, subject):
    client = web_trial.client()
    refused = client.post(f"/api/v1/subjects/{subject}/completion", headers=web_trial.bearer("inv-a"), json={})
    assert (refused.status_code, refused.json()["code"]) == (409, "final_visit_not_done")
    end_treatment(web_trial, subject)
    fu3m = final_visit_done(web_trial, subject)
    inv = web_trial.bearer("inv-a")
    done = client.post(f"/api/v1/subjects/{subject}/completion", headers=inv, json={"details": None})
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["date"], done.json()["dsdecod"]) == ("completed", fu3m.isoformat(),
                                                                                     "COMPLETED")


# ------------------------------------------------------------------------------------------------
# Pages


def test_the_withdrawal_page_confirms_before_it_records(web_trial, subject):
    client = signed_in(web_trial, "inv-a")
    page = client.get(f"/subjects/{subject}")
    assert f'href="/subjects/{subject}/withdraw"' in page.text and "Withdraw from study" in page.text
    form = client.get(f"/subjects/{subject}/withdraw")
    assert form.status_code == 200 and 'name="csrf_token"' in form.text and 'name="confirm"' in form.text
    token = csrf_in(form.text)
    before = web_trial.audit_count()
    unconfirmed = client.post(f"/subjects/{subject}/withdraw", data={**WITHDRAWAL, "csrf_token": token})
    assert unconfirmed.status_code == 422 and "Tick the box to confirm the withdrawal." in unconfirmed.text
    no_words = client.post(f"/subjects/{subject}/withdraw", data={
        **WITHDRAWAL, "reason": "other", "confirm": "yes", "csrf_token": token})
    assert no_words.status_code == 422 and "needs the reason in words" in no_words.text
    assert 'value="other" selected' in no_words.text  # what was typed stays
    future = client.post(f"/subjects/{subject}/withdraw", data={
        **WITHDRAWAL, "date": "2025-03-20", "confirm": "yes", "csrf_token": token})
    assert future.status_code == 422 and "after today" in future.text
    assert web_trial.audit_count() == before and stored(web_trial, subject)[0] == "randomized"

    done = client.post(f"/subjects/{subject}/withdraw", data={
        **WITHDRAWAL, "reason": "lost_to_follow_up", "confirm": "yes", "csrf_token": token})
    assert done.status_code == 303 and done.headers["location"] == f"/subjects/{subject}?notice=withdrawn"
    assert stored(web_trial, subject) == ("lost_to_follow_up", TODAY, "lost_to_follow_up")
    shown = client.get(done.headers["location"]).text
    assert "Withdrawal recorded" in shown and 'id="end-of-study"' in shown and "lost to follow-up" in shown
    assert f'href="/subjects/{subject}/withdraw"' not in shown
    again = client.get(f"/subjects/{subject}/withdraw")
    assert again.status_code == 200 and "already ended" in again.text and 'name="confirm"' not in again.text
    with web_trial.database.session_factory() as session:
        assert {e.status for e in session.query(StudyEvent).filter_by(subject_id=subject)} <= {"done", "cancelled",
                                                                                              "planned"}


@pytest.mark.parametrize("username", ["coord-a", "mon-a", "coord-b", "inv-b", "dm", "stat"])
def test_other_roles_and_other_sites_cannot_see_or_post_the_withdrawal(web_trial, subject, other_site_investigator,
                                                                       username):
    client = signed_in(web_trial, username)
    assert client.get(f"/subjects/{subject}/withdraw").status_code in (403, 404)
    token = csrf_in(client.get("/subjects").text) if username not in ("stat",) else csrf_in(client.get("/").text)
    before = web_trial.audit_count()
    for path in ("withdraw", "complete"):
        response = client.post(f"/subjects/{subject}/{path}", data={**WITHDRAWAL, "confirm": "yes",
                                                                   "csrf_token": token})
        assert response.status_code in (403, 404), (path, response.status_code)
    assert web_trial.audit_count() == before and stored(web_trial, subject)[0] == "randomized"
    page = client.get(f"/subjects/{subject}")
    assert "/withdraw" not in page.text


def test_the_subject_page_offers_completion_once_the_final_visit_is_done(web_trial, subject):
    end_treatment(web_trial, subject)
    assert f'action="/subjects/{subject}/complete"' not in signed_in(web_trial, "inv-a").get(f"/subjects/{subject}").text
    fu3m = final_visit_done(web_trial, subject)
    client = signed_in(web_trial, "inv-a")
    page = client.get(f"/subjects/{subject}")
    assert f'action="/subjects/{subject}/complete"' in page.text
    token = csrf_in(page.text)
    unconfirmed = client.post(f"/subjects/{subject}/complete", data={"csrf_token": token})
    assert unconfirmed.status_code == 422 and "Tick the box to confirm the completion." in unconfirmed.text
    assert stored(web_trial, subject)[0] == "in_follow_up"
    done = client.post(f"/subjects/{subject}/complete", data={"confirm": "yes", "csrf_token": token})
    assert done.status_code == 303 and done.headers["location"].endswith("?notice=completed")
    assert stored(web_trial, subject) == ("completed", fu3m, "completed")
    shown = client.get(done.headers["location"]).text
    assert "Completion recorded." in shown and 'action="/subjects/{}/complete"'.format(subject) not in shown
