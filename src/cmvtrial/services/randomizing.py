"""Concealed randomization: the scheme and its secret seed, allocating a subject, and the balance.

The rules (DESIGN.md §3 step 3; reference/standards.md §5.3 RZ-01 … RZ-10):

- **The scheme** of a protocol version holds the method and a secret seed (256 random bits from
  ``secrets``), created by an admin at go-live (``setup_scheme``) or on first use. Its SHA-256, with
  the protocol's hash and the list recipe, is written to the audit trail when the scheme is
  created, so the commitment always precedes the first allocation (RZ-06). The seed is stored only
  sealed under CMVTRIAL_SECRET_KEY (services/sealing.py), withheld from every audit snapshot, and
  no service returns it, except the admin-only export.
- **Lists are never stored ahead.** A stratum's permuted-block list is a pure function of (seed,
  stratum, ratio, block sizes) (core/randomization.py); an allocation materialises exactly the next
  position of its stratum, in the same transaction. So the database holds no future assignment
  either, and nobody at a site can learn one (RZ-02).
- **Exactly once, no gaps, under concurrency** (RZ-04, RZ-10). A randomization locks the subject
  row, then the scheme row (SELECT … FOR UPDATE on PostgreSQL; on SQLite BEGIN IMMEDIATE already
  holds the only write lock), so allocations of one scheme are serialised: the next position is
  the stratum's highest used position + 1, read after the lock. Unique constraints back this up
  (one allocation per subject, one per list position, one position per (scheme, stratum,
  sequence)); a transaction that loses a race on them, or a PostgreSQL deadlock or serialization
  failure, is retried from the start and then sees the winner's work.
- **Only an eligible, consented subject of the caller's site, by site staff** (RZ-03): eligibility
  is judged again from the stored screening data, and every stratification factor needs a level.
- **Minimization** takes its random draws from the seed's stream for the allocation's ordinal and
  stores the decision — levels, the counts it saw, every score and draw — so it replays (RZ-05).
- The balance per stratum and overall is for unblinded central roles only (RZ-09).

The export and verification of a scheme are in randomization_audit.py.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import exc, func, select

from cmvtrial.core.eligibility import evaluate_eligibility, expression_values
from cmvtrial.core.minimization import marginal_counts, minimization_assign
from cmvtrial.core.protocol import Protocol
from cmvtrial.core.randomization import (
    STREAM_RECIPE,
    BalanceReport,
    HashStream,
    balance_report,
    generate_block_list,
    stratum_key,
    stratum_name,
)
from cmvtrial.core.screening_record import ScreeningRecord, screening_record_from_data
from cmvtrial.core.strata import SITE, factor_levels
from cmvtrial.errors import (
    AlreadyExists,
    AlreadyRandomized,
    DatabaseLocked,
    NotConsented,
    NotEligible,
    Refused,
)
from cmvtrial.services import permissions
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.screening import FAILURE_CATEGORIES, stored_screening_data
from cmvtrial.services.sealing import open_seed, seal_seed
from cmvtrial.services.subjects import lock_subject
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import (
    Allocation,
    ProtocolVersion,
    RandomizationListEntry,
    RandomizationScheme,
    Subject,
)

#: Attempts at a randomization that loses a race (a unique key taken, a deadlock, a lock timeout).
MAX_ATTEMPTS = 10
#: PostgreSQL SQLSTATEs worth a retry: serialization failure, deadlock detected.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})
#: The random stream of the minimization decision number *k* is keyed like a stratum of this name.
MINIMIZATION_STREAM = "minimization/{ordinal}"


@dataclass(frozen=True, slots=True)
class AllocationView:
    """A subject's allocation as the randomizing user sees it (their own subject only)."""

    subject_id: int
    subject_number: str
    screening_number: str
    site_code: str
    arm: str
    arm_label: str
    stratum: str
    sequence: int | None
    method: str
    allocated_at: datetime
    allocated_by: str


@dataclass(frozen=True, slots=True)
class SchemeView:
    """The scheme without its secret: what an admin publishes at go-live."""

    id: int
    protocol_id: str
    protocol_version: str
    method: str
    seed_sha256: str
    created_at: datetime
    created: bool
    allocations: int


@dataclass(frozen=True)
class BalanceView:
    method: str
    arm_labels: dict[str, str]
    report: BalanceReport
    margins: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "arms": self.arm_labels, **self.report.to_dict(), "margins": self.margins}


# ------------------------------------------------------------------------------------------------
# The scheme


def seed_digest(seed: str) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()


def scheme_seed(uow: UnitOfWork, scheme: RandomizationScheme) -> str:
    """The scheme's seed, unsealed for this use only (never stored or returned in the clear)."""
    return open_seed(uow, scheme.sealed_seed, scheme.protocol_version_id)


