"""The unit of work: one transaction per use case, with the repositories and the audit recorder on it.

Pattern from cosmicpython (chapter 6): a use case opens ``with uow:``, works through ``uow.sites``,
``uow.users`` … and ``uow.audit``, and calls ``uow.commit()``. Leaving the block any other way —
an exception, a refusal, or simply no commit — rolls back the data *and* its audit events together,
so nothing half-done is ever stored.

Driver errors a user can act on (locked, unreachable, not initialised) leave the block as domain
errors; the clock is injected so tests and simulations control "now".
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy import exc
from sqlalchemy.orm import Session

from cmvtrial.services.audit import AuditRecorder
from cmvtrial.store.engine import READ_ONLY, translate, translate_overflow
from cmvtrial.store.repositories import (
    AuditEventRepository,
    ProtocolVersionRepository,
    SiteRepository,
    SubjectRepository,
    TrialRepository,
    UserRepository,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class UnitOfWork:
    """``with uow: … uow.commit()``; each ``with`` is a fresh session and transaction.

    ``with uow.reading():`` opens a read-only transaction instead (on SQLite it does not take the
    write lock, so reports never queue behind writers). A use case that checks a lot before it
    writes can do the checking in a reading transaction and then write in a second one
    (``read_first`` / ``start_writing``), so writers hold the write lock only while they write.
    A unit of work belongs to one thread at a time: create one per request (they are cheap; the
    session factory is shared).
    """

    session: Session
    sites: SiteRepository
    users: UserRepository
    protocols: ProtocolVersionRepository
    trial: TrialRepository
    subjects: SubjectRepository
    audit_events: AuditEventRepository
    audit: AuditRecorder

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.session_factory = session_factory
        self.clock = clock
        self._read_only_next = False
        self._active = False

    def reading(self) -> UnitOfWork:
        """Use as ``with uow.reading():`` for a transaction that only reads."""
        self._read_only_next = True
        return self

    def __enter__(self) -> UnitOfWork:
        if self._active:
            raise RuntimeError("this unit of work is already open; use cases do not nest")
        read_only, self._read_only_next = self._read_only_next, False
        self.session = self.session_factory()
        self._active = True
        if read_only:
            try:
                self.session.connection(execution_options={READ_ONLY: True})
            except exc.DBAPIError as error:
                self.session.close()
                self._active = False
                self._raise_translated(error)
        self.sites = SiteRepository(self.session)
        self.users = UserRepository(self.session)
        self.protocols = ProtocolVersionRepository(self.session)
        self.trial = TrialRepository(self.session)
        self.subjects = SubjectRepository(self.session)
        self.audit_events = AuditEventRepository(self.session)
        self.audit = AuditRecorder(self.session, self.clock)
        self.audit.read_only = read_only
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if not self.audit.read_only:
                # A no-op after commit(); otherwise discards data and audit events alike.
                self.session.rollback()
            # close() ends any transaction left; a reader's objects stay readable, detached.
        finally:
            self.session.close()
            self._active = False
        if isinstance(error, exc.DBAPIError):
            translated = translate(error, self._url())
            if translated is not None:
                raise translated from error
        if isinstance(error, OverflowError):
            overflow = translate_overflow(error)
            if overflow is not None:
                raise overflow from error

    @property
    def one_writer_at_a_time(self) -> bool:
        """Whether the database lets one transaction write at a time (SQLite), so that a use case
        does well to check and plan before it takes the write lock; PostgreSQL locks rows."""
        bind: Any = self.session_factory.kw.get("bind") if hasattr(self.session_factory, "kw") else None
        return bind is not None and bind.dialect.name == "sqlite"

    def read_first(self) -> None:
        """Begin this unit of work with a transaction that only reads (on SQLite it does not take
        the write lock): the use case checks and plans its change first, then calls
        ``start_writing()``. Call it before the first statement of the ``with`` block."""
        try:
            self.session.connection(execution_options={READ_ONLY: True})
        except exc.DBAPIError as error:
            self._raise_translated(error)

    def start_writing(self) -> None:
        """End the reading transaction of ``read_first()``; the next statement begins the write
        transaction. What was read stays loaded as it was read, so the caller must prove it is still
        current once it holds its locks (a subject's ``row_version``, see SubjectRepository.locked)."""
        if self.audit.has_pending():
            raise RuntimeError("audit events were recorded while reading; record them after start_writing()")
        session = self.session
        if session.new or session.deleted or any(session.is_modified(row) for row in session.dirty):
            # Committing would write them in the reading transaction, outside the writers' queue.
            raise RuntimeError("rows were changed while reading; change them after start_writing()")
        try:
            self.session.commit()
        except exc.DBAPIError as error:
            self._raise_translated(error)
        self.session.info.pop("locked_subjects", None)

    def commit(self) -> None:
        try:
            self.audit.write_pending()
            self.session.commit()
            self.session.info.pop("locked_subjects", None)
        except exc.DBAPIError as error:
            self._raise_translated(error)

    def _raise_translated(self, error: exc.DBAPIError) -> None:
        translated = translate(error, self._url())
        if translated is None:
            raise error
        raise translated from error

    def _url(self) -> Any:
        bind: Any = self.session.get_bind()
        return bind.url if hasattr(bind, "url") else bind.engine.url

    def rollback(self) -> None:
        self.audit.discard()
        self.session.rollback()
        self.session.info.pop("locked_subjects", None)

    def __repr__(self) -> str:
        state: Any = "open" if self._active else "closed"
        return f"<UnitOfWork {state}>"
