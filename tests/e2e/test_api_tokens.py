"""API bearer tokens: created and revoked per user, stored hashed, refused once revoked or expired."""

from __future__ import annotations

from sqlalchemy import text
from web_support import PASSWORD, web_trial  # noqa: F401

from cmvtrial.services.sessions import token_digest
from cmvtrial.store.tables import ApiToken


def token_for(client, username, name="script"):
    response = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_a_script_gets_a_token_with_its_password_and_uses_it(web_trial):
    client = web_trial.client()
    issued = token_for(client, "dm", "nightly export")
    assert issued["token"].startswith("cmvt_") and issued["token"].startswith(issued["prefix"])
    me = client.get("/api/v1/auth/me", headers=bearer(issued["token"])).json()
    assert me == {"user_id": me["user_id"], "username": "dm", "role": "data-manager", "site_id": None, "via": "token"}
    listed = client.get("/api/v1/tokens", headers=bearer(issued["token"])).json()
    assert [(t["name"], t["prefix"], t["active"]) for t in listed] == [("nightly export", issued["prefix"], True)]
    assert issued["token"] not in client.get("/api/v1/tokens", headers=bearer(issued["token"])).text


def test_a_wrong_password_gets_no_token(web_trial):
    client = web_trial.client()
    response = client.post("/api/v1/auth/token", json={"username": "dm", "password": "wrong-password!", "name": "x"})
    assert response.status_code == 401
    assert web_trial.count(ApiToken) == 0


def test_only_the_tokens_hash_is_stored(web_trial):
    client = web_trial.client()
    issued = token_for(client, "dm")
    with web_trial.database.engine.connect() as connection:
        stored = [tuple(row) for row in connection.execute(text("SELECT * FROM api_tokens"))]
        trail = " ".join(str(row) for row in connection.execute(text("SELECT before, after FROM audit_events")))
    assert token_digest(issued["token"]) in stored[0]
    assert not any(issued["token"] in str(value) for value in stored[0])
    assert issued["token"] not in trail and token_digest(issued["token"]) not in trail


def test_a_signed_in_user_makes_and_revokes_their_own_tokens(web_trial):
    client = web_trial.client()
    csrf = web_trial.api_login(client, "coord-a")
    made = client.post("/api/v1/tokens", json={"name": "lab feed", "reason": "automation"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    token = made.json()["token"]
    assert client.get("/api/v1/auth/me", headers=bearer(token)).status_code == 200
    events = web_trial.audit_count()
    revoked = client.delete(f"/api/v1/tokens/{made.json()['id']}?reason=done", headers={"X-CSRF-Token": csrf})
    assert revoked.status_code == 200 and revoked.json()["active"] is False and revoked.json()["revoked_at"]
    assert web_trial.audit_count() == events + 1
    assert web_trial.client().get("/api/v1/auth/me", headers=bearer(token)).status_code == 401
    again = client.delete(f"/api/v1/tokens/{made.json()['id']}", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409 and again.json()["code"] == "refused"


def test_nobody_revokes_another_users_token_except_an_admin(web_trial):
    client = web_trial.client()
    issued = token_for(client, "dm")
    other = client.delete(f"/api/v1/tokens/{issued['id']}", headers=web_trial.bearer("stat"))
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    assert client.get("/api/v1/auth/me", headers=bearer(issued["token"])).status_code == 200
    everyone = client.get("/api/v1/tokens?all=true", headers=web_trial.bearer("stat"))
    assert everyone.status_code == 403
    admin = web_trial.bearer("admin")
    assert {t["username"] for t in client.get("/api/v1/tokens?all=true", headers=admin).json()} >= {"dm", "stat"}
    assert client.delete(f"/api/v1/tokens/{issued['id']}", headers=admin).status_code == 200
    assert client.get("/api/v1/auth/me", headers=bearer(issued["token"])).status_code == 401


def test_a_token_expires(web_trial):
    client = web_trial.client()
    issued = token_for(client, "dm")
    days = web_trial.app.state.cmvtrial.settings.api_token_days
    web_trial.clock.advance(days=days - 1)
    assert client.get("/api/v1/auth/me", headers=bearer(issued["token"])).status_code == 200
    web_trial.clock.advance(days=1)
    assert client.get("/api/v1/auth/me", headers=bearer(issued["token"])).status_code == 401


def test_a_deactivated_users_tokens_stop_working(web_trial):
    client = web_trial.client()
    issued = token_for(client, "dm")
    with web_trial.uow() as uow:
        uow.users.by_username("dm").active = False
        uow.commit()
    assert client.get("/api/v1/auth/me", headers=bearer(issued["token"])).status_code == 401


def test_a_token_name_is_required(web_trial):
    client = web_trial.client()
    response = client.post("/api/v1/tokens", json={"name": "   "}, headers=web_trial.bearer("dm"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "name"