def commitment(scheme: RandomizationScheme, version: ProtocolVersion, protocol: Protocol) -> dict[str, object]:
    """What the audit trail commits to when a scheme is created: the seed's hash and everything
    else a list depends on (the protocol's hash binds ratio, block sizes and strata)."""
    settings = protocol.randomization
    return {
        "scheme_id": scheme.id,
        "protocol_id": version.protocol_id,
        "protocol_version": version.version,
        "protocol_sha256": version.sha256,
        "method": scheme.method,
        "recipe": STREAM_RECIPE,
        "seed_sha256": scheme.seed_sha256,
        "ratio": dict(settings.ratio),
        "block_sizes": list(settings.block_sizes),
        "strata": [factor.name for factor in settings.strata],
        "factors": [factor.name for factor in settings.factors],
    }


def find_scheme(uow: UnitOfWork, protocol_version_id: int, *, lock: bool = False) -> RandomizationScheme | None:
    query = select(RandomizationScheme).where(RandomizationScheme.protocol_version_id == protocol_version_id)
    if lock:
        query = query.with_for_update()
    return uow.session.scalars(query.execution_options(populate_existing=True)).one_or_none()


def locked_scheme(
    uow: UnitOfWork, actor: Actor, version: ProtocolVersion, protocol: Protocol, *, reason: str | None = None
) -> tuple[RandomizationScheme, bool]:
    """The version's scheme, locked for this transaction; created (and its commitment audited) when
    missing. Two first uses racing on PostgreSQL: the loser hits the unique key and is retried."""
    scheme = find_scheme(uow, version.id, lock=True)
    if scheme is not None:
        return scheme, False
    seed = secrets.token_hex(32)
    scheme = RandomizationScheme(
        protocol_version_id=version.id,
        method=protocol.randomization.method,
        sealed_seed=seal_seed(uow, seed, version.id),
        seed_sha256=seed_digest(seed),
        created_at=uow.clock(),
        created_by_user_id=actor.user_id,
    )
    uow.session.add(scheme)
    uow.session.flush()
    uow.audit.record(
        actor,
        "randomization_scheme.create",
        scheme,
        after=commitment(scheme, version, protocol),
        reason=reason or "commitment of the randomization seed before the first allocation",
    )
    return scheme, True


def setup_scheme(uow: UnitOfWork, actor: Actor, *, reason: str | None = None) -> SchemeView:
    """Create the scheme of the protocol in force (admin, at go-live) and return its public part;
    idempotent: an existing scheme is returned unchanged."""
    permissions.require(actor, "randomization.setup")
    for attempt in range(MAX_ATTEMPTS):
        try:
            with uow:
                version = version_in_force(uow)
                protocol = parsed(version)
                scheme, created = locked_scheme(uow, actor, version, protocol, reason=reason)
                count = uow.session.scalar(
                    select(func.count()).select_from(Allocation).where(Allocation.scheme_id == scheme.id)
                )
                view = SchemeView(scheme.id, version.protocol_id, version.version, scheme.method, scheme.seed_sha256,
                                  scheme.created_at, created, count or 0)
                uow.commit()
            return view
        except (AlreadyExists, DatabaseLocked):
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------------------------------------
# Randomizing a subject


