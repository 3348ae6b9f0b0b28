"""Subjects: registering a candidate at a site, finding subjects by what users call them, listing them.

A candidate is registered at a site under a screening number (unique per site) and enrolled under
the protocol version in force (DESIGN.md §2: each subject records the version it was enrolled
under); registering plans the protocol's screening visit, where the screening form will sit
(screening.py). Users name subjects by id, ``SITE:SCREENING_NUMBER``, subject number (given at
randomization) or a screening number unique among their sites. Site users see their own site only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import or_, select

from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import AlreadyExists, InvalidInput, NotFound, Refused
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Site, StudyEvent, Subject

SCREENING_NUMBER = re.compile(r"[A-Z0-9][A-Z0-9._-]{0,31}")


@dataclass(frozen=True, slots=True)
class SubjectView:
    """A subject as services hand it out."""

    id: int
    site_id: int
    site_code: str
    screening_number: str
    subject_number: str | None
    status: str
    eligibility: str | None
    screen_failure_reasons: list[dict[str, Any]] | None
    consent_date: date | None
    protocol_version_id: int
    created_at: datetime
    #: The end of study once recorded (services/end_of_study.py): the day, the core/disposition.py
    #: reason code and the words that go with it.
    end_of_study_date: date | None = None
    end_of_study_reason: str | None = None
    end_of_study_details: str | None = None


def subject_view(subject: Subject, site_code: str) -> SubjectView:
    reasons = subject.screen_failure_reasons
    return SubjectView(
        id=subject.id,
        site_id=subject.site_id,
        site_code=site_code,
        screening_number=subject.screening_number,
        subject_number=subject.subject_number,
        status=subject.status,
        eligibility=subject.eligibility,
        screen_failure_reasons=list(reasons) if reasons else None,
        consent_date=subject.consent_date,
        protocol_version_id=subject.protocol_version_id,
        created_at=subject.created_at,
        end_of_study_date=subject.end_of_study_date,
        end_of_study_reason=subject.end_of_study_reason,
        end_of_study_details=subject.end_of_study_details,
    )


def lock_subject(uow: UnitOfWork, subject_id: int) -> Subject:
    """The subject row, locked until the transaction ends (SELECT … FOR UPDATE on PostgreSQL; on
    SQLite the write transaction already holds the only write lock), read fresh from the database."""
    if isinstance(subject_id, bool) or not isinstance(subject_id, int):
        raise InvalidInput("a subject id is a whole number", field="subject", value=subject_id)
    subject = uow.subjects.locked(subject_id)
    if subject is None:
        raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
    return subject


def screening_visit_code(protocol: Protocol) -> str:
    """The protocol's screening visit: the one anchored at screening that holds the screening form."""
    for visit in protocol.visits:
        if visit.anchor == "screening" and protocol.screening_form in visit.forms:
            return visit.code
    for visit in protocol.visits:
        if protocol.screening_form in visit.forms:
            return visit.code
    raise Refused(
        f"protocol {protocol.id} plans no visit with the screening form '{protocol.screening_form}'",
        field="protocol",
    )


def site_code_of(uow: UnitOfWork, site_id: int) -> str:
    site = uow.sites.get(site_id)
    return site.code if site is not None else str(site_id)


def clean_reason(reason: str | None) -> str | None:
    text = " ".join((reason or "").split())
    return text or None


def normalize_screening_number(screening_number: str) -> str:
    number = screening_number.strip().upper() if isinstance(screening_number, str) else ""
    if not SCREENING_NUMBER.fullmatch(number):
        raise InvalidInput(
            f"screening number '{screening_number}' is not valid: 1-32 characters, letters and digits "
            "first, then letters, digits, '.', '_' or '-'",
            field="screening_number",
            value=screening_number,
        )
    return number


