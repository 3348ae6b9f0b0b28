"""User accounts: creating users with a role and a site, Argon2 password hashes, signing in.

Passwords are stored only as Argon2id hashes (argon2-cffi's defaults, RFC 9106 parameters); the
audit trail never sees the hash. User names are case-insensitive (stored lower-case) so "Alice" and
"alice" cannot be two people. Accounts are deactivated, never deleted or renamed, so a name always
means the same person (21 CFR 11.100(a), reference/standards.md P11-15). Every account change and
every sign-in attempt, failed ones included, is an audit event (ICH E6(R3) §4.2.2(a)(i), E6-04).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING

from cmvtrial.errors import AlreadyExists, AuthenticationFailed, Forbidden, InvalidInput, NotFound, TooManyAttempts
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.store.tables import ROLES, User

if TYPE_CHECKING:
    from argon2 import PasswordHasher

    from cmvtrial.services.unit_of_work import UnitOfWork

#: Security policy, not a trial number: NIST SP 800-63B asks for at least 8; we ask for 12.
MIN_PASSWORD_LENGTH = 12
#: Upper bound so hashing cannot be used to exhaust the server.
MAX_PASSWORD_LENGTH = 1024
USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")


@dataclass(frozen=True, slots=True)
class UserView:
    """A user as services hand it out: never the password hash."""

    id: int
    username: str
    role: str
    site_id: int | None
    site_code: str | None
    active: bool
    full_name: str | None
    created_at: datetime


@cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """An Argon2id hash (with its own salt and parameters) of ``password``."""
    return _hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def normalize_username(username: str) -> str:
    """The stored form of a user name, or InvalidInput saying what a valid one looks like."""
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        raise InvalidInput(
            f"user name '{username}' is not valid: 2-64 characters, a letter first, then letters, "
            "digits, '.', '_' or '-'",
            field="username",
            value=username,
        )
    return name


def check_password(password: str, username: str) -> None:
    """The password policy: long enough, not absurdly long, not the user name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too short: at least {MIN_PASSWORD_LENGTH} characters are required",
            field="password",
            limit=MIN_PASSWORD_LENGTH,
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"password too long: at most {MAX_PASSWORD_LENGTH} characters",
            field="password",
            limit=MAX_PASSWORD_LENGTH,
        )
    if password.strip().lower() == username.strip().lower():
        raise InvalidInput("password must not be the user name", field="password")


def check_role(role: str, site_code: str | None) -> str:
    if role not in ROLES:
        raise InvalidInput(f"unknown role '{role}'; roles: {', '.join(ROLES)}", field="role", value=role)
    if role == permissions.ADMIN and site_code is not None:
        raise InvalidInput("an admin works for all sites; omit the site", field="site", value=site_code)
    return role


def new_user(
    username: str, password: str, role: str, site_id: int | None, now: datetime, full_name: str | None
) -> User:
    """A User row with a fresh password hash (inputs already checked)."""
    return User(
        username=username,
        full_name=full_name,
        password_hash=hash_password(password),
        role=role,
        site_id=site_id,
        active=True,
        created_at=now,
        password_changed_at=now,
        failed_login_count=0,
    )


def add_user(
    uow: UnitOfWork,
    actor: Actor,
    username: str,
    password: str,
    role: str,
    site_code: str | None = None,
    *,
    full_name: str | None = None,
    reason: str | None = None,
) -> UserView:
    """Create a user with ``role`` at the site ``site_code`` (None: all sites)."""
    permissions.require(actor, "user.add")
    name = normalize_username(username)
    check_role(role, site_code)
    check_password(password, name)
    with uow:
        site = uow.sites.require_code(site_code.strip().upper()) if site_code is not None else None
        if uow.users.by_username(name) is not None:
            raise AlreadyExists(f"user '{name}' already exists", field="username", value=name)
        user = uow.users.add(new_user(name, password, role, site.id if site else None, uow.clock(), full_name))
        uow.audit.record(actor, "user.create", user, after=user, reason=reason)
        view = _view(user, site.code if site else None)
        uow.commit()
    return view


def list_users(uow: UnitOfWork, actor: Actor) -> list[UserView]:
    permissions.require(actor, "user.list")
    with uow.reading():
        codes = {site.id: site.code for site in uow.sites.list()}
        return [
            _view(user, codes.get(user.site_id) if user.site_id else None)
            for user in uow.users.list()
            if actor.site_id is None or user.site_id == actor.site_id
        ]


@dataclass(frozen=True, slots=True)
class Lockout:
    """Account lockout (issue 10): after ``max_failures`` consecutive failed sign-ins the account
    refuses every sign-in, a correct password included, for ``duration``. Values come from the
    settings (login_max_failures, login_lockout_minutes)."""

    max_failures: int
    duration: timedelta


def authenticate(uow: UnitOfWork, username: str, password: str, *, lockout: Lockout | None = None) -> Actor:
    """The actor for a correct user name and password; AuthenticationFailed otherwise.

    The refusal says the same for an unknown name, a wrong password and a deactivated account,
    so it does not reveal which names exist. Every attempt is audited. With ``lockout``, a locked
    account is refused with TooManyAttempts (and the attempt audited) without checking the password.
    """
    name = username.strip().lower()
    with uow:
        user = uow.users.by_username(name)
        now = uow.clock()
        if lockout is not None and user is not None and user.locked_until is not None and user.locked_until > now:
            uow.audit.record(None, "user.login_failed", user, reason="account locked")
            uow.commit()
            raise TooManyAttempts(
                f"too many failed sign-ins: this account is locked until {user.locked_until:%H:%M} UTC",
                retry_after=max(1, int((user.locked_until - now).total_seconds())),
            )
        if user is None or not user.active or not verify_password(user.password_hash, password):
            if user is None:
                uow.audit.record(None, "user.login_failed", ("user", name[:64]), reason="unknown user name")
            else:
                before = {"failed_login_count": user.failed_login_count, "locked_until": user.locked_until}
                user.failed_login_count += 1
                why = "account deactivated" if not user.active else "wrong password"
                if lockout is not None and user.failed_login_count >= lockout.max_failures:
                    user.locked_until = now + lockout.duration
                    user.failed_login_count = 0
                    why += f"; account locked after {lockout.max_failures} consecutive failures"
                uow.audit.record(
                    None, "user.login_failed", user, before=before,
                    after={"failed_login_count": user.failed_login_count, "locked_until": user.locked_until},
                    reason=why,
                )
            uow.commit()
            raise AuthenticationFailed("wrong user name or password")
        if _hasher().check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.last_login_at = now
        user.failed_login_count = 0
        user.locked_until = None
        actor = actor_of(user)
        uow.audit.record(actor, "user.login", user)
        uow.commit()
    return actor


def actor_for(uow: UnitOfWork, username: str) -> Actor:
    """The actor for an existing, active user, without a password.

    Only for the local command line, whose operator already holds the database itself; every
    action it takes is still audited under this user's name.
    """
    name = username.strip().lower()
    with uow.reading():
        user = uow.users.by_username(name)
        if user is None:
            raise NotFound(f"no user '{name}'", field="username", value=name)
        if not user.active:
            raise Forbidden(f"user '{name}' is deactivated", field="username", value=name)
        return actor_of(user)


def actor_of(user: User) -> Actor:
    return Actor(user_id=user.id, username=user.username, role=user.role, site_id=user.site_id)


def _view(user: User, site_code: str | None) -> UserView:
    return UserView(
        id=user.id,
        username=user.username,
        role=user.role,
        site_id=user.site_id,
        site_code=site_code,
        active=user.active,
        full_name=user.full_name,
        created_at=user.created_at,
    )
