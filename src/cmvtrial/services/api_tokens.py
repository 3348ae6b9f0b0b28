"""API bearer tokens: how scripts sign in (``Authorization: Bearer cmvt_…``).

Why tokens rather than passwords in scripts: a token is made for one purpose, can be revoked on its
own, expires, and is never the person's password. Each user makes and revokes their own; an admin
may revoke anyone's (a leaked token is an incident). A token is shown once, at creation; the
database keeps its SHA-256 (256 random bits need no slow hash) and a short prefix so people can tell
tokens apart. Creating and revoking are audit events; a deactivated user's tokens stop working.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select

from cmvtrial.errors import AuthenticationFailed, InvalidInput, NotFound, Refused
from cmvtrial.services import accounts, permissions
from cmvtrial.services.accounts import Lockout
from cmvtrial.services.permissions import Actor
from cmvtrial.services.sessions import TOUCH_INTERVAL, new_secret, token_digest
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.repositories import ApiTokenRepository
from cmvtrial.store.tables import ApiToken, User

_TOKEN_AND_USER = (
    select(ApiToken.id, ApiToken.user_id, ApiToken.expires_at, ApiToken.revoked_at, ApiToken.last_used_at,
           User.username, User.role, User.site_id, User.active)
    .join(User, User.id == ApiToken.user_id).where(ApiToken.token_sha256 == bindparam("digest"))
)

#: Every token starts with this, so a leaked one is recognisable (secret scanners, logs).
TOKEN_PREFIX = "cmvt_"
#: Characters of the token kept in clear to tell tokens apart (prefix + 7 random characters).
SHOWN_CHARACTERS = 12
MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token; ``token`` is shown to its owner once and never again."""

    id: int
    name: str
    token: str
    prefix: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiTokenView:
    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    def active_at(self, moment: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or moment < self.expires_at)


def check_name(name: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"a token name needs 1 to {MAX_NAME_LENGTH} characters (what the token is for)",
            field="name",
            value=name,
        )
    return cleaned


def create_token(
    uow: UnitOfWork, actor: Actor, name: str, *, lifetime: timedelta, reason: str | None = None
) -> IssuedToken:
    """Make a token for ``actor`` themself, valid for ``lifetime``."""
    cleaned = check_name(name)
    token = TOKEN_PREFIX + new_secret()
    with uow:
        user = uow.users.require(actor.user_id)
        if not user.active:
            raise AuthenticationFailed("your account is not active")
        now = uow.clock()
        row = ApiTokenRepository(uow.session).add(
            ApiToken(
                user_id=actor.user_id,
                name=cleaned,
                prefix=token[:SHOWN_CHARACTERS],
                token_sha256=token_digest(token),
                created_at=now,
                expires_at=now + lifetime,
            )
        )
        uow.audit.record(actor, "api_token.create", row, after=row, reason=reason, site_id=actor.site_id)
        issued = IssuedToken(id=row.id, name=row.name, token=token, prefix=row.prefix, expires_at=row.expires_at)
        uow.commit()
    return issued


def create_token_with_password(
    uow: UnitOfWork,
    username: str,
    password: str,
    name: str,
    *,
    lifetime: timedelta,
    lockout: Lockout | None = None,
) -> IssuedToken:
    """Sign in with a password and make a token in one call (how a script gets its first token)."""
    cleaned = check_name(name)
    actor = accounts.authenticate(uow, username, password, lockout=lockout)
    return create_token(uow, actor, cleaned, lifetime=lifetime)


def list_tokens(uow: UnitOfWork, actor: Actor, *, everyone: bool = False) -> list[ApiTokenView]:
    """The actor's own tokens (newest first); with ``everyone``, all users' (admins only)."""
    if everyone:
        permissions.require(actor, "api_token.revoke_any")
    with uow.reading():
        names = {user.id: user.username for user in uow.users.list()}
        rows = ApiTokenRepository(uow.session).list(None if everyone else actor.user_id)
        return [_view(row, names.get(row.user_id, "?")) for row in rows]


def revoke_token(uow: UnitOfWork, actor: Actor, token_id: int, *, reason: str | None = None) -> ApiTokenView:
    """Revoke one of the actor's tokens (an admin: anyone's). A token that is not the actor's is
    reported as not found, so token ids of others are not revealed."""
    with uow:
        row = ApiTokenRepository(uow.session).get(token_id)
        if row is None or (row.user_id != actor.user_id and not permissions.allowed(actor, "api_token.revoke_any")):
            raise NotFound(f"you have no API token with id {token_id}", field="id", value=token_id)
        if row.revoked_at is not None:
            raise Refused(f"API token {token_id} ({row.prefix}…) is already revoked", field="id", value=token_id)
        before = {"revoked_at": None}
        row.revoked_at = uow.clock()
        row.revoked_by_user_id = actor.user_id
        owner = uow.users.require(row.user_id)
        uow.audit.record(
            actor, "api_token.revoke", row, before=before, after={"revoked_at": row.revoked_at},
            reason=reason, site_id=owner.site_id,
        )
        view = _view(row, owner.username)
        uow.commit()
    return view


def actor_for_token(uow: UnitOfWork, token: str) -> Actor:
    """The actor a bearer token signs in; AuthenticationFailed for an unknown, revoked or expired
    token or a deactivated user (one message for all, so probing learns nothing)."""
    refusal = AuthenticationFailed("the bearer token is not valid (unknown, revoked or expired)")
    if not token.startswith(TOKEN_PREFIX):
        raise refusal
    with uow.reading():
        # One round trip per request: the token with its user's columns (a script calls this on every call).
        found = uow.session.execute(_TOKEN_AND_USER, {"digest": token_digest(token)}).one_or_none()
        if found is None:
            raise refusal
        now = uow.clock()
        expired = found.expires_at is not None and now >= found.expires_at
        if found.revoked_at is not None or expired or not found.active:
            raise refusal
        actor = Actor(user_id=found.user_id, username=found.username, role=found.role, site_id=found.site_id)
        token_id = found.id
        needs_touch = found.last_used_at is None or now - found.last_used_at >= TOUCH_INTERVAL
    if needs_touch:
        with uow:
            fresh = ApiTokenRepository(uow.session).require(token_id)
            fresh.last_used_at = now
            uow.commit()
    return actor


def _view(row: ApiToken, username: str) -> ApiTokenView:
    return ApiTokenView(
        id=row.id,
        username=username,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