def register_subject(
    uow: UnitOfWork, actor: Actor, site_code: str, screening_number: str, *, reason: str | None = None
) -> SubjectView:
    """Register a candidate at a site; AlreadyExists when the site already uses the screening number."""
    permissions.require(actor, "subject.register")
    number = normalize_screening_number(screening_number)
    code = site_code.strip().upper() if isinstance(site_code, str) else ""
    with uow:
        site = uow.sites.require_code(code)
        permissions.require(actor, "subject.register", site=site.id)
        if not site.active:
            raise Refused(f"site {site.code} is not active; no new candidates", field="site", value=site.code)
        if uow.subjects.by_screening_number(site.id, number) is not None:
            raise AlreadyExists(
                f"site {site.code} already has a candidate with screening number {number}",
                field="screening_number",
                value=number,
            )
        version = version_in_force(uow)
        visit_code = screening_visit_code(parsed(version))
        now = uow.clock()
        subject = uow.subjects.add(
            Subject(
                site_id=site.id,
                screening_number=number,
                protocol_version_id=version.id,
                status="screening",
                created_at=now,
                created_by_user_id=actor.user_id,
            )
        )
        uow.audit.record(actor, "subject.register", subject, after=subject, reason=clean_reason(reason))
        event = StudyEvent(subject_id=subject.id, visit_code=visit_code, repeat_index=0, status="planned", created_at=now)
        uow.session.add(event)
        uow.session.flush()
        uow.audit.record(actor, "study_event.create", event, after=event, site_id=site.id)
        view = subject_view(subject, site.code)
        uow.commit()
    return view


def resolve_subject(uow: UnitOfWork, actor: Actor, reference: str) -> int:
    """The id of the subject a user names: its id, ``SITE:SCREENING_NUMBER``, its subject number, or
    a screening number that is unique among the sites the user sees."""
    text = str(reference).strip()
    if not text:
        raise InvalidInput("name a subject: its id, SITE:SCREENING_NUMBER or its subject number", field="subject")
    with uow.reading():
        if text.isdigit():
            subject = uow.subjects.get(int(text))
            if subject is None:
                raise NotFound(f"no subject with id {text}", field="subject", value=text)
            return subject.id
        if ":" in text:
            code, _, number = text.partition(":")
            site = uow.sites.require_code(code.strip().upper())
            subject = uow.subjects.by_screening_number(site.id, number.strip().upper())
            if subject is None:
                raise NotFound(f"site {site.code} has no candidate {number.strip()}", field="subject", value=text)
            return subject.id
        by_number = uow.session.scalar(select(Subject).where(Subject.subject_number == text.upper()))
        if by_number is not None:
            return by_number.id
        query = select(Subject).where(Subject.screening_number == text.upper())
        if actor.site_id is not None:
            query = query.where(Subject.site_id == actor.site_id)
        found = list(uow.session.scalars(query))
        if not found:
            raise NotFound(f"no subject '{text}'", field="subject", value=text)
        if len(found) > 1:
            raise InvalidInput(
                f"screening number {text} is used at several sites; write SITE:{text.upper()}", field="subject", value=text
            )
        return found[0].id


def list_subjects(
    uow: UnitOfWork,
    actor: Actor,
    *,
    site_code: str | None = None,
    status: str | None = None,
    search: str | None = None,
) -> list[SubjectView]:
    """The subjects the actor may see (their own site's, or every site's), optionally filtered by
    site, status, or ``search``: part of a screening or subject number (case does not matter)."""
    permissions.require(actor, "subject.view")
    text = search.strip().upper() if isinstance(search, str) else ""
    if len(text) > 64:
        raise InvalidInput("search for at most 64 characters of a screening or subject number", field="search")
    with uow.reading():
        site_id = scoped_site(uow, actor, site_code, "subject.view")
        query = select(Subject, Site.code).join(Site, Site.id == Subject.site_id).order_by(Site.code, Subject.id)
        if site_id is not None:
            query = query.where(Subject.site_id == site_id)
        if status is not None:
            query = query.where(Subject.status == status)
        if text:
            pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(or_(Subject.screening_number.like(pattern, escape="\\"),
                                    Subject.subject_number.like(pattern, escape="\\")))
        return [subject_view(subject, code) for subject, code in uow.session.execute(query)]


def scoped_site(uow: UnitOfWork, actor: Actor, site_code: str | None, action: str) -> int | None:
    if site_code is None:
        return actor.site_id
    site = uow.sites.require_code(site_code.strip().upper())
    permissions.require(actor, action, site=site.id)
    return site.id
