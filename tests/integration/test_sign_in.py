"""Sign-in credentials on SQLite and PostgreSQL: web sessions (expiry, rotation, sign-out), account
lockout, and API tokens — each refusal leaving no session, no token and the right audit events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cmvtrial.errors import AuthenticationFailed, InvalidInput, NotFound, Refused, TooManyAttempts
from cmvtrial.services import accounts, api_tokens, sessions
from cmvtrial.services.accounts import Lockout
from cmvtrial.services.permissions import Actor
from cmvtrial.services.sessions import TOUCH_INTERVAL, SessionPolicy, token_digest
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.repositories import WebSessionRepository
from cmvtrial.store.tables import ApiToken, AuditEvent, WebSession

POLICY = SessionPolicy(idle=timedelta(minutes=30), lifetime=timedelta(hours=12))
LOCKOUT = Lockout(max_failures=3, duration=timedelta(minutes=15))
PASSWORD = "a-long-enough-password"


class Clock:
    def __init__(self, start):
        self.now = start

    def __call__(self):
        return self.now


@pytest.fixture
def clock(now):
    return Clock(now)


@pytest.fixture
def work(trial_database, clock, admin):
    """A unit-of-work factory on the moving clock, with a coordinator account."""
    accounts.add_user(UnitOfWork(trial_database.session_factory, clock=clock), admin, "coord", PASSWORD, "coordinator")
    return lambda: UnitOfWork(trial_database.session_factory, clock=clock)


def count(work, table):
    with work().reading() as uow:
        return uow.session.query(table).count()


def test_a_session_lives_while_used_and_ends_when_idle(work, clock):
    issued = sessions.sign_in(work(), "coord", PASSWORD, policy=POLICY)
    assert sessions.resume_session(work(), issued.token, policy=POLICY).actor == issued.actor
    clock.now += POLICY.idle - timedelta(seconds=1)
    assert sessions.resume_session(work(), issued.token, policy=POLICY).actor.username == "coord"
    clock.now += POLICY.idle
    with pytest.raises(AuthenticationFailed, match="expired"):
        sessions.resume_session(work(), issued.token, policy=POLICY)
    with pytest.raises(AuthenticationFailed):
        sessions.resume_session(work(), issued.token, policy=POLICY)


def test_reading_pages_writes_the_last_request_at_most_every_interval(work, clock):
    issued = sessions.sign_in(work(), "coord", PASSWORD, policy=POLICY)

    def last_seen():
        with work().reading() as uow:
            return WebSessionRepository(uow.session).by_token_sha256(token_digest(issued.token)).last_seen_at

    start = last_seen()
    clock.now += TOUCH_INTERVAL / 2
    sessions.resume_session(work(), issued.token, policy=POLICY)
    assert last_seen() == start
    clock.now += TOUCH_INTERVAL
    sessions.resume_session(work(), issued.token, policy=POLICY)
    assert last_seen() == clock.now


def test_signing_in_again_rotates_and_signing_out_ends(work):
    first = sessions.sign_in(work(), "coord", PASSWORD, policy=POLICY)
    second = sessions.sign_in(work(), "coord", PASSWORD, policy=POLICY, replacing=first.token)
    with pytest.raises(AuthenticationFailed):
        sessions.resume_session(work(), first.token, policy=POLICY)
    events = count(work, AuditEvent)
    assert sessions.sign_out(work(), second.token).username == "coord"
    assert count(work, AuditEvent) == events + 1
    assert sessions.sign_out(work(), second.token) is None
    with work().reading() as uow:
        reasons = sorted(row.end_reason for row in uow.session.query(WebSession))
    assert reasons == ["logout", "rotated"]


def test_a_refused_sign_in_opens_no_session(work):
    with pytest.raises(AuthenticationFailed):
        sessions.sign_in(work(), "coord", "not-the-password", policy=POLICY)
    assert count(work, WebSession) == 0


def test_lockout_after_consecutive_failures_refuses_even_the_right_password(work, clock):
    for _ in range(LOCKOUT.max_failures):
        with pytest.raises(AuthenticationFailed) as refusal:
            accounts.authenticate(work(), "coord", "wrong-password!", lockout=LOCKOUT)
        assert not isinstance(refusal.value, TooManyAttempts)
    with pytest.raises(TooManyAttempts) as locked:
        accounts.authenticate(work(), "coord", PASSWORD, lockout=LOCKOUT)
    assert locked.value.details["retry_after"] == LOCKOUT.duration.total_seconds()
    with work().reading() as uow:
        reasons = [event.reason for event in uow.audit_events.latest(4)]
    assert reasons[0] == "account locked" and "account locked after 3" in reasons[1]
    clock.now += LOCKOUT.duration
    assert accounts.authenticate(work(), "coord", PASSWORD, lockout=LOCKOUT).username == "coord"


def test_a_success_resets_the_failure_count(work):
    for _ in range(LOCKOUT.max_failures - 1):
        with pytest.raises(AuthenticationFailed):
            accounts.authenticate(work(), "coord", "wrong-password!", lockout=LOCKOUT)
    accounts.authenticate(work(), "coord", PASSWORD, lockout=LOCKOUT)
    with pytest.raises(AuthenticationFailed) as refusal:
        accounts.authenticate(work(), "coord", "wrong-password!", lockout=LOCKOUT)
    assert not isinstance(refusal.value, TooManyAttempts)


def test_api_tokens_are_made_used_and_revoked(work, clock, admin):
    coordinator = accounts.actor_for(work(), "coord")
    issued = api_tokens.create_token(work(), coordinator, " lab  feed ", lifetime=timedelta(days=90))
    assert issued.name == "lab feed" and issued.token.startswith(api_tokens.TOKEN_PREFIX)
    assert api_tokens.actor_for_token(work(), issued.token) == coordinator
    with pytest.raises(NotFound):  # another user's token is not even admitted to exist
        api_tokens.revoke_token(work(), Actor(user_id=99, username="someone", role="monitor"), issued.id)
    events = count(work, AuditEvent)
    api_tokens.revoke_token(work(), coordinator, issued.id, reason="rotated")
    assert count(work, AuditEvent) == events + 1
    with pytest.raises(AuthenticationFailed):
        api_tokens.actor_for_token(work(), issued.token)
    with pytest.raises(Refused):
        api_tokens.revoke_token(work(), admin, issued.id)


def test_a_token_with_a_wrong_password_or_no_name_is_not_made(work):
    with pytest.raises(AuthenticationFailed):
        api_tokens.create_token_with_password(work(), "coord", "wrong-password!", "x", lifetime=timedelta(days=1))
    coordinator = accounts.actor_for(work(), "coord")
    with pytest.raises(InvalidInput, match="token name"):
        api_tokens.create_token(work(), coordinator, "  ", lifetime=timedelta(days=1))
    assert count(work, ApiToken) == 0
