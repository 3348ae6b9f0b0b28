"""Setting up the trial: initialising a database from a protocol, sites, the demo set-up, the status.

``initialise_trial`` is the one use case that also migrates: it brings an empty database to the
schema head, stores the protocol file exactly as shipped (text and SHA-256, so what every subject
was enrolled under can be proven later) and creates the first administrator, all audited. It
refuses a database that already runs a trial and then changes nothing.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text

from cmvtrial.errors import (
    AlreadyExists,
    AlreadyInitialised,
    DatabaseNotInitialised,
    InvalidInput,
    NotFound,
)
from cmvtrial.services import accounts, permissions
from cmvtrial.services.accounts import UserView
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store import schema
from cmvtrial.store.database import Database
from cmvtrial.store.engine import database_errors
from cmvtrial.store.tables import ROLES, ProtocolVersion, Site, Trial

SITE_CODE = re.compile(r"[A-Z0-9][A-Z0-9_-]{1,15}")
#: Demo users of these roles belong to the demo site; the others work across sites.
SITE_ROLES = (permissions.INVESTIGATOR, permissions.COORDINATOR, permissions.MONITOR)
#: The demo site for `cmvtrial init --demo`: the site named in seed 000_fe96d832b52bb8a9.txt.
DEMO_SITE = ("PKUPH", "Peking University People's Hospital")


@dataclass(frozen=True, slots=True)
class SiteView:
    id: int
    code: str
    name: str
    active: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InitialisedTrial:
    protocol_id: str
    protocol_version: str
    title: str
    sha256: str
    admin_username: str
    database: str


@dataclass(frozen=True, slots=True)
class TrialStatus:
    """What `cmvtrial status` shows: the protocol in force and what the database holds."""

    protocol_id: str
    protocol_version: str
    title: str
    sha256: str
    initialised_at: datetime
    sites: list[SiteView]
    users_by_role: dict[str, int]
    subjects_by_status: dict[str, int]
    audit_events: int


@dataclass(frozen=True, slots=True)
class LoadedProtocol:
    protocol_id: str
    version: str
    title: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def load_protocol(reference: str) -> LoadedProtocol:
    """A protocol (a shipped id or a file path), validated, with the exact text it was read from."""
    from cmvtrial import protocols

    protocol, source = protocols.load_protocol(reference)
    return LoadedProtocol(protocol.id, protocol.version, protocol.title, source)


def is_initialised(database: Database) -> bool:
    """Whether this database already runs a trial (at whatever schema revision)."""
    if database.is_missing_file():
        return False
    if not schema.has_table(database.engine, "trial"):
        return False
    with database_errors(database.engine.url), database.engine.connect() as connection:
        return bool(connection.execute(text("SELECT COUNT(*) FROM trial")).scalar())


def upgrade_schema(database: Database) -> tuple[str | None, str]:
    """Bring an initialised database to the schema head; returns (revision before, head)."""
    before = schema.current_revision(database.engine)
    head = schema.head_revision()
    if before != head:
        schema.upgrade(database.engine)
    return before, head


def initialise_trial(
    database: Database,
    protocol_id: str,
    admin_username: str,
    admin_password: str,
    *,
    now: datetime,
) -> InitialisedTrial:
    """Migrate, store the protocol version, create the first admin; AlreadyInitialised if done before.

    All inputs are checked before anything is written, so a refusal leaves the database as it was.
    """
    username = accounts.normalize_username(admin_username)
    accounts.check_password(admin_password, username)
    protocol = load_protocol(protocol_id)
    if is_initialised(database):
        raise AlreadyInitialised(
            f"{database.url} already runs a trial; nothing was changed", database=database.url
        )
    schema.upgrade(database.engine)
    uow = UnitOfWork(database.session_factory, clock=lambda: now)
    with uow:
        if uow.trial.current() is not None:  # another init won the race since the check above
            raise AlreadyInitialised(f"{database.url} already runs a trial; nothing was changed")
        admin = uow.users.add(accounts.new_user(username, admin_password, permissions.ADMIN, None, now, None))
        actor = accounts.actor_of(admin)
        uow.audit.record(actor, "user.create", admin, after=admin, reason="first administrator (cmvtrial init)")
        version = uow.protocols.add(
            ProtocolVersion(
                protocol_id=protocol.protocol_id,
                version=protocol.version,
                title=protocol.title,
                text=protocol.text,
                sha256=protocol.sha256,
                loaded_at=now,
                loaded_by_user_id=admin.id,
            )
        )
        uow.audit.record(actor, "protocol_version.load", version, after=_protocol_summary(version))
        trial = uow.trial.add(
            Trial(id=1, protocol_version_id=version.id, initialised_at=now, initialised_by_user_id=admin.id)
        )
        uow.audit.record(
            actor, "trial.initialise", trial, after=trial, reason=f"cmvtrial init --protocol {protocol_id}"
        )
        uow.commit()
    return InitialisedTrial(
        protocol_id=protocol.protocol_id,
        protocol_version=protocol.version,
        title=protocol.title,
        sha256=protocol.sha256,
        admin_username=username,
        database=database.url,
    )


def default_actor(uow: UnitOfWork) -> Actor:
    """The administrator the local command line acts as when no ``--as`` is given: the one created
    by `cmvtrial init`, or the first active admin if that one was deactivated."""
    with uow.reading():
        trial = uow.trial.current()
        if trial is None:
            raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
        user = uow.users.get(trial.initialised_by_user_id) if trial.initialised_by_user_id else None
        if user is None or not user.active:
            user = uow.users.first_admin()
        if user is None:
            raise NotFound("there is no active administrator; name a user with --as", field="as")
        return accounts.actor_of(user)


def add_site(uow: UnitOfWork, actor: Actor, code: str, name: str, *, reason: str | None = None) -> SiteView:
    """Register a site. The code is short and upper-case (it prefixes screening numbers)."""
    permissions.require(actor, "site.add")
    code = code.strip().upper()
    name = " ".join(name.split())
    if not SITE_CODE.fullmatch(code):
        raise InvalidInput(
            f"site code '{code}' is not valid: 2-16 characters, letters, digits, '-' or '_'",
            field="code",
            value=code,
        )
    if not name or len(name) > 200:
        raise InvalidInput("site name must have 1 to 200 characters", field="name", value=name)
    with uow:
        if uow.sites.by_code(code) is not None:
            raise AlreadyExists(f"site '{code}' already exists", field="code", value=code)
        site = uow.sites.add(Site(code=code, name=name, active=True, created_at=uow.clock()))
        uow.audit.record(actor, "site.create", site, after=site, reason=reason)
        view = _site_view(site)
        uow.commit()
    return view


def list_sites(uow: UnitOfWork, actor: Actor) -> list[SiteView]:
    permissions.require(actor, "site.list")
    with uow.reading():
        return [
            _site_view(site) for site in uow.sites.list() if actor.site_id is None or site.id == actor.site_id
        ]


def add_demo_accounts(
    uow: UnitOfWork,
    actor: Actor,
    *,
    make_password: Callable[[], str] = lambda: secrets.token_urlsafe(12),
) -> tuple[SiteView, list[tuple[UserView, str]]]:
    """The demo site and one user per role besides admin, each with a fresh password to print.

    Site staff (investigator, coordinator, monitor) belong to the demo site; the data manager and
    the statistician work across sites.
    """
    site = add_site(uow, actor, *DEMO_SITE, reason="demo set-up (cmvtrial init --demo)")
    created: list[tuple[UserView, str]] = []
    for role in ROLES:
        if role == permissions.ADMIN:
            continue
        password = make_password()
        site_code = site.code if role in SITE_ROLES else None
        user = accounts.add_user(
            uow, actor, f"demo-{role}", password, role, site_code, reason="demo set-up (cmvtrial init --demo)"
        )
        created.append((user, password))
    return site, created


def trial_status(uow: UnitOfWork, actor: Actor) -> TrialStatus:
    """The protocol in force and counts of sites, users, subjects and audit events."""
    permissions.require(actor, "trial.status")
    with uow.reading():
        trial = uow.trial.current()
        if trial is None:
            raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
        version = uow.protocols.require(trial.protocol_version_id)
        sites = [s for s in uow.sites.list() if actor.site_id is None or s.id == actor.site_id]
        events = uow.audit_events.count()
        return TrialStatus(
            protocol_id=version.protocol_id,
            protocol_version=version.version,
            title=version.title,
            sha256=version.sha256,
            initialised_at=trial.initialised_at,
            sites=[_site_view(s) for s in sites],
            users_by_role=uow.users.count_by_role(),
            subjects_by_status=uow.subjects.count_by_status(site_id=actor.site_id),
            audit_events=events,
        )


def _protocol_summary(version: ProtocolVersion) -> dict[str, object]:
    # The text itself stays in protocol_versions; its SHA-256 here binds the trail to it.
    return {
        "id": version.id,
        "protocol_id": version.protocol_id,
        "version": version.version,
        "title": version.title,
        "sha256": version.sha256,
    }


def _site_view(site: Site) -> SiteView:
    return SiteView(id=site.id, code=site.code, name=site.name, active=site.active, created_at=site.created_at)
