"""Signing in to the API: sessions (expiry, rotation, logout), lockout, the login rate limit, CSRF."""

from __future__ import annotations

from datetime import timedelta

import pytest
from web_support import PASSWORD, make_web_trial, web_trial  # noqa: F401

from cmvtrial.adapters.api.auth import SESSION_COOKIE
from cmvtrial.store.tables import Site, User, WebSession
from cmvtrial.services.sessions import token_digest

PUBLIC = {"/api/v1/health", "/api/v1/openapi.json", "/api/v1/auth/login", "/api/v1/auth/token"}


def api_operations(client):
    """Every operation the OpenAPI schema lists (so a new router is covered without editing this)."""
    for path, item in client.get("/api/v1/openapi.json").json()["paths"].items():
        if path not in PUBLIC:
            for method in item:
                yield method.upper(), path.replace("{token_id}", "1")


def test_every_endpoint_refuses_an_anonymous_caller(web_trial):
    client = web_trial.client()
    operations = list(api_operations(client))
    assert len(operations) >= 12
    for method, path in operations:
        response = client.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "authentication_failed"
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_public_endpoints_answer_without_credentials(web_trial):
    client = web_trial.client()
    assert client.get("/api/v1/health").json() == {"status": "ok"}
    assert client.get("/api/v1/openapi.json").status_code == 200


