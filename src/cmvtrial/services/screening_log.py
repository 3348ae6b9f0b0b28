"""The screening log: every candidate of a site and the CONSORT enrolment counts.

CONSORT 2010's flow diagram opens with "assessed for eligibility", "excluded (not meeting
inclusion criteria, declined to participate, other reasons)" and "randomized"; the log gives those
numbers per site and overall from the subjects' stored statuses and screen-failure reasons
(screening.py), with the count per excluding criterion. It shows statuses and screening numbers,
no clinical values, so every role may read it for the sites it sees.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import select

from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.subjects import SubjectView, scoped_site, site_code_of, subject_view
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Allocation, ItemValue, Site, Subject


@dataclass(frozen=True)
class ConsortCounts:
    """The CONSORT enrolment boxes for a set of candidates (a site or the whole trial)."""

    assessed: int = 0
    excluded: int = 0
    not_eligible: int = 0
    declined: int = 0
    other: int = 0
    by_criterion: dict[str, int] = field(default_factory=dict)
    randomized: int = 0
    in_screening: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "assessed_for_eligibility": self.assessed,
            "excluded": self.excluded,
            "not_meeting_eligibility_criteria": self.not_eligible,
            "declined_to_participate": self.declined,
            "other_reasons": self.other,
            "excluded_by_criterion": dict(self.by_criterion),
            "randomized": self.randomized,
            "still_in_screening": self.in_screening,
        }


@dataclass(frozen=True)
class ScreeningLogEntry:
    subject: SubjectView
    screening_date: date | None
    randomized: bool


@dataclass(frozen=True)
class ScreeningLog:
    site_code: str | None
    entries: list[ScreeningLogEntry]
    counts: ConsortCounts
    counts_by_site: dict[str, ConsortCounts]


def screening_log(uow: UnitOfWork, actor: Actor, *, site_code: str | None = None) -> ScreeningLog:
    """The candidates of one site (or of every site the actor sees) with the CONSORT counts."""
    permissions.require(actor, "screening.log")
    with uow.reading():
        site_id = scoped_site(uow, actor, site_code, "screening.log")
        query = select(Subject, Site.code).join(Site, Site.id == Subject.site_id).order_by(Site.code, Subject.id)
        if site_id is not None:
            query = query.where(Subject.site_id == site_id)
        subjects = list(uow.session.execute(query))
        ids = [subject.id for subject, _ in subjects]
        dates = _screening_dates(uow, ids)
        allocated = set(uow.session.scalars(select(Allocation.subject_id).where(Allocation.subject_id.in_(ids)))) if ids else set()
        entries = [
            ScreeningLogEntry(subject_view(subject, code), dates.get(subject.id), subject.id in allocated)
            for subject, code in subjects
        ]
        shown_code = site_code_of(uow, site_id) if site_id is not None else None
    by_site: dict[str, list[ScreeningLogEntry]] = {}
    for entry in entries:
        by_site.setdefault(entry.subject.site_code, []).append(entry)
    return ScreeningLog(
        site_code=shown_code,
        entries=entries,
        counts=consort_counts(entries),
        counts_by_site={code: consort_counts(group) for code, group in sorted(by_site.items())},
    )


def _screening_dates(uow: UnitOfWork, subject_ids: list[int]) -> dict[int, date]:
    if not subject_ids:
        return {}
    query = select(ItemValue.subject_id, ItemValue.normalized_text).where(
        ItemValue.subject_id.in_(subject_ids), ItemValue.item_id == "screening_date"
    )
    return {subject_id: date.fromisoformat(text) for subject_id, text in uow.session.execute(query) if text}


def consort_counts(entries: list[ScreeningLogEntry]) -> ConsortCounts:
    """Assessed = every registered candidate; excluded = screen failures, by category, and by
    excluding criterion (a candidate can fail several); randomized = allocated."""
    excluded = not_eligible = declined = other = randomized = 0
    criteria: Counter[str] = Counter()
    for entry in entries:
        subject = entry.subject
        if entry.randomized:
            randomized += 1
        if subject.status != "screen_failed":
            continue
        excluded += 1
        categories = {reason.get("category") for reason in subject.screen_failure_reasons or []}
        if "declined" in categories:
            declined += 1
        elif "other" in categories:
            other += 1
        else:
            not_eligible += 1
        criteria.update(
            str(reason["criterion"]) for reason in subject.screen_failure_reasons or [] if reason.get("criterion")
        )
    return ConsortCounts(
        assessed=len(entries),
        excluded=excluded,
        not_eligible=not_eligible,
        declined=declined,
        other=other,
        by_criterion=dict(sorted(criteria.items())),
        randomized=randomized,
        in_screening=len(entries) - excluded - randomized,
    )
