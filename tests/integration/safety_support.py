"""A trial set up for the safety services: two sites, one user per role, subjects, one allocated.

Subjects are written straight through the unit of work (registration is another service's job);
everything else goes through the real services. Shared by the safety integration and e2e tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from trial_support import add_sites, add_staff, randomization_scheme

from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import AdverseEvent, Allocation, AuditEvent, LabSafetyProposal, Subject

IL2, GCV = "interleukin-2", "ganciclovir"


@dataclass
class SafetyTrial:
    uow: UnitOfWork
    admin: Actor
    investigator: Actor
    coordinator: Actor
    monitor: Actor
    statistician: Actor
    data_manager: Actor
    other_investigator: Actor
    site_id: int
    other_site_id: int
    subject_id: int          # at PKUPH, not randomized
    control_subject_id: int  # at PKUPH, allocated to ganciclovir alone
    other_subject_id: int    # at OTHER


def add_subject(uow: UnitOfWork, actor: Actor, site_id: int, screening_number: str, now: datetime,
                subject_number: str | None = None) -> int:
    with uow:
        trial = uow.trial.current()
        assert trial is not None
        subject = uow.subjects.add(Subject(
            site_id=site_id, screening_number=screening_number, subject_number=subject_number,
            protocol_version_id=trial.protocol_version_id, status="randomized" if subject_number else "screening",
            consent_date=date(2025, 2, 1), created_at=now, created_by_user_id=actor.user_id,
        ))
        uow.audit.record(actor, "subject.register", subject, after=subject)
        uow.commit()
        return subject.id


def allocate(uow: UnitOfWork, actor: Actor, subject_id: int, arm_id: str, now: datetime) -> None:
    with uow:
        scheme = randomization_scheme(uow, actor, now)
        uow.subjects.locked(subject_id)  # as every change of a subject's data does (tests/subject_locks.py)
        uow.session.add(Allocation(subject_id=subject_id, scheme_id=scheme.id, stratum="all", arm_id=arm_id,
                                   method="permuted_blocks", allocated_at=now, allocated_by_user_id=actor.user_id))
        uow.commit()


def make_safety_trial(uow: UnitOfWork, admin: Actor, now: datetime) -> SafetyTrial:
    sites = add_sites(uow, admin, "PKUPH", "OTHER")
    actors = add_staff(uow, admin, [
        ("inv", "investigator", "PKUPH"), ("coord", "coordinator", "PKUPH"), ("mon", "monitor", "PKUPH"),
        ("stat", "statistician", None), ("dm", "data-manager", None), ("inv2", "investigator", "OTHER"),
    ])
    site, other = sites["PKUPH"], sites["OTHER"]
    subject_id = add_subject(uow, admin, site, "S-001", now)
    control_id = add_subject(uow, admin, site, "S-002", now, subject_number="PKUPH-002")
    allocate(uow, admin, control_id, "gcv", now)
    other_id = add_subject(uow, admin, other, "S-001", now)
    return SafetyTrial(uow, admin, actors["inv"], actors["coord"], actors["mon"], actors["stat"], actors["dm"],
                       actors["inv2"], site, other, subject_id, control_id, other_id)


def drugs(il2: str = "possible", gcv: str = "not_related", il2_action: str = "DOSE NOT CHANGED",
          gcv_action: str = "DOSE NOT CHANGED") -> list[dict[str, str]]:
    return [{"drug": IL2, "relatedness": il2, "action_taken": il2_action},
            {"drug": GCV, "relatedness": gcv, "action_taken": gcv_action}]


def neutropenia(**changes: Any) -> dict[str, Any]:
    """A complete, valid AE record (CTCAE term, grade 3, ongoing)."""
    return {"term": "Neutrophil count decreased", "start_date": "2025-03-01", "grade": 3,
            "outcome": "RECOVERING/RESOLVING", "drugs": drugs(), **changes}


def pneumonia_sae(**changes: Any) -> dict[str, Any]:
    """A serious free-text event: hospitalised, aware on 10 March 08:00 UTC."""
    return {"term": "Pneumonia", "start_date": "2025-03-09", "grade": 3, "outcome": "NOT RECOVERED/NOT RESOLVED",
            "seriousness": ["hospitalisation"], "awareness_time": "2025-03-10T08:00:00+00:00",
            "narrative": "Fever and cough on day 20; admitted with lobar pneumonia; IV antibiotics started.",
            "drugs": drugs(il2="unlikely", gcv="not_related"), **changes}


def counts(uow: UnitOfWork) -> tuple[int, int, int]:
    """(adverse events, proposals, audit events): what a refusal must leave unchanged."""
    with uow.reading():
        session = uow.session
        return (session.scalar(select(func.count()).select_from(AdverseEvent)) or 0,
                session.scalar(select(func.count()).select_from(LabSafetyProposal)) or 0,
                session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
