"""Repositories: the queries services need, one class per aggregate, all on the unit of work's session.

They never commit; the unit of work does (one transaction per use case). ``get`` returns None for
a missing row and ``require`` raises NotFound naming what was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cmvtrial.errors import NotFound
from cmvtrial.store.tables import (
    ApiToken,
    AuditChainHead,
    AuditEvent,
    Base,
    ProtocolVersion,
    Site,
    Subject,
    Trial,
    User,
    WebSession,
)

T = TypeVar("T", bound=Base)


class Repository(Generic[T]):
    model: type[T]
    noun: str = "row"

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, row: T) -> T:
        self.session.add(row)
        self.session.flush()  # assigns the id, and surfaces constraint violations here
        return row

    def get(self, row_id: int) -> T | None:
        return self.session.get(self.model, row_id)

    def require(self, row_id: int) -> T:
        row = self.get(row_id)
        if row is None:
            raise NotFound(f"no {self.noun} with id {row_id}", field="id", value=row_id)
        return row


class SiteRepository(Repository[Site]):
    model = Site
    noun = "site"

    def by_code(self, code: str) -> Site | None:
        return self.session.scalar(select(Site).where(Site.code == code))

    def require_code(self, code: str) -> Site:
        site = self.by_code(code)
        if site is None:
            known = ", ".join(s.code for s in self.list()) or "none yet"
            raise NotFound(f"no site '{code}' (known: {known})", field="site", value=code)
        return site

    def list(self) -> list[Site]:
        return list(self.session.scalars(select(Site).order_by(Site.code)))


class UserRepository(Repository[User]):
    model = User
    noun = "user"

    def by_username(self, username: str) -> User | None:
        return self.session.scalar(select(User).where(User.username == username))

    def list(self) -> list[User]:
        return list(self.session.scalars(select(User).order_by(User.username)))

    def count_by_role(self, *, active_only: bool = True) -> dict[str, int]:
        query = select(User.role, func.count()).group_by(User.role)
        if active_only:
            query = query.where(User.active.is_(True))
        return {role: count for role, count in self.session.execute(query)}

    def first_admin(self) -> User | None:
        query = select(User).where(User.role == "admin", User.active.is_(True)).order_by(User.id)
        return self.session.scalars(query).first()


class ProtocolVersionRepository(Repository[ProtocolVersion]):
    model = ProtocolVersion
    noun = "protocol version"

    def find(self, protocol_id: str, version: str) -> ProtocolVersion | None:
        query = select(ProtocolVersion).where(
            ProtocolVersion.protocol_id == protocol_id, ProtocolVersion.version == version
        )
        return self.session.scalar(query)

    def list(self) -> list[ProtocolVersion]:
        return list(self.session.scalars(select(ProtocolVersion).order_by(ProtocolVersion.id)))


class TrialRepository(Repository[Trial]):
    model = Trial
    noun = "trial"

    def current(self) -> Trial | None:
        """The trial this database runs, or None before `cmvtrial init`."""
        return self.session.get(Trial, 1)


# A Core UPDATE locks the row on PostgreSQL as SELECT … FOR UPDATE would and raises the row version;
# the SELECT then loads the row as it is now. (Cheaper than one ORM UPDATE … RETURNING the entity,
# which SQLAlchemy does not cache as well; this runs on every write of a subject's data.)
_RAISE_ROW_VERSION = (update(Subject.__table__).where(Subject.__table__.c.id == bindparam("subject_id"))
                      .values(row_version=Subject.__table__.c.row_version + 1))
_LOCKED_SUBJECT = select(Subject).where(Subject.id == bindparam("subject_id")).execution_options(populate_existing=True)
_RAISE_ROW_VERSION_FROM = (update(Subject.__table__)
                           .where(Subject.__table__.c.id == bindparam("subject_id"),
                                  Subject.__table__.c.row_version == bindparam("version"))
                           .values(row_version=Subject.__table__.c.row_version + 1))


class SubjectRepository(Repository[Subject]):
    model = Subject
    noun = "subject"

    def locked(self, subject_id: int) -> Subject | None:
        """The subject, locked until the transaction ends (a row lock on PostgreSQL; SQLite's write
        transaction holds the database's only write lock), its ``row_version`` raised by one. Every
        use case that changes a subject's data locks the subject first, so a use case that read the
        subject's data earlier sees from the version whether anything changed since. Read from the
        database once per transaction: the services of one use case (data entry, then its lab
        review) each ask for the lock, and the row cannot change under a lock already held."""
        held: set[int] = self.session.info.setdefault("locked_subjects", set())
        if subject_id in held:
            return self.session.get(Subject, subject_id)
        self.session.connection().execute(_RAISE_ROW_VERSION, {"subject_id": subject_id})
        subject = self.session.scalars(_LOCKED_SUBJECT, {"subject_id": subject_id}).one_or_none()
        if subject is not None:
            held.add(subject_id)
        return subject

    def locked_if_unchanged(self, subject: Subject, version: int) -> bool:
        """Lock ``subject`` (as ``locked``) if its ``row_version`` is still ``version``, the one read
        before: then nothing of the subject changed since, and the loaded row is current (one
        statement, no reload). False, with nothing locked, when it changed."""
        held: set[int] = self.session.info.setdefault("locked_subjects", set())
        result = self.session.connection().execute(_RAISE_ROW_VERSION_FROM,
                                                   {"subject_id": subject.id, "version": version})
        if result.rowcount != 1:
            return False
        set_committed_value(subject, "row_version", version + 1)
        held.add(subject.id)
        return True

    def by_screening_number(self, site_id: int, screening_number: str) -> Subject | None:
        query = select(Subject).where(Subject.site_id == site_id, Subject.screening_number == screening_number)
        return self.session.scalar(query)

    def count_by_status(self, site_id: int | None = None) -> dict[str, int]:
        query = select(Subject.status, func.count()).group_by(Subject.status)
        if site_id is not None:
            query = query.where(Subject.site_id == site_id)
        return {status: count for status, count in self.session.execute(query)}


class AuditEventRepository:
    """Reads of the audit trail. Writing (and locking the chain head) is services/audit.py's job."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def head(self) -> AuditChainHead | None:
        return self.session.get(AuditChainHead, 1, populate_existing=True)

    def add(self, event: AuditEvent) -> AuditEvent:
        self.session.add(event)
        self.session.flush()
        return event

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(AuditEvent)) or 0

    def in_order(self, batch_size: int = 1000) -> Iterator[AuditEvent]:
        """Every event by sequence, streamed in batches so a long trail does not fill memory."""
        query = select(AuditEvent).order_by(AuditEvent.sequence).execution_options(yield_per=batch_size)
        yield from self.session.scalars(query)

    def latest(self, limit: int, site_id: int | None = None) -> list[AuditEvent]:
        """The newest events first; with ``site_id``, only that site's."""
        query = select(AuditEvent).order_by(AuditEvent.sequence.desc()).limit(limit)
        if site_id is not None:
            query = query.where(AuditEvent.site_id == site_id)
        return list(self.session.scalars(query))

    def for_entity(self, entity_type: str, entity_id: str) -> list[AuditEvent]:
        query = (
            select(AuditEvent)
            .where(AuditEvent.entity_type == entity_type, AuditEvent.entity_id == entity_id)
            .order_by(AuditEvent.sequence)
        )
        return list(self.session.scalars(query))


class WebSessionRepository(Repository[WebSession]):
    """Browser sessions, found by the SHA-256 of the cookie's token (the token itself is never stored)."""

    model = WebSession
    noun = "session"

    def by_token_sha256(self, digest: str) -> WebSession | None:
        return self.session.scalar(select(WebSession).where(WebSession.token_sha256 == digest))


class ApiTokenRepository(Repository[ApiToken]):
    """API bearer tokens, found by the SHA-256 of the token (the token itself is never stored)."""

    model = ApiToken
    noun = "API token"

    def by_token_sha256(self, digest: str) -> ApiToken | None:
        return self.session.scalar(select(ApiToken).where(ApiToken.token_sha256 == digest))

    def list(self, user_id: int | None = None) -> list[ApiToken]:
        """Newest first; with ``user_id``, only that user's."""
        query = select(ApiToken).order_by(ApiToken.id.desc())
        if user_id is not None:
            query = query.where(ApiToken.user_id == user_id)
        return list(self.session.scalars(query))
