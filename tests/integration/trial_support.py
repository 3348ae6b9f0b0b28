"""The pieces every service test trial is built from: sites, staff, a screening fixture and a
randomization scheme written the way the services would write it.

The set-up modules (screening_support, data_capture_support, safety_support, interop_support) each
build the trial their services need from these, so a change to how a site, a user or a sealed seed
is made is made once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import RandomizationScheme

PASSWORD = "a-long-enough-password"
SCREENING_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"
SITE_NAMES = {"PKUPH": "Peking University People's Hospital", "OTHER": "Another hospital"}


def screening_record(name: str = "eligible") -> dict[str, Any]:
    """A screening record from tests/fixtures/screening (``eligible``, ``not_eligible_nyha3`` …)."""
    return json.loads((SCREENING_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def add_sites(uow: UnitOfWork, admin: Actor, *codes: str) -> dict[str, int]:
    """The sites (PKUPH, OTHER) by code, added through the set-up service: code -> id."""
    return {code: trial_setup.add_site(uow, admin, code, SITE_NAMES[code]).id for code in codes}


def add_staff(uow: UnitOfWork, admin: Actor, staff: Iterable[tuple[str, str, str | None]]) -> dict[str, Actor]:
    """One account per (user name, role, site code or None for all sites), password PASSWORD:
    user name -> the actor."""
    actors: dict[str, Actor] = {}
    for username, role, site in staff:
        accounts.add_user(uow, admin, username, PASSWORD, role, site)
        actors[username] = accounts.actor_for(uow, username)
    return actors


def sealed_test_seed(protocol_version_id: int) -> str:
    """A seed sealed under the tests' CMVTRIAL_SECRET_KEY (conftest), as the services would store it."""
    from conftest import TEST_SECRET_KEY

    from cmvtrial.services.sealing import SEED_PURPOSE, SecretKey, seal, seed_context

    return seal(SecretKey(TEST_SECRET_KEY.encode(), development=False), SEED_PURPOSE, "test-seed",
                context=seed_context(protocol_version_id))


def randomization_scheme(uow: UnitOfWork, actor: Actor, at: datetime) -> RandomizationScheme:
    """The trial's randomization scheme, made (permuted blocks, a sealed test seed) on first use;
    inside the caller's open unit of work, for allocations written straight to the table."""
    scheme = uow.session.scalar(select(RandomizationScheme))
    if scheme is not None:
        return scheme
    trial = uow.trial.current()
    assert trial is not None
    scheme = RandomizationScheme(protocol_version_id=trial.protocol_version_id, method="permuted_blocks",
                                 sealed_seed=sealed_test_seed(trial.protocol_version_id), seed_sha256="0" * 64,
                                 created_at=at, created_by_user_id=actor.user_id)
    uow.session.add(scheme)
    uow.session.flush()
    return scheme
