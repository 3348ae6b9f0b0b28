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

from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import (
    Allocation,
    AuditEvent,
    DoseAdministration,
    FormInstance,
    ItemValue,
    Query,
    RandomizationScheme,
    Signature,
    StudyEvent,
    Subject,
)

PASSWORD = "a-long-enough-password"
RANDOMIZED_ON = date(2025, 3, 3)  # a Monday
IL2, GCV = "interleukin-2", "ganciclovir"


def sealed_test_seed(protocol_version_id: int) -> str:
    """A seed sealed under the tests' CMVTRIAL_SECRET_KEY (conftest), as the services would store it."""
    from conftest import TEST_SECRET_KEY

    from cmvtrial.services.sealing import SEED_PURPOSE, SecretKey, seal, seed_context

    return seal(SecretKey(TEST_SECRET_KEY.encode(), development=False), SEED_PURPOSE, "test-seed",
                context=seed_context(protocol_version_id))


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
            scheme = uow.session.scalar(select(RandomizationScheme))
            if scheme is None:
                scheme = RandomizationScheme(protocol_version_id=trial.protocol_version_id, method="permuted_blocks",
                                             sealed_seed=sealed_test_seed(trial.protocol_version_id), seed_sha256="0" * 64, created_at=created,
                                             created_by_user_id=actor.user_id)
                uow.session.add(scheme)
                uow.session.flush()
            allocation = Allocation(subject_id=subject.id, scheme_id=scheme.id, stratum="all", arm_id=arm,
                                    method="permuted_blocks", details={"levels": {"site": "x"}},
                                    allocated_at=created, allocated_by_user_id=actor.user_id)
            uow.session.add(allocation)
            uow.session.flush()
            uow.audit.record(actor, "randomize", allocation, after=allocation)
        uow.commit()
        return subject.id


def make_capture_trial(uow: UnitOfWork, admin: Actor) -> CaptureTrial:
    site = trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    other = trial_setup.add_site(uow, admin, "OTHER", "Another hospital")
    actors: dict[str, Actor] = {}
    for username, role, code in [
        ("inv", "investigator", "PKUPH"), ("coord", "coordinator", "PKUPH"), ("mon", "monitor", "PKUPH"),
        ("dm", "data-manager", None), ("stat", "statistician", None), ("inv2", "investigator", "OTHER"),
        ("coord2", "coordinator", "OTHER"),
    ]:
        accounts.add_user(uow, admin, username, PASSWORD, role, code)
        actors[username] = accounts.actor_for(uow, username)
    il2 = add_subject(uow, admin, site.id, "S-001", arm="il2_gcv")
    gcv = add_subject(uow, admin, site.id, "S-002", arm="gcv")
    other_subject = add_subject(uow, admin, other.id, "S-101", arm="il2_gcv")
    screening = add_subject(uow, admin, site.id, "S-003", arm=None)
    return CaptureTrial(uow, admin, actors["inv"], actors["coord"], actors["mon"], actors["dm"], actors["stat"],
                        actors["inv2"], actors["coord2"], site.id, other.id, il2, gcv, other_subject, screening)


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