def test_login_sets_a_protected_session_cookie_and_returns_the_csrf_token(web_trial):
    client = web_trial.client()
    response = client.post("/api/v1/auth/login", json={"username": "coord-a", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "coord-a" and body["role"] == "coordinator" and body["site_id"] == web_trial.sites["SITEA"]
    assert len(body["csrf_token"]) == 64
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(SESSION_COOKIE + "=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    me = client.get("/api/v1/auth/me").json()
    assert me["username"] == "coord-a" and me["via"] == "session"
    # only the token's hash is stored
    token = client.cookies[SESSION_COOKIE]
    with web_trial.uow().reading() as uow:
        rows = uow.session.query(WebSession).all()
        assert [row.token_sha256 for row in rows] == [token_digest(token)]


@pytest.mark.parametrize("username", ["coord-a", "nobody-here"])
def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(web_trial, username):
    client = web_trial.client()
    response = client.post("/api/v1/auth/login", json={"username": username, "password": "not-the-password"})
    assert response.status_code == 401
    assert response.json()["detail"] == "wrong user name or password"
    assert SESSION_COOKIE not in client.cookies


def test_the_account_locks_after_repeated_failures_and_unlocks_later(web_trial):
    client = web_trial.client()
    settings = web_trial.app.state.cmvtrial.settings
    for _ in range(settings.login_max_failures):
        assert client.post("/api/v1/auth/login", json={"username": "inv-a", "password": "wrong-password!"}).status_code == 401
    refused = client.post("/api/v1/auth/login", json={"username": "inv-a", "password": PASSWORD})
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_attempts"
    assert int(refused.headers["retry-after"]) == settings.login_lockout_minutes * 60
    web_trial.clock.advance(minutes=settings.login_lockout_minutes, seconds=1)
    assert client.post("/api/v1/auth/login", json={"username": "inv-a", "password": PASSWORD}).status_code == 200
    with web_trial.uow().reading() as uow:
        user = uow.users.by_username("inv-a")
        assert user.failed_login_count == 0 and user.locked_until is None
        actions = [event.action for event in uow.audit_events.latest(10)]
    assert "user.login" in actions and actions.count("user.login_failed") >= settings.login_max_failures


def test_sign_in_attempts_are_rate_limited_per_client_address(tmp_path, now):
    trial = make_web_trial(tmp_path, now, login_attempts_per_minute=3)
    try:
        client, elsewhere = trial.client(), trial.client(client=("198.51.100.1", 4000))
        for _ in range(3):
            client.post("/api/v1/auth/login", json={"username": "dm", "password": "wrong-password!"})
        limited = client.post("/api/v1/auth/login", json={"username": "stat", "password": PASSWORD})
        assert limited.status_code == 429 and limited.json()["code"] == "too_many_attempts"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert elsewhere.post("/api/v1/auth/login", json={"username": "stat", "password": PASSWORD}).status_code == 200
        trial.ticker.advance(61)
        assert client.post("/api/v1/auth/login", json={"username": "stat", "password": PASSWORD}).status_code == 200
    finally:
        for made in trial.clients:
            made.close()
        trial.database.dispose()


def test_a_session_ends_after_the_idle_timeout(web_trial):
    client = web_trial.client()
    web_trial.api_login(client, "coord-a")
    idle = web_trial.app.state.cmvtrial.settings.session_idle_minutes
    web_trial.clock.advance(minutes=idle - 1)
    assert client.get("/api/v1/auth/me").status_code == 200  # activity keeps it alive
    web_trial.clock.advance(minutes=idle - 1)
    assert client.get("/api/v1/auth/me").status_code == 200
    web_trial.clock.advance(minutes=idle, seconds=1)
    expired = client.get("/api/v1/auth/me")
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    with web_trial.uow().reading() as uow:
        assert uow.session.query(WebSession).one().end_reason == "expired"


def test_a_session_ends_at_its_absolute_lifetime_however_active(web_trial):
    client = web_trial.client()
    web_trial.api_login(client, "coord-a")
    settings = web_trial.app.state.cmvtrial.settings
    step = timedelta(minutes=settings.session_idle_minutes - 1)
    elapsed = timedelta()
    while elapsed + step < timedelta(hours=settings.session_max_hours):
        web_trial.clock.advance(seconds=step.total_seconds())
        elapsed += step
        assert client.get("/api/v1/auth/me").status_code == 200
    web_trial.clock.advance(seconds=step.total_seconds())
    assert client.get("/api/v1/auth/me").status_code == 401


def test_signing_in_again_rotates_the_session(web_trial):
    client = web_trial.client()
    web_trial.api_login(client, "coord-a")
    planted = client.cookies[SESSION_COOKIE]
    web_trial.api_login(client, "coord-a")
    fresh = client.cookies[SESSION_COOKIE]
    assert fresh != planted
    stale = web_trial.client()
    stale.cookies.set(SESSION_COOKIE, planted)
    assert stale.get("/api/v1/auth/me").status_code == 401
    with web_trial.uow().reading() as uow:
        assert uow.session.query(WebSession).filter_by(token_sha256=token_digest(planted)).one().end_reason == "rotated"


def test_logout_ends_the_session_on_the_server(web_trial):
    client = web_trial.client()
    csrf = web_trial.api_login(client, "coord-a")
    token = client.cookies[SESSION_COOKIE]
    audit_before = web_trial.audit_count()
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert web_trial.audit_count() == audit_before + 1
    replay = web_trial.client()
    replay.cookies.set(SESSION_COOKIE, token)
    assert replay.get("/api/v1/auth/me").status_code == 401


def test_a_deactivated_users_session_stops_working(web_trial):
    client = web_trial.client()
    web_trial.api_login(client, "coord-a")
    with web_trial.uow() as uow:
        uow.users.by_username("coord-a").active = False
        uow.commit()
    assert client.get("/api/v1/auth/me").status_code == 401


def test_a_session_must_send_the_csrf_header_on_changes_and_nothing_changes_without_it(web_trial):
    client = web_trial.client()
    csrf = web_trial.api_login(client, "admin")
    sites, events = web_trial.count(Site), web_trial.audit_count()
    for headers in ({}, {"X-CSRF-Token": "0" * 64}):
        refused = client.post("/api/v1/sites", json={"code": "SITEC", "name": "Site C"}, headers=headers)
        assert refused.status_code == 403 and refused.json()["code"] == "csrf_rejected"
    assert (web_trial.count(Site), web_trial.audit_count()) == (sites, events)
    made = client.post("/api/v1/sites", json={"code": "SITEC", "name": "Site C"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    # reads need no CSRF token
    assert client.get("/api/v1/sites").status_code == 200


def test_a_bearer_token_needs_no_csrf_token(web_trial):
    client = web_trial.client()
    response = client.post("/api/v1/sites", json={"code": "SITEC", "name": "Site C"}, headers=web_trial.bearer("admin"))
    assert response.status_code == 201


def test_a_malformed_authorization_header_is_refused(web_trial):
    client = web_trial.client()
    for header in ("Basic YWRtaW46eA==", "Bearer", "Bearer cmvt_not-a-real-token", "Bearer not-even-the-prefix"):
        response = client.get("/api/v1/auth/me", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["code"] == "authentication_failed"


def test_passwords_are_never_returned_or_stored_in_clear(web_trial):
    client = web_trial.client()
    web_trial.api_login(client, "admin")
    listed = client.get("/api/v1/users").text
    assert PASSWORD not in listed and "password" not in listed
    with web_trial.uow().reading() as uow:
        hashes = [user.password_hash for user in uow.session.query(User).all()]
    assert all(value.startswith("$argon2id$") for value in hashes)
