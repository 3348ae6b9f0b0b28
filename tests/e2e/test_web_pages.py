"""The web pages: sign-in and out, every page renders for the roles that may see it, refusals show a
page, forms carry CSRF tokens and show errors next to the fields."""

from __future__ import annotations

import re

import pytest
from web_support import PASSWORD, csrf_in, web_trial  # noqa: F401

from cmvtrial.adapters.api.auth import PRESESSION_COOKIE, SESSION_COOKIE
from cmvtrial.store.tables import ApiToken, Site, User

PAGES = ["/", "/eligibility", "/protocol", "/sites", "/users", "/audit", "/tokens"]


def signed_in(web_trial, username="admin"):
    client = web_trial.client()
    response = web_trial.web_login(client, username)
    assert response.status_code == 303, response.text
    return client


def error_next_to(html, field_id):
    """The text of the error element that belongs to a field, or None when it is hidden."""
    match = re.search(rf'<p class="field-error" id="{field_id}-error"[^>]*?(hidden)?>([^<]*)</p>', html)
    assert match, f"no error slot for {field_id}"
    return None if match.group(1) else match.group(2)


@pytest.mark.parametrize("path", PAGES)
def test_an_anonymous_visitor_is_sent_to_the_login_page(web_trial, path):
    response = web_trial.client().get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


def test_the_login_page_has_labelled_fields_and_a_csrf_token(web_trial):
    client = web_trial.client()
    page = client.get("/login")
    assert page.status_code == 200
    assert '<label for="f-username">' in page.text and '<label for="f-password">' in page.text
    assert len(csrf_in(page.text)) == 64
    assert PRESESSION_COOKIE in client.cookies


def test_signing_in_lands_on_the_page_asked_for(web_trial):
    client = web_trial.client()
    page = client.get("/login?next=/protocol")
    response = client.post(
        "/login", data={"username": "coord-a", "password": PASSWORD, "csrf_token": csrf_in(page.text), "next": "/protocol"}
    )
    assert response.status_code == 303 and response.headers["location"] == "/protocol"
    assert SESSION_COOKIE in client.cookies
    assert client.get("/protocol").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "javascript:alert(1)"])
def test_the_login_never_redirects_off_site(web_trial, target):
    client = web_trial.client()
    page = client.get("/login")
    response = client.post(
        "/login", data={"username": "coord-a", "password": PASSWORD, "csrf_token": csrf_in(page.text), "next": target}
    )
    assert response.headers["location"] == "/"


def test_a_wrong_password_shows_the_form_again_with_the_message(web_trial):
    client = web_trial.client()
    page = client.get("/login")
    response = client.post("/login", data={"username": "coord-a", "password": "nope-nope-nope", "csrf_token": csrf_in(page.text)})
    assert response.status_code == 401
    assert "wrong user name or password" in response.text and 'value="coord-a"' in response.text
    assert SESSION_COOKIE not in client.cookies


def test_the_login_form_without_its_csrf_token_is_refused(web_trial):
    client = web_trial.client()
    client.get("/login")
    response = client.post("/login", data={"username": "coord-a", "password": PASSWORD})
    assert response.status_code == 403 and "reload the page" in response.text
    assert SESSION_COOKIE not in client.cookies


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_an_admin(web_trial, path):
    client = signed_in(web_trial)
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert '<main id="main"' in response.text and 'href="#main"' in response.text
    assert 'aria-current="page"' in response.text


def test_the_menu_offers_only_pages_the_role_may_use(web_trial):
    html = signed_in(web_trial, "coord-a").get("/").text
    menu = re.search(r'<ul class="menu">(.*?)</ul>', html, re.S).group(1)
    assert 'href="/eligibility"' in menu and 'href="/sites"' in menu
    assert 'href="/users"' not in menu and 'href="/audit"' not in menu


@pytest.mark.parametrize(("username", "path"), [("coord-a", "/users"), ("stat", "/audit"), ("coord-b", "/audit")])
def test_a_page_the_role_may_not_see_is_refused_with_a_message(web_trial, username, path):
    response = signed_in(web_trial, username).get(path)
    assert response.status_code == 403
    assert "may not" in response.text and "<code>forbidden</code>" in response.text


def test_the_dashboard_shows_the_trial_and_every_panel_of_issue_9(web_trial):
    html = signed_in(web_trial, "mon-a").get("/").text
    assert "sle-cmv-il2" in html and "Enrollment target" in html
    assert "SITEA" in html and "SITEB" not in html
    assert "Latest audit events" in html and "Coming to this dashboard" not in html
    for title in ("Enrollment against target by site and arm", "Visits due and overdue", "Open queries",
                  "Serious adverse events awaiting reports"):
        assert title in html


