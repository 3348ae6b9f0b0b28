"""A trial set up for the data-capture services: two sites, one user per role, randomized subjects.

Subjects and allocations are written straight through the unit of work (registration and
randomization are other services' jobs, tested there); everything else goes through the real
services. The randomization date is the allocation's UTC date, as the services read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import func, select
from trial_support import PASSWORD  # noqa: F401 (re-exported for the tests)
from trial_support import add_sites, add_staff, randomization_scheme

from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import (
    Allocation,
    AuditEvent,
    DoseAdministration,
    FormInstance,
    ItemValue,
    Query,
    Signature,
    StudyEvent,
    Subject,
)

RANDOMIZED_ON = date(2025, 3, 3)  # a Monday
IL2, GCV = "interleukin-2", "ganciclovir"


@dataclass
class CaptureTrial:
    uow: UnitOfWork
    admin: Actor
    investigator: Actor
    coordinator: Actor
    monitor: Actor
    data_manager: Actor
    statistician: Actor
    other_investigator: Actor
    other_coordinator: Actor
    site_id: int
    other_site_id: int
    il2_subject: int       # at PKUPH, IL-2 + ganciclovir
    gcv_subject: int       # at PKUPH, ganciclovir alone
    other_subject: int     # at OTHER, IL-2 + ganciclovir
    screening_subject: int  # at PKUPH, not randomized

    def actors(self) -> dict[str, Actor]:
        return {"admin": self.admin, "investigator": self.investigator, "coordinator": self.coordinator,
                "monitor": self.monitor, "data-manager": self.data_manager, "statistician": self.statistician}


def add_subject(uow: UnitOfWork, actor: Actor, site_id: int, number: str, *, arm: str | None,
                randomized_on: date = RANDOMIZED_ON) -> int:
    created = datetime.combine(randomized_on, time(8, 0), tzinfo=UTC)
    with uow:
        trial = uow.trial.current()
        assert trial is not None
        subject = uow.subjects.add(Subject(
            site_id=site_id, screening_number=number, subject_number=f"R-{number}" if arm else None,
            protocol_version_id=trial.protocol_version_id, status="randomized" if arm else "screening",
            eligibility="eligible" if arm else None, consent_date=randomized_on, created_at=created,
            created_by_user_id=actor.user_id))
        uow.audit.record(actor, "subject.register", subject, after=subject)
        if arm is not None:
            scheme = randomization_scheme(uow, actor, created)
            allocation = Allocation(subject_id=subject.id, scheme_id=scheme.id, stratum="all", arm_id=arm,
                                    method="permuted_blocks", details={"levels": {"site": "x"}},
                                    allocated_at=created, allocated_by_user_id=actor.user_id)
            uow.session.add(allocation)
            uow.session.flush()
            uow.audit.record(actor, "randomize", allocation, after=allocation)
        uow.commit()
        return subject.id


def make_capture_trial(uow: UnitOfWork, admin: Actor) -> CaptureTrial:
    sites = add_sites(uow, admin, "PKUPH", "OTHER")
    actors = add_staff(uow, admin, [
        ("inv", "investigator", "PKUPH"), ("coord", "coordinator", "PKUPH"), ("mon", "monitor", "PKUPH"),
        ("dm", "data-manager", None), ("stat", "statistician", None), ("inv2", "investigator", "OTHER"),
        ("coord2", "coordinator", "OTHER"),
    ])
    site, other = sites["PKUPH"], sites["OTHER"]
    il2 = add_subject(uow, admin, site, "S-001", arm="il2_gcv")
    gcv = add_subject(uow, admin, site, "S-002", arm="gcv")
    other_subject = add_subject(uow, admin, other, "S-101", arm="il2_gcv")
    screening = add_subject(uow, admin, site, "S-003", arm=None)
    return CaptureTrial(uow, admin, actors["inv"], actors["coord"], actors["mon"], actors["dm"], actors["stat"],
                        actors["inv2"], actors["coord2"], site, other, il2, gcv, other_subject, screening)


def counts(uow: UnitOfWork) -> dict[str, Any]:
    """Row counts of everything data capture writes, and the audit chain's head: what a refusal
    must leave exactly as it was."""
    with uow.reading():
        session = uow.session
        found: dict[str, Any] = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (StudyEvent, FormInstance, ItemValue, Query, Signature, DoseAdministration, AuditEvent)
        }
        head = uow.audit_events.head()
        found["audit_head"] = (head.last_sequence, head.last_hash) if head else None
        found["subjects"] = [(s.id, s.status, s.end_of_treatment_date) for s in session.scalars(
            select(Subject).order_by(Subject.id))]
        found["values"] = sorted((r.id, r.entered_value, r.version) for r in session.scalars(select(ItemValue)))
        found["queries"] = sorted((q.id, q.status) for q in session.scalars(select(Query)))
        found["signatures"] = sorted((s.id, s.invalidated_at) for s in session.scalars(select(Signature)))
    return found


HEMATOLOGY = {"wbc": 5.2, "anc": 3.1, "lymphocytes": 1.4, "platelets": 210, "hemoglobin": 128}


def cmv(on: date, load: float | None = 25000, unit: str = "copies/mL", result: str = "quantified") -> dict[str, Any]:
    """A CMV-DNA form: quantified with its load, else the category with load 0 (edit check EC07)."""
    return {"collection_date": on.isoformat(), "result": result,
            "cmv_dna": {"value": load if result == "quantified" else 0, "unit": unit}}
