"""A trial set up for the screening and randomization services: two sites, one user per role.

Everything goes through the real services, except ``clone_consented_subjects``: the concurrency
tests need a hundred eligible, consented candidates, and entering 22 audited items for each one
through the service would take most of the test's time on PostgreSQL. It copies a template
subject's stored screening values row by row (they are what randomization judges again), so every
clone is exactly as eligible as the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from trial_support import add_sites, add_staff, screening_record

from cmvtrial.services import screening, subjects
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import (
    Allocation,
    AuditEvent,
    FormInstance,
    ItemValue,
    RandomizationListEntry,
    RandomizationScheme,
    StudyEvent,
    Subject,
)

CONSENT = date(2024, 5, 18)
SITE, OTHER = "PKUPH", "OTHER"
record = screening_record


@dataclass
class ScreeningTrial:
    uow: UnitOfWork
    admin: Actor
    investigator: Actor
    coordinator: Actor
    monitor: Actor
    data_manager: Actor
    statistician: Actor
    other_investigator: Actor
    site_id: int
    other_site_id: int

    def candidate(self, number: str, *, actor: Actor | None = None, site: str = SITE) -> int:
        """A registered candidate without screening data."""
        return subjects.register_subject(self.uow, actor or self.investigator, site, number).id

    def eligible(self, number: str, *, actor: Actor | None = None, site: str = SITE, consent: bool = True,
                 data: dict[str, Any] | None = None) -> int:
        """A candidate with the eligible screening record entered (and consent recorded)."""
        actor = actor or (self.other_investigator if site == OTHER else self.investigator)
        subject_id = self.candidate(number, actor=actor, site=site)
        screening.enter_screening_data(self.uow, actor, subject_id, data or record())
        if consent:
            screening.record_consent(self.uow, actor, subject_id, CONSENT)
        return subject_id


def make_trial(uow: UnitOfWork, admin: Actor) -> ScreeningTrial:
    sites = add_sites(uow, admin, SITE, OTHER)
    actors = add_staff(uow, admin, [
        ("inv", "investigator", SITE), ("coord", "coordinator", SITE), ("mon", "monitor", SITE),
        ("dm", "data-manager", None), ("stat", "statistician", None), ("inv2", "investigator", OTHER),
    ])
    return ScreeningTrial(uow, admin, actors["inv"], actors["coord"], actors["mon"], actors["dm"], actors["stat"],
                          actors["inv2"], sites[SITE], sites[OTHER])


def snapshot_counts(uow: UnitOfWork) -> dict[str, int]:
    """Row counts of everything screening and randomization write, and of the audit trail."""
    with uow.reading():
        return {
            model.__tablename__: uow.session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Subject, StudyEvent, FormInstance, ItemValue, RandomizationScheme, RandomizationListEntry,
                          Allocation, AuditEvent)
        }


def clone_consented_subjects(uow: UnitOfWork, template_id: int, site_id: int, count: int, prefix: str) -> list[int]:
    """``count`` copies of an eligible, consented template subject (see the module docstring)."""
    with uow:
        template = uow.subjects.require(template_id)
        event = uow.session.scalar(select(StudyEvent).where(StudyEvent.subject_id == template_id))
        form = uow.session.scalar(select(FormInstance).where(FormInstance.subject_id == template_id))
        items = list(uow.session.scalars(select(ItemValue).where(ItemValue.subject_id == template_id)))
        assert event is not None and form is not None and items
        ids = []
        for index in range(count):
            subject = Subject(site_id=site_id, screening_number=f"{prefix}{index:03d}",
                              protocol_version_id=template.protocol_version_id, status=template.status,
                              eligibility=template.eligibility, consent_date=template.consent_date,
                              created_at=template.created_at, created_by_user_id=template.created_by_user_id)
            uow.session.add(subject)
            uow.session.flush()
            copy_event = StudyEvent(subject_id=subject.id, visit_code=event.visit_code, repeat_index=0,
                                    actual_date=event.actual_date, status=event.status, created_at=event.created_at)
            uow.session.add(copy_event)
            uow.session.flush()
            copy_form = FormInstance(study_event_id=copy_event.id, subject_id=subject.id, form_id=form.form_id,
                                     status=form.status, created_at=form.created_at,
                                     created_by_user_id=form.created_by_user_id)
            uow.session.add(copy_form)
            uow.session.flush()
            uow.session.add_all(
                ItemValue(form_instance_id=copy_form.id, subject_id=subject.id, item_id=item.item_id,
                          value_type=item.value_type, entered_value=item.entered_value,
                          entered_unit=item.entered_unit, normalized_number=item.normalized_number,
                          normalized_text=item.normalized_text, normalized_unit=item.normalized_unit,
                          entered_by_user_id=item.entered_by_user_id, entered_at=item.entered_at)
                for item in items
            )
            ids.append(subject.id)
        uow.session.flush()
        uow.commit()
    return ids