def test_the_protocol_page_shows_arms_criteria_visits_forms_and_endpoints(web_trial):
    html = signed_in(web_trial, "stat").get("/protocol").text
    for heading in ("Arms and regimens", "Eligibility criteria", "Visit plan", "Forms and items", "Endpoints"):
        assert heading in html
    assert "IU/mL" in html and "[IU]" not in html


def test_adding_a_site_shows_each_error_next_to_its_field(web_trial):
    client = signed_in(web_trial)
    page = client.get("/sites")
    before = (web_trial.count(Site), web_trial.audit_count())
    bad = client.post("/sites", data={"code": "!", "name": "Site C", "csrf_token": csrf_in(page.text)})
    assert bad.status_code == 422
    assert "is not valid" in error_next_to(bad.text, "f-code") and error_next_to(bad.text, "f-name") is None
    assert 'aria-invalid="true"' in bad.text and 'value="Site C"' in bad.text
    taken = client.post("/sites", data={"code": "SITEA", "name": "Again", "csrf_token": csrf_in(page.text)})
    assert taken.status_code == 409 and "already exists" in error_next_to(taken.text, "f-code")
    assert (web_trial.count(Site), web_trial.audit_count()) == before
    made = client.post("/sites", data={"code": "SITEC", "name": "Site C", "csrf_token": csrf_in(page.text)})
    assert made.status_code == 303
    assert "Site SITEC added." in client.get(made.headers["location"]).text


def test_adding_a_user_shows_a_password_problem_next_to_the_password(web_trial):
    client = signed_in(web_trial)
    page = client.get("/users")
    data = {"username": "li.wei", "password": "short", "role": "coordinator", "site": "SITEA", "csrf_token": csrf_in(page.text)}
    bad = client.post("/users", data=data)
    assert bad.status_code == 422 and "too short" in error_next_to(bad.text, "f-password")
    assert "short" not in re.search(r'id="f-password"[^>]*>', bad.text).group(0)  # never echoed
    made = client.post("/users", data={**data, "password": PASSWORD})
    assert made.status_code == 303 and web_trial.count(User) == 8


def test_a_form_without_its_csrf_token_changes_nothing(web_trial):
    client = signed_in(web_trial)
    before = (web_trial.count(Site), web_trial.audit_count())
    for token in (None, "f" * 64):
        data = {"code": "SITEC", "name": "Site C"} | ({"csrf_token": token} if token else {})
        assert client.post("/sites", data=data).status_code == 403
    assert (web_trial.count(Site), web_trial.audit_count()) == before


def test_every_form_on_every_page_carries_the_csrf_token(web_trial):
    client = signed_in(web_trial)
    for path in PAGES:
        html = client.get(path).text
        for form in re.findall(r'<form method="post".*?</form>', html, re.S):
            assert 'name="csrf_token"' in form, (path, form[:80])


def test_signing_out_ends_the_session(web_trial):
    client = signed_in(web_trial)
    token = client.cookies[SESSION_COOKIE]
    response = client.post("/logout", data={"csrf_token": csrf_in(client.get("/").text)})
    assert response.status_code == 303 and response.headers["location"] == "/login?signed_out=1"
    replay = web_trial.client()
    replay.cookies.set(SESSION_COOKIE, token)
    assert replay.get("/").status_code == 303


def test_an_expired_session_sends_the_user_to_sign_in_again(web_trial):
    client = signed_in(web_trial)
    web_trial.clock.advance(hours=web_trial.app.state.cmvtrial.settings.session_max_hours, seconds=1)
    response = client.get("/sites")
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fsites&expired=1"
    assert "Your session has ended" in client.get(response.headers["location"]).text


def test_api_tokens_are_made_shown_once_and_revoked_on_the_page(web_trial):
    client = signed_in(web_trial, "dm")
    page = client.get("/tokens")
    made = client.post("/tokens", data={"name": "export job", "csrf_token": csrf_in(page.text)})
    assert made.status_code == 201
    token = re.search(r'id="new-token-value">(cmvt_[^<]+)<', made.text).group(1)
    assert token not in client.get("/tokens").text
    assert web_trial.client().get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    token_id = re.search(r'action="/tokens/(\d+)/revoke"', made.text).group(1)
    revoked = client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf_in(page.text)})
    assert revoked.status_code == 303
    assert web_trial.client().get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    empty = client.post("/tokens", data={"name": " ", "csrf_token": csrf_in(page.text)})
    assert empty.status_code == 422 and error_next_to(empty.text, "f-name")
    assert web_trial.count(ApiToken) == 1


def test_the_audit_page_verifies_the_chain_on_request(web_trial):
    client = signed_in(web_trial, "dm")
    assert "Audit trail intact" not in client.get("/audit").text
    assert "Audit trail intact" in client.get("/audit?verify=true").text


def test_an_unknown_page_is_a_404_page(web_trial):
    response = signed_in(web_trial).get("/no-such-page")
    assert response.status_code == 404 and "There is no such page." in response.text
