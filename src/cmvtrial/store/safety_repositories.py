"""Repositories of the safety data: adverse events and the proposals lab values make.

Kept apart from ``repositories.py`` because they serve one trial concept (issue 5); the safety
services build them on the unit of work's session, so they share its transaction and never commit.
"""

from __future__ import annotations

from sqlalchemy import func, select

from cmvtrial.store.repositories import Repository
from cmvtrial.store.tables import AdverseEvent, LabSafetyProposal, Subject


class AdverseEventRepository(Repository[AdverseEvent]):
    model = AdverseEvent
    noun = "adverse event"

    def next_number(self, subject_id: int) -> int:
        """The subject's next AE number (1, 2, …); callers hold the subject's row lock."""
        query = select(func.max(AdverseEvent.ae_number)).where(AdverseEvent.subject_id == subject_id)
        return (self.session.scalar(query) or 0) + 1

    def for_subject(self, subject_id: int) -> list[AdverseEvent]:
        query = select(AdverseEvent).where(AdverseEvent.subject_id == subject_id).order_by(AdverseEvent.ae_number)
        return list(self.session.scalars(query))

    def listing(self, *, site_id: int | None = None, subject_id: int | None = None,
                serious_only: bool = False) -> list[tuple[AdverseEvent, Subject]]:
        """Events with their subjects, by site, subject and AE number."""
        query = select(AdverseEvent, Subject).join(Subject, Subject.id == AdverseEvent.subject_id)
        if site_id is not None:
            query = query.where(Subject.site_id == site_id)
        if subject_id is not None:
            query = query.where(AdverseEvent.subject_id == subject_id)
        if serious_only:
            query = query.where(AdverseEvent.serious.is_(True))
        query = query.order_by(Subject.site_id, Subject.id, AdverseEvent.ae_number)
        return [(event, subject) for event, subject in self.session.execute(query)]

    def open_events(self, subject_id: int, ctcae_term: str) -> list[AdverseEvent]:
        """The subject's events of this CTCAE term without an end date, worst grade first."""
        query = (
            select(AdverseEvent)
            .where(
                AdverseEvent.subject_id == subject_id,
                AdverseEvent.ctcae_term == ctcae_term,
                AdverseEvent.resolution_date.is_(None),
            )
            .order_by(AdverseEvent.ctcae_grade.desc(), AdverseEvent.ae_number.desc())
        )
        return list(self.session.scalars(query))


class LabSafetyProposalRepository(Repository[LabSafetyProposal]):
    model = LabSafetyProposal
    noun = "lab safety proposal"

    def pending(self, subject_id: int, term: str) -> list[LabSafetyProposal]:
        query = (
            select(LabSafetyProposal)
            .where(
                LabSafetyProposal.subject_id == subject_id,
                LabSafetyProposal.term == term,
                LabSafetyProposal.status == "pending",
            )
            .order_by(LabSafetyProposal.id)
        )
        return list(self.session.scalars(query))

    def listing(self, *, site_id: int | None = None, subject_id: int | None = None,
                status: str | None = None) -> list[tuple[LabSafetyProposal, Subject]]:
        query = select(LabSafetyProposal, Subject).join(Subject, Subject.id == LabSafetyProposal.subject_id)
        if site_id is not None:
            query = query.where(Subject.site_id == site_id)
        if subject_id is not None:
            query = query.where(LabSafetyProposal.subject_id == subject_id)
        if status is not None:
            query = query.where(LabSafetyProposal.status == status)
        query = query.order_by(LabSafetyProposal.id)
        return [(proposal, subject) for proposal, subject in self.session.execute(query)]
