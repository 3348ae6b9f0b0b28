"""Web sessions: signing in through the browser, staying signed in, signing out.

Why sessions live in the database rather than in a signed cookie: a session must be revocable
(logout, a deactivated account) and must end on time on the server's word, not the browser's
(21 CFR 11.300, reference/standards.md P11-16; issue 10 "session expiry and rotation on login").

The cookie carries a random 256-bit token; the database keeps only its SHA-256, so a copy of the
database cannot be replayed as anyone's session. A session ends at the first of: its absolute
lifetime, ``idle`` without a request, logout, or a new sign-in in the same browser (rotation: the
old token stops working, so a token planted before sign-in — session fixation — is worthless).

Passwords are checked by ``accounts.authenticate`` (Argon2, lockout, audited attempts); signing in
and out are audit events. Session bookkeeping (last seen, expiry) is not trial data and is not
audited, so a page view does not grow the trail.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cmvtrial.errors import AuthenticationFailed
from cmvtrial.services import accounts
from cmvtrial.services.accounts import Lockout
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.repositories import WebSessionRepository
from cmvtrial.store.tables import WebSession

#: ``last_seen_at`` is written at most this often, so reading pages does not mean a write per request;
#: the idle timeout is therefore exact to within this interval.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session lasts: ``idle`` without a request, ``lifetime`` at most (from settings)."""

    idle: timedelta
    lifetime: timedelta


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session: ``token`` goes into the cookie and is never stored or shown again."""

    token: str
    actor: Actor
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """A session that is still valid, with the actor it signs in."""

    session_id: int
    actor: Actor
    expires_at: datetime


def new_secret() -> str:
    """A random token with 256 bits of entropy, safe in a cookie or a header."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores for a token: its SHA-256 in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def sign_in(
    uow: UnitOfWork,
    username: str,
    password: str,
    *,
    policy: SessionPolicy,
    lockout: Lockout | None = None,
    replacing: str | None = None,
) -> IssuedSession:
    """Check the password and open a new session; ``replacing`` (the browser's previous token, if
    any) is ended as ``rotated``. Refusals: AuthenticationFailed, TooManyAttempts (locked)."""
    actor = accounts.authenticate(uow, username, password, lockout=lockout)
    token = new_secret()
    with uow:
        now = uow.clock()
        repository = WebSessionRepository(uow.session)
        if replacing:
            old = repository.by_token_sha256(token_digest(replacing))
            if old is not None and old.ended_at is None:
                _end(old, now, "rotated")
        row = repository.add(
            WebSession(
                user_id=actor.user_id,
                token_sha256=token_digest(token),
                created_at=now,
                last_seen_at=now,
                expires_at=now + policy.lifetime,
            )
        )
        expires_at = row.expires_at
        uow.commit()
    return IssuedSession(token=token, actor=actor, expires_at=expires_at)


def resume_session(uow: UnitOfWork, token: str, *, policy: SessionPolicy) -> ActiveSession:
    """The session a cookie's token belongs to, if it is still valid; AuthenticationFailed otherwise.

    Reads first; writes only to note the last request (at most every TOUCH_INTERVAL) or to end a
    session found expired, so ordinary page views do not queue behind writers.
    """
    digest = token_digest(token)
    with uow.reading():
        row = WebSessionRepository(uow.session).by_token_sha256(digest)
        if row is None or row.ended_at is not None:
            raise AuthenticationFailed("you are not signed in, or your session has ended; sign in again")
        user = uow.users.get(row.user_id)
        now = uow.clock()
        ending = _why_ended(row, now, policy, user_active=user is not None and user.active)
        needs_touch = now - row.last_seen_at >= TOUCH_INTERVAL
        actor = accounts.actor_of(user) if user is not None else None
        session_id, expires_at = row.id, _effective_expiry(row, now, policy)
    if ending is not None or needs_touch:
        with uow:
            fresh = WebSessionRepository(uow.session).require(session_id)
            if fresh.ended_at is None:
                if ending is not None:
                    _end(fresh, now, ending)
                else:
                    fresh.last_seen_at = now
            uow.commit()
    if ending is not None or actor is None:
        raise AuthenticationFailed(
            "your session has expired; sign in again" if ending == "expired" else "your account is not active"
        )
    return ActiveSession(session_id=session_id, actor=actor, expires_at=expires_at)


def sign_out(uow: UnitOfWork, token: str) -> Actor | None:
    """End the session of ``token`` (audited as ``user.logout``); the actor it belonged to, or None
    when there was no open session (signing out twice is not an error)."""
    with uow:
        row = WebSessionRepository(uow.session).by_token_sha256(token_digest(token))
        if row is None or row.ended_at is not None:
            return None
        user = uow.users.require(row.user_id)
        actor = accounts.actor_of(user)
        _end(row, uow.clock(), "logout")
        uow.audit.record(actor, "user.logout", user)
        uow.commit()
    return actor


def _why_ended(row: WebSession, now: datetime, policy: SessionPolicy, *, user_active: bool) -> str | None:
    if not user_active:
        return "deactivated"
    if now >= row.expires_at or now - row.last_seen_at >= policy.idle:
        return "expired"
    return None


def _effective_expiry(row: WebSession, now: datetime, policy: SessionPolicy) -> datetime:
    """When the session ends if the user does nothing more: idle timeout or absolute end."""
    return min(row.expires_at, max(row.last_seen_at, now) + policy.idle)


def _end(row: WebSession, now: datetime, reason: str) -> None:
    row.ended_at = now
    row.end_reason = reason
