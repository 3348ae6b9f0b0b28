"""Security hardening (issue 10): the seed sealed under CMVTRIAL_SECRET_KEY, the default key refused
outside local use, security headers on every kind of response, session rotation on sign-in (API and
web form), and no secret in any log or message.

The threat model these tests back is docs/security.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reliability_support import cli
from sqlalchemy import func, select

from cmvtrial.adapters.api.app import create_app
from cmvtrial.adapters.api.auth import SESSION_COOKIE, csrf_token_for
from cmvtrial.config import Settings
from cmvtrial.errors import SecretKeyMismatch, SecretKeyRequired
from cmvtrial.services import accounts, randomizing, trial_setup
from cmvtrial.services.sealing import (
    DEVELOPMENT_SECRET_KEY,
    SEED_PURPOSE,
    SecretKey,
    is_loopback,
    resolve_key,
    seal,
    unseal,
)
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import open_database
from cmvtrial.store.tables import AuditEvent, RandomizationScheme

PASSWORD = "a-long-enough-password"
KEY = SecretKey(b"k" * 40, development=False)
OTHER = SecretKey(b"o" * 40, development=False)


# --- sealing -----------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None, derandomize=True)
@given(plaintext=st.text(max_size=200), context=st.text(max_size=40))
def test_sealing_round_trips_and_hides_the_plaintext(plaintext, context):
    sealed = seal(KEY, SEED_PURPOSE, plaintext, context=context)
    assert unseal(KEY, SEED_PURPOSE, sealed, context=context) == plaintext
    assert len(plaintext) < 4 or plaintext not in sealed
    assert seal(KEY, SEED_PURPOSE, plaintext, context=context) != sealed  # a fresh nonce every time


def test_a_sealed_seed_opens_only_with_its_key_purpose_and_row():
    sealed = seal(KEY, SEED_PURPOSE, "the seed", context="scheme/1")
    with pytest.raises(SecretKeyMismatch, match="another CMVTRIAL_SECRET_KEY"):
        unseal(OTHER, SEED_PURPOSE, sealed, context="scheme/1")
    with pytest.raises(SecretKeyMismatch):
        unseal(KEY, "subject-pseudonym", sealed, context="scheme/1")
    with pytest.raises(SecretKeyMismatch, match="altered or belongs elsewhere"):
        unseal(KEY, SEED_PURPOSE, sealed, context="scheme/2")  # copied onto another scheme
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretKeyMismatch):
        unseal(KEY, SEED_PURPOSE, flipped, context="scheme/1")
    for junk in ("", "plain-seed", "v1..", "v2.abc.def"):
        with pytest.raises(SecretKeyMismatch):
            unseal(KEY, SEED_PURPOSE, junk, context="scheme/1")


def test_the_development_key_is_for_local_use_only():
    assert resolve_key(None, local=True).development
    assert resolve_key(DEVELOPMENT_SECRET_KEY, local=True).development
    for configured in (None, DEVELOPMENT_SECRET_KEY):
        with pytest.raises(SecretKeyRequired, match="CMVTRIAL_SECRET_KEY"):
            resolve_key(configured, local=False)
    assert not resolve_key("z" * 32, local=False).development
    assert "z" * 32 not in repr(resolve_key("z" * 32, local=False))


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                                ("[::1]", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                                ("example.org", False)])
def test_which_listening_addresses_are_local(host, loopback):
    assert is_loopback(host) is loopback


def test_a_short_secret_key_is_refused_without_echoing_it():
    result = cli("status", CMVTRIAL_SECRET_KEY="short-key-not-ok")
    assert result.exit_code == 2 and "CMVTRIAL_SECRET_KEY" in result.stderr and "short-key-not-ok" not in result.output


def test_serving_beyond_loopback_needs_an_own_key_and_starts_nothing_without_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    for key in (None, DEVELOPMENT_SECRET_KEY):
        result = cli("serve", "--db", url, "--host", "0.0.0.0", "--port", "1", CMVTRIAL_SECRET_KEY=key)
        assert result.exit_code == 1 and result.stderr.startswith("error [secret_key_required]:"), result.output
    assert not (tmp_path / "never.db").exists()


def scheme_rows_and_audit(database) -> tuple[int, int]:
    with database.engine.connect() as connection:
        return (int(connection.execute(select(func.count()).select_from(RandomizationScheme)).scalar_one()),
                int(connection.execute(select(func.count()).select_from(AuditEvent)).scalar_one()))


def test_without_a_key_the_seed_is_sealed_only_for_local_use(trial_database, admin, database_url, monkeypatch):
    """SQLite (local): the development key seals it. PostgreSQL: refused, and nothing is written."""
    monkeypatch.delenv("CMVTRIAL_SECRET_KEY")
    keyless = open_database(database_url, Settings())
    try:
        uow = UnitOfWork(keyless.session_factory)
        before = scheme_rows_and_audit(keyless)
        if database_url.startswith("sqlite"):
            assert randomizing.setup_scheme(uow, admin).created
            with uow.reading():
                scheme = uow.session.scalars(select(RandomizationScheme)).one()
                assert len(randomizing.scheme_seed(uow, scheme)) == 64
        else:
            with pytest.raises(SecretKeyRequired):
                randomizing.setup_scheme(uow, admin)
            assert scheme_rows_and_audit(keyless) == before
    finally:
        keyless.dispose()


def test_a_seed_sealed_under_one_key_is_not_opened_or_replaced_under_another(trial_database, admin, database_url):
    from cmvtrial.services.randomization_audit import verify_randomization

    uow = UnitOfWork(trial_database.session_factory)
    randomizing.setup_scheme(uow, admin)
    with uow.reading():
        sealed = uow.session.scalars(select(RandomizationScheme)).one().sealed_seed
    other = open_database(database_url, Settings(secret_key="another-key-" + "9" * 30))
    try:
        before = scheme_rows_and_audit(other)
        assert not randomizing.setup_scheme(UnitOfWork(other.session_factory), admin).created  # no new seed
        check = verify_randomization(UnitOfWork(other.session_factory), admin)
        assert not check.ok and "another CMVTRIAL_SECRET_KEY" in check.problems[0]
        assert scheme_rows_and_audit(other) == before
    finally:
        other.dispose()
    with uow.reading():
        assert uow.session.scalars(select(RandomizationScheme)).one().sealed_seed == sealed


# --- headers and sessions -----------------------------------------------------------------------------


@dataclass
class App:
    app: Any
    cookies: httpx.Cookies

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("198.51.100.9", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver", cookies=self.cookies,
                                         follow_redirects=False) as client:
                response = await client.request(method, path, **kwargs)
                self.cookies = client.cookies
                return response

        return anyio.run(call)


@pytest.fixture
def web(trial_database, admin, database_url) -> Iterator[App]:
    uow = UnitOfWork(trial_database.session_factory)
    trial_setup.add_site(uow, admin, "PKUPH", "Peking")
    accounts.add_user(uow, admin, "coord", PASSWORD, "coordinator", "PKUPH")
    yield App(create_app(Settings(database_url=database_url), database=trial_database), httpx.Cookies())


def assert_hardened(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"


def test_every_kind_of_response_carries_the_security_headers(web):
    responses = [
        web.request("GET", "/api/v1/health"),                     # API JSON
        web.request("GET", "/api/v1/openapi.json"),               # the schema
        web.request("GET", "/api/v1/trial"),                      # 401 problem+json
        web.request("GET", "/api/v1/no-such-route"),              # 404 problem+json
        web.request("POST", "/api/v1/auth/login", json={}),      # 422 problem+json
        web.request("GET", "/login"),                             # a page
        web.request("GET", "/"),                                  # a redirect to sign in
        web.request("GET", "/static/app.css"),                    # a static file
    ]
    for response in responses:
        assert_hardened(response)
    assert responses[-1].status_code == 200 and "no-store" not in responses[-1].headers.get("cache-control", "")
    assert all(r.headers["cache-control"] == "no-store" for r in responses[:-1])


def session_cookie(app: App) -> str | None:
    found = [cookie.value for cookie in app.cookies.jar if cookie.name == SESSION_COOKIE]
    return found[-1] if found else None


def with_session(token: str) -> httpx.Cookies:
    cookies = httpx.Cookies()
    cookies.set(SESSION_COOKIE, token, domain="testserver.local")
    return cookies


def test_signing_in_through_the_api_rotates_a_planted_session(web):
    web.cookies = with_session("planted-by-an-attacker")  # session fixation attempt
    first = web.request("POST", "/api/v1/auth/login", json={"username": "coord", "password": PASSWORD})
    assert first.status_code == 200
    token = session_cookie(web)
    assert token and token != "planted-by-an-attacker"
    assert web.request("GET", "/api/v1/auth/me").status_code == 200
    second = web.request("POST", "/api/v1/auth/login", json={"username": "coord", "password": PASSWORD})
    assert second.status_code == 200 and session_cookie(web) != token
    attacker = App(web.app, with_session(token))  # the old cookie no longer works
    assert attacker.request("GET", "/api/v1/auth/me").status_code == 401
    cookie_header = second.headers["set-cookie"].lower()
    assert "httponly" in cookie_header and "samesite=lax" in cookie_header


def test_signing_in_through_the_login_form_rotates_the_session(web):
    page = web.request("GET", "/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    form = {"username": "coord", "password": PASSWORD, "csrf_token": csrf}
    assert web.request("POST", "/login", data=form).status_code in (302, 303)
    first = session_cookie(web)
    assert first
    # Signing in again from the same browser: the form's CSRF token is now bound to the session.
    again = {**form, "csrf_token": csrf_token_for(first)}
    assert web.request("POST", "/login", data=again).status_code in (302, 303)
    assert session_cookie(web) not in (None, first)
    assert App(web.app, with_session(first)).request("GET", "/api/v1/auth/me").status_code == 401


# --- no secrets in logs -------------------------------------------------------------------------------


def test_no_password_token_session_or_key_reaches_a_log_or_an_answer(web, caplog, secret_key):
    caplog.set_level(logging.DEBUG)
    web.request("POST", "/api/v1/auth/login", json={"username": "coord", "password": "wrong-" + PASSWORD})
    login = web.request("POST", "/api/v1/auth/login", json={"username": "coord", "password": PASSWORD})
    session = session_cookie(web)
    issued = web.request("POST", "/api/v1/auth/token", json={"username": "coord", "password": PASSWORD, "name": "ci"})
    token = issued.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    web.request("GET", "/api/v1/auth/me", headers=headers)
    web.request("GET", "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}x"})  # a refused token
    audit = web.request("GET", "/api/v1/audit/events?limit=1000", headers=headers)
    secrets_ = [PASSWORD, token, session, secret_key, login.json()["csrf_token"]]
    assert all(secrets_)
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    for secret in secrets_:
        assert secret not in logged
        assert secret not in audit.text
    with web.app.state.cmvtrial.database.engine.connect() as connection:
        trail = " ".join(str(row) for row in connection.execute(select(AuditEvent.before, AuditEvent.after, AuditEvent.reason)))
    for secret in secrets_:
        assert secret not in trail


def test_command_line_messages_never_show_a_database_password(tmp_path):
    result = cli("status", "--db", "postgresql+psycopg://trial:Sup3rSecretPw@127.0.0.1:1/trial?connect_timeout=1")
    assert result.exit_code == 1 and "Sup3rSecretPw" not in result.output and "***" in result.output
