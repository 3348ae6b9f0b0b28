"""The protocol this trial runs under, and the calculators that work on it.

Why read the protocol from the database and not from the shipped file: the trial is bound to the
exact text stored (and hashed) at `cmvtrial init`; a newer cmvtrial with an edited file must not
change what an existing trial checks. The parsed model is cached by the text's SHA-256, so pages
and API calls do not re-parse it.

The calculators (an eligibility check on a screening record, a CTCAE grade of a lab value) read no
trial data and store nothing; they need an authenticated actor only because everything does.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cmvtrial.errors import DatabaseNotInitialised
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from cmvtrial.core.ctcae import GradeResult, Term
    from cmvtrial.core.form_entry import FormEntry
    from cmvtrial.core.eligibility import EligibilityResult
    from cmvtrial.core.protocol import Protocol


@dataclass(frozen=True)
class ProtocolInForce:
    """The parsed protocol with the stored version's identity."""

    protocol: Protocol
    version_id: int
    sha256: str
    loaded_at: datetime


@functools.lru_cache(maxsize=4)
def _parse(sha256: str, text: str, source: str) -> Protocol:
    from cmvtrial.core.protocol_parsing import parse_protocol

    return parse_protocol(text, source=source)


def protocol_in_force(uow: UnitOfWork, actor: Actor) -> ProtocolInForce:
    """The protocol version the trial runs under now."""
    permissions.require(actor, "protocol.view")
    with uow.reading():
        trial = uow.trial.current()
        if trial is None:
            raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
        version = uow.protocols.require(trial.protocol_version_id)
        text, sha256, loaded_at, version_id = version.text, version.sha256, version.loaded_at, version.id
        source = f"{version.protocol_id} {version.version} (stored)"
    return ProtocolInForce(_parse(sha256, text, source), version_id, sha256, loaded_at)


def check_eligibility(uow: UnitOfWork, actor: Actor, record: Mapping[str, Any]) -> EligibilityResult:
    """Judge a screening record (docs/screening-record.md) against the protocol in force; nothing
    is stored. Bad input raises InvalidInput / UnitError / OutOfRange naming the field."""
    from cmvtrial.core.eligibility import evaluate_eligibility

    permissions.require(actor, "eligibility.check")
    return evaluate_eligibility(protocol_in_force(uow, actor).protocol, record)


def grade_lab_value(
    actor: Actor,
    term: str,
    value: float,
    unit: str,
    *,
    lln: float | None = None,
    uln: float | None = None,
    baseline: float | None = None,
) -> GradeResult:
    """The CTCAE grade of one lab value (limits and baseline in the value's unit)."""
    from cmvtrial.core import ctcae

    permissions.require(actor, "ctcae.grade")
    return ctcae.grade(term, value, unit, lln=lln, uln=uln, baseline=baseline)


def check_form(uow: UnitOfWork, actor: Actor, form_id: str, submission: Mapping[str, Any]) -> FormEntry:
    """Check one form's values against the protocol in force as data entry would (types, units,
    hard and soft limits, edit checks) and store nothing: the visit page's live check. Refusals
    raise InvalidInput (every problem listed); soft findings and missing items are in the result."""
    from cmvtrial.core.form_entry import validate_form

    permissions.require(actor, "form.enter")
    return validate_form(protocol_in_force(uow, actor).protocol, form_id, submission)


def ctcae_term(actor: Actor, name: str) -> Term | None:
    """The CTCAE term a name or synonym refers to, with the wording of each grade (the AE form
    shows it beside the grade); None for free text, which is graded with CTCAE's general wording."""
    from cmvtrial.core.ctcae import shipped_table

    permissions.require(actor, "ctcae.grade")
    return shipped_table().lookup(name)


def ctcae_general_grades(actor: Actor) -> dict[int, str]:
    """CTCAE's general grade definitions (for an event that is not a CTCAE term)."""
    from cmvtrial.core.ctcae import shipped_table

    permissions.require(actor, "ctcae.grade")
    return dict(shipped_table().general_grades)
