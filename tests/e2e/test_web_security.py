"""Security of the pages of issues 3-8, checked over every route the app has (so a new page is
covered without editing this file): a signed-out visitor is sent to sign in, every POST refuses a
missing or foreign CSRF token and changes nothing, every form on every page carries the token,
and the dashboard shows each role only its panels."""

from __future__ import annotations

import re
from datetime import date

import pytest
from fastapi.routing import APIRoute
from test_web_subjects import signed_in
from trial_flow import HEMATOLOGY, enter, randomized_subject
from web_support import csrf_in, web_trial  # noqa: F401

SIGN_IN = {"/login", "/logout"}
MINE = ("/subjects", "/queries", "/safety", "/reports", "/exports", "/adverse-events", "/lab-proposals")


def page_routes(app, method):
    """Every page route (web_routers(), which the app includes) of these areas for ``method``."""
    from cmvtrial.adapters.web.routes import web_routers

    for router in web_routers():
        for route in router.routes:
            if isinstance(route, APIRoute) and method in route.methods:
                if route.path.startswith(MINE) and route.path not in SIGN_IN:
                    yield route.path


@pytest.fixture
def ids(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject = randomized_subject(client, coord, "SITEA", "S-1", consent_on=date(2025, 3, 10))["subject_id"]
    enter(client, coord, subject, "BL", {"hematology": HEMATOLOGY})
    query = client.post("/api/v1/queries", headers=web_trial.bearer("mon-a"), json={
        "subject_id": subject, "visit": "BL", "form": "hematology", "item": "anc", "text": "Please confirm."}).json()["id"]
    event = client.post(f"/api/v1/subjects/{subject}/adverse-events", headers=coord, json={"event": {
        "term": "Nausea", "start_date": "2025-03-13", "grade": 1, "outcome": "RECOVERING/RESOLVING", "drugs": [
            {"drug": "interleukin-2", "relatedness": "unlikely", "action_taken": "DOSE NOT CHANGED"},
            {"drug": "ganciclovir", "relatedness": "unlikely", "action_taken": "DOSE NOT CHANGED"}]}}).json()["id"]
    return {"subject_id": subject, "visit": "BL", "form_id": "hematology", "query_id": query, "event_id": event,
            "proposal_id": 1, "dataset": "ADSL", "fmt": "html"}


def concrete(path, ids):
    return re.sub(r"\{(\w+)\}", lambda match: str(ids[match.group(1)]), path)


def test_a_signed_out_visitor_is_sent_to_sign_in_from_every_page_and_form(web_trial, ids):
    client = web_trial.client()
    gets, posts = list(page_routes(web_trial.app, "GET")), list(page_routes(web_trial.app, "POST"))
    assert len(gets) >= 12 and len(posts) >= 15
    for path in gets:
        response = client.get(concrete(path, ids))
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
    before = web_trial.audit_count()
    for path in posts:
        response = client.post(concrete(path, ids), data={"x": "1"})
        assert response.status_code == 303 and response.headers["location"].startswith("/login"), path
    assert web_trial.audit_count() == before


@pytest.mark.parametrize("username", ["coord-a", "inv-a", "mon-a"])
def test_every_form_post_refuses_a_missing_or_foreign_csrf_token(web_trial, ids, username):
    client = signed_in(web_trial, username)
    foreign = csrf_in(signed_in(web_trial, username).get("/subjects").text)  # another session's token
    before = web_trial.audit_count()
    for path in page_routes(web_trial.app, "POST"):
        for token in (None, foreign):
            data = {"csrf_token": token} if token else {}
            response = client.post(concrete(path, ids), data={**data, "confirm": "yes", "answer": "x", "reason": "x"})
            assert response.status_code == 403, (path, token, response.status_code)
            assert "reload the page" in response.text
    assert web_trial.audit_count() == before


@pytest.mark.parametrize("username", ["coord-a", "inv-a", "mon-a", "dm", "stat", "admin"])
def test_every_form_on_every_page_carries_the_csrf_token(web_trial, ids, username):
    client = signed_in(web_trial, username)
    seen = 0
    for path in page_routes(web_trial.app, "GET"):
        response = client.get(concrete(path, ids))
        if response.status_code != 200 or not response.headers["content-type"].startswith("text/html"):
            continue
        for form in re.findall(r'<form method="post".*?</form>', response.text, re.S):
            assert 'name="csrf_token" value="' in form, (path, form[:120])
            seen += 1
        assert not re.search(r"<form(?![^>]*method=)", response.text), path  # no form without a method
    assert seen >= (0 if username in ("stat", "dm", "admin") else 3)


def test_the_dashboard_shows_each_role_its_panels(web_trial, ids):
    coordinator = signed_in(web_trial, "coord-a").get("/").text
    for panel in ("enrollment", "visits", "queries", "saes"):
        assert f'id="panel-{panel}"' in coordinator, panel
    assert "Coming to this dashboard" not in coordinator
    assert "il2_gcv" in coordinator  # an open-label trial shows the arms
    statistician = signed_in(web_trial, "stat").get("/").text
    assert 'id="panel-enrollment"' in statistician
    for panel in ("visits", "queries", "saes"):
        assert f'id="panel-{panel}"' not in statistician, panel
    other_site = signed_in(web_trial, "coord-b").get("/").text
    assert "SITEA" not in other_site and "Please confirm." not in other_site