def randomize_subject(uow: UnitOfWork, actor: Actor, subject_id: int, *, reason: str | None = None) -> AllocationView:
    """Allocate an eligible, consented subject of the caller's site to an arm (see the module
    docstring for the rules); AlreadyRandomized on a second attempt. A refusal changes nothing."""
    permissions.require(actor, "randomize")
    note = " ".join((reason or "").split()) or None
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _randomize_once(uow, actor, subject_id, note)
        except (AlreadyExists, DatabaseLocked):
            if attempt == MAX_ATTEMPTS - 1:
                raise
        except exc.DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) not in RETRY_SQLSTATES or attempt == MAX_ATTEMPTS - 1:
                raise
        time.sleep(0.002 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _randomize_once(uow: UnitOfWork, actor: Actor, subject_id: int, reason: str | None) -> AllocationView:
    with uow:
        subject = lock_subject(uow, subject_id)
        permissions.require(actor, "randomize", site=subject.site_id)
        _refuse_second_allocation(uow, subject)
        version = uow.protocols.require(subject.protocol_version_id)
        protocol = parsed(version)
        if protocol.design.allocation != "randomized":
            raise Refused(f"protocol {protocol.id} does not randomize ({protocol.design.allocation})", field="protocol")
        if subject.consent_date is None:
            raise NotConsented(
                f"subject {subject.screening_number} has no informed consent date; record it first "
                "(`cmvtrial consent SUBJECT --date D`)",
                subject=subject.id,
            )
        record = _eligible_screening_record(uow, subject, protocol)
        site = uow.sites.require(subject.site_id)
        settings = protocol.randomization
        needs_values = any(factor.name != SITE for factor in (*settings.strata, *settings.factors))
        values = expression_values(protocol, record)[0] if needs_values else {}
        strata = _levels(settings.strata, site.code, values, "stratification")

        scheme, _created = locked_scheme(uow, actor, version, protocol)
        _refuse_second_allocation(uow, subject)  # a double submit that waited for the lock
        now = uow.clock()
        stratum_factors = [factor.name for factor in settings.strata]
        if scheme.method == "permuted_blocks":
            stratum = stratum_name(stratum_factors, strata)
            entry = _next_list_entry(uow, scheme, protocol, stratum)
            arm, list_entry_id = entry.arm_id, entry.id
            details: dict[str, Any] = {"sequence": entry.sequence, "levels": strata}
        else:
            levels = _levels(settings.factors, site.code, values, "minimization")
            factor_names = [factor.name for factor in settings.factors]
            stratum = stratum_name(stratum_factors, strata) if stratum_factors else stratum_name(factor_names, levels)
            details = _minimize(uow, scheme, protocol, levels)
            arm, list_entry_id = details["decision"]["arm"], None

        subject_number = _next_subject_number(uow, site.id, site.code)
        allocation = Allocation(
            subject_id=subject.id,
            scheme_id=scheme.id,
            list_entry_id=list_entry_id,
            stratum=stratum,
            arm_id=arm,
            method=scheme.method,
            details=details,
            allocated_at=now,
            allocated_by_user_id=actor.user_id,
        )
        uow.session.add(allocation)
        uow.session.flush()
        uow.audit.record(actor, "randomize", allocation, after=_audit_view(allocation, subject_number),
                         reason=reason, site_id=site.id)
        before = snapshot(subject)
        subject.status, subject.subject_number, subject.updated_at = "randomized", subject_number, now
        uow.session.flush()
        uow.audit.record(actor, "subject.randomize", subject, before=before, after=subject, reason=reason)
        view = AllocationView(
            subject_id=subject.id,
            subject_number=subject_number,
            screening_number=subject.screening_number,
            site_code=site.code,
            arm=arm,
            arm_label=protocol.arm(arm).label,
            stratum=stratum,
            sequence=details.get("sequence"),
            method=scheme.method,
            allocated_at=now,
            allocated_by=actor.username,
        )
        uow.commit()
    return view


def _refuse_second_allocation(uow: UnitOfWork, subject: Subject) -> None:
    existing = uow.session.scalar(select(Allocation).where(Allocation.subject_id == subject.id))
    if existing is not None:
        raise AlreadyRandomized(
            f"subject {subject.subject_number or subject.screening_number} was randomized on "
            f"{existing.allocated_at:%Y-%m-%d %H:%M} UTC; an allocation is never repeated",
            subject=subject.id,
        )


def _eligible_screening_record(uow: UnitOfWork, subject: Subject, protocol: Protocol) -> ScreeningRecord:
    """The stored screening record, judged again now: only a verdict of eligible passes (RZ-03)."""
    manual = [r for r in subject.screen_failure_reasons or [] if r.get("category") in FAILURE_CATEGORIES]
    if subject.status == "screen_failed" and manual:
        raise NotEligible(
            f"subject {subject.screening_number} is a screen failure ({manual[0].get('detail')})", subject=subject.id
        )
    record = screening_record_from_data(stored_screening_data(uow, subject, protocol))
    verdict = evaluate_eligibility(protocol, record)
    if verdict.eligible is False:
        ids = ", ".join(v.id for v in verdict.reasons_not_eligible)
        raise NotEligible(f"subject {subject.screening_number} is not eligible: {ids}", subject=subject.id,
                          criteria=[v.id for v in verdict.reasons_not_eligible])
    if verdict.eligible is None:
        ids = ", ".join(v.id for v in verdict.unknown)
        raise NotEligible(
            f"eligibility of subject {subject.screening_number} is undetermined ({ids} unknown); "
            f"enter {', '.join(verdict.missing) or 'the missing screening data'}",
            subject=subject.id,
            missing=list(verdict.missing),
        )
    return record


def _levels(factors: Any, site_code: str, values: Mapping[str, object], kind: str) -> dict[str, str]:
    found = factor_levels(factors, site=site_code, values=values)
    if not found.complete:
        name, lacking = next(iter(found.missing.items()))
        raise NotEligible(
            f"the {kind} factor '{name}' has no level: enter {', '.join(lacking)}",
            field=name,
            missing=list(lacking),
        )
    return found.levels


def _next_list_entry(
    uow: UnitOfWork, scheme: RandomizationScheme, protocol: Protocol, stratum: str
) -> RandomizationListEntry:
    """The stratum's next position, generated from the seed now (the list is a prefix-stable
    function of the seed, so position k is the same whenever it is generated)."""
    last = uow.session.scalar(
        select(func.max(RandomizationListEntry.sequence)).where(
            RandomizationListEntry.scheme_id == scheme.id, RandomizationListEntry.stratum == stratum
        )
    )
    sequence = (last or 0) + 1
    settings = protocol.randomization
    seed = scheme_seed(uow, scheme)
    generated = generate_block_list(dict(settings.ratio), list(settings.block_sizes), sequence, seed, stratum)[-1]
    entry = RandomizationListEntry(
        scheme_id=scheme.id,
        stratum=stratum,
        sequence=generated.sequence,
        block_number=generated.block,
        block_size=generated.block_size,
        arm_id=generated.arm,
    )
    uow.session.add(entry)
    uow.session.flush()
    return entry


def minimization_stream(seed: str, ordinal: int) -> HashStream:
    """The random source of the scheme's ``ordinal``-th minimization decision."""
    return HashStream(stratum_key(seed, MINIMIZATION_STREAM.format(ordinal=ordinal)))


def previous_minimization(uow: UnitOfWork, scheme_id: int) -> list[Allocation]:
    query = select(Allocation).where(Allocation.scheme_id == scheme_id).order_by(Allocation.id)
    return list(uow.session.scalars(query))


def _minimize(uow: UnitOfWork, scheme: RandomizationScheme, protocol: Protocol, levels: dict[str, str]) -> dict[str, Any]:
    settings = protocol.randomization
    names = [factor.name for factor in settings.factors]
    previous = previous_minimization(uow, scheme.id)
    counts = marginal_counts((((a.details or {}).get("levels", {}), a.arm_id) for a in previous), names)
    ordinal = len(previous) + 1
    decision = minimization_assign(
        levels,
        counts,
        dict(settings.ratio),
        {factor.name: factor.weight for factor in settings.factors},
        float(settings.preferred_arm_probability or 1.0),
        settings.imbalance_measure,
        rng=minimization_stream(scheme_seed(uow, scheme), ordinal),
    )
    seen = {name: {levels[name]: dict(counts.get(name, {}).get(levels[name], {}))} for name in names}
    return {"ordinal": ordinal, "levels": levels, "counts": seen, "decision": decision.to_dict()}


def _next_subject_number(uow: UnitOfWork, site_id: int, site_code: str) -> str:
    """``SITE-001``, ``SITE-002`` … in order of randomization at the site (serialised by the scheme lock;
    the unique key on subject numbers backs it up)."""
    taken = uow.session.scalar(
        select(func.count()).select_from(Subject).where(Subject.site_id == site_id, Subject.subject_number.is_not(None))
    )
    return f"{site_code}-{(taken or 0) + 1:03d}"


def _audit_view(allocation: Allocation, subject_number: str) -> dict[str, object]:
    """The allocation event (RZ-04: user, time, stratum, list position); minimization adds its decision."""
    view: dict[str, object] = {
        "id": allocation.id,
        "subject_id": allocation.subject_id,
        "subject_number": subject_number,
        "scheme_id": allocation.scheme_id,
        "list_entry_id": allocation.list_entry_id,
        "stratum": allocation.stratum,
        "arm_id": allocation.arm_id,
        "method": allocation.method,
        "allocated_at": allocation.allocated_at,
    }
    details = allocation.details or {}
    if allocation.method == "permuted_blocks":
        view["sequence"] = details.get("sequence")
    else:
        view["minimization"] = details
    return view


# ------------------------------------------------------------------------------------------------
# Balance


def balance(uow: UnitOfWork, actor: Actor) -> BalanceView:
    """Allocations per arm per stratum and overall, with imbalances; for minimization also the
    counts per factor level. Unblinded central roles only (admin, data manager, statistician)."""
    permissions.require(actor, "randomization.balance")
    with uow.reading():
        version = version_in_force(uow)
        protocol = parsed(version)
        settings = protocol.randomization
        scheme = find_scheme(uow, version.id)
        allocations = previous_minimization(uow, scheme.id) if scheme is not None else []
        report = balance_report(((a.stratum, a.arm_id) for a in allocations), dict(settings.ratio))
        margins: dict[str, dict[str, dict[str, int]]] = {}
        if settings.method == "minimization":
            names = [factor.name for factor in settings.factors]
            margins = marginal_counts((((a.details or {}).get("levels", {}), a.arm_id) for a in allocations), names)
        labels = {arm.id: arm.label for arm in protocol.arms}
        return BalanceView(settings.method, labels, report, margins)
