"""Auditing a randomization scheme: the admin-only export of its lists, and its verification.

Why separate from allocating: these read the secret seed. The export hands it, with the lists it
generates, to an administrator (RZ-01: nobody else may read a list or the seed) and is itself an
audit event, so every disclosure of the sequence is on record. Verification recomputes everything
from the seed without showing it: the seed matches the hash committed in the audit trail before
the first allocation (RZ-06), every used list position is the one the seed gives, positions run
1…n in each stratum without gaps or repeats, each allocation took its position's arm, and every
minimization decision replays from its recorded draws to the same arm (RZ-05).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from cmvtrial.core.minimization import ReplayRng, marginal_counts, minimization_assign
from cmvtrial.core.randomization import STREAM_RECIPE, UNSTRATIFIED, generate_block_list, stratum_name
from cmvtrial.errors import AlreadyExists, DatabaseLocked, InvalidInput, SecretKeyMismatch
from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_versions import parsed, version_in_force
from cmvtrial.services.randomizing import (
    MAX_ATTEMPTS,
    find_scheme,
    locked_scheme,
    minimization_stream,
    previous_minimization,
    scheme_seed,
    seed_digest,
)
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Allocation, AuditEvent, RandomizationListEntry, Site, Subject

#: The most positions one export generates per stratum (a guard against a typo such as 10**9).
MAX_EXPORT_POSITIONS = 100_000


@dataclass(frozen=True)
class RandomizationExport:
    """Everything needed to re-derive and check the lists: the seed, the recipe, the settings, and
    per stratum the generated positions with the subject that used each one so far."""

    protocol_id: str
    protocol_version: str
    protocol_sha256: str
    method: str
    recipe: str
    seed: str
    seed_sha256: str
    ratio: dict[str, int]
    block_sizes: list[int]
    strata: dict[str, list[dict[str, object]]]
    minimization: list[dict[str, object]]
    exported_at: datetime

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol_id": self.protocol_id,
            "protocol_version": self.protocol_version,
            "protocol_sha256": self.protocol_sha256,
            "method": self.method,
            "recipe": self.recipe,
            "seed": self.seed,
            "seed_sha256": self.seed_sha256,
            "ratio": self.ratio,
            "block_sizes": self.block_sizes,
            "exported_at": self.exported_at.isoformat(),
            "strata": self.strata,
            "minimization": self.minimization,
        }


@dataclass(frozen=True)
class RandomizationCheck:
    """The outcome of ``verify_randomization``: ``ok`` when ``problems`` is empty."""

    scheme_exists: bool
    seed_sha256: str | None
    commitment_sequence: int | None
    allocations_checked: int
    strata_checked: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def export_list(
    uow: UnitOfWork,
    actor: Actor,
    *,
    strata: list[str] | None = None,
    n: int | None = None,
    reason: str | None = None,
) -> RandomizationExport:
    """The lists of the protocol in force (admin only; audited). Strata: those named, else every
    stratum used so far plus, for a site-stratified protocol, each site's; ``n`` positions per
    stratum (default: the protocol's target enrollment), never fewer than are used."""
    permissions.require(actor, "randomization.export_list")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_EXPORT_POSITIONS):
        raise InvalidInput(f"the number of positions must be between 1 and {MAX_EXPORT_POSITIONS}", field="n", value=n)
    named = [name.strip() for name in strata or [] if name.strip()]
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _export(uow, actor, named, n, " ".join((reason or "").split()) or None)
        except (AlreadyExists, DatabaseLocked):  # a first-use race creating the scheme: retry, it is there now
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _export(uow: UnitOfWork, actor: Actor, named: list[str], n: int | None, reason: str | None) -> RandomizationExport:
    with uow:
        version = version_in_force(uow)
        protocol = parsed(version)
        settings = protocol.randomization
        scheme, _created = locked_scheme(uow, actor, version, protocol)
        seed = scheme_seed(uow, scheme)
        used = _used_positions(uow, scheme.id)
        names = named or sorted(set(used) | set(_site_strata(uow, [f.name for f in settings.strata])))
        length = n or protocol.population.target_enrollment
        lists: dict[str, list[dict[str, object]]] = {}
        if settings.method == "permuted_blocks":
            for stratum in names:
                taken = used.get(stratum, {})
                count = max(length, max(taken, default=0))
                entries = generate_block_list(dict(settings.ratio), list(settings.block_sizes), count, seed, stratum)
                lists[stratum] = [{**entry.to_dict(), "used_by": taken.get(entry.sequence)} for entry in entries]
        decisions = [
            {"subject_number": number, "stratum": allocation.stratum, "arm": allocation.arm_id, **(allocation.details or {})}
            for allocation, number in _allocations_with_numbers(uow, scheme.id)
            if allocation.method == "minimization"
        ]
        uow.audit.record(
            actor,
            "randomization.export_list",
            scheme,
            after={"strata": {name: len(entries) for name, entries in lists.items()},
                   "minimization_decisions": len(decisions), "seed_sha256": scheme.seed_sha256},
            reason=reason,
        )
        export = RandomizationExport(
            protocol_id=version.protocol_id,
            protocol_version=version.version,
            protocol_sha256=version.sha256,
            method=scheme.method,
            recipe=STREAM_RECIPE,
            seed=seed,
            seed_sha256=scheme.seed_sha256,
            ratio=dict(settings.ratio),
            block_sizes=list(settings.block_sizes),
            strata=lists,
            minimization=decisions,
            exported_at=uow.clock(),
        )
        uow.commit()
    return export


def _site_strata(uow: UnitOfWork, factors: list[str]) -> list[str]:
    if not factors:
        return [UNSTRATIFIED]
    if factors != ["site"]:
        return []
    return [stratum_name(["site"], {"site": site.code}) for site in uow.sites.list()]


def _allocations_with_numbers(uow: UnitOfWork, scheme_id: int) -> list[tuple[Allocation, str | None]]:
    query = (
        select(Allocation, Subject.subject_number)
        .join(Subject, Subject.id == Allocation.subject_id)
        .where(Allocation.scheme_id == scheme_id)
        .order_by(Allocation.id)
    )
    return [(allocation, number) for allocation, number in uow.session.execute(query)]


def _used_positions(uow: UnitOfWork, scheme_id: int) -> dict[str, dict[int, dict[str, object]]]:
    query = (
        select(RandomizationListEntry, Subject.subject_number, Site.code, Allocation.allocated_at)
        .join(Allocation, Allocation.list_entry_id == RandomizationListEntry.id)
        .join(Subject, Subject.id == Allocation.subject_id)
        .join(Site, Site.id == Subject.site_id)
        .where(RandomizationListEntry.scheme_id == scheme_id)
    )
    used: dict[str, dict[int, dict[str, object]]] = {}
    for entry, number, code, allocated_at in uow.session.execute(query):
        used.setdefault(entry.stratum, {})[entry.sequence] = {
            "subject_number": number,
            "site": code,
            "allocated_at": allocated_at.isoformat(),
        }
    return used


# ------------------------------------------------------------------------------------------------
# Verification


def verify_randomization(uow: UnitOfWork, actor: Actor) -> RandomizationCheck:
    """Recompute the scheme of the protocol in force from its seed and compare (see the module docstring)."""
    permissions.require(actor, "randomization.verify")
    with uow.reading():
        version = version_in_force(uow)
        protocol = parsed(version)
        settings = protocol.randomization
        scheme = find_scheme(uow, version.id)
        if scheme is None:
            return RandomizationCheck(False, None, None, 0, 0, [])
        problems: list[str] = []
        try:
            seed = scheme_seed(uow, scheme)
        except SecretKeyMismatch as error:  # altered, or the wrong key: nothing else can be checked
            return RandomizationCheck(True, scheme.seed_sha256, None, 0, 0, [f"the stored seed: {error.message}"])
        if seed_digest(seed) != scheme.seed_sha256:
            problems.append("the stored seed does not hash to the stored seed_sha256")
        committed = _commitment_event(uow, scheme.id)
        first_allocation = uow.session.scalar(
            select(AuditEvent.sequence).where(AuditEvent.action == "randomize").order_by(AuditEvent.sequence).limit(1)
        )
        if committed is None:
            problems.append("no commitment of the seed in the audit trail")
        else:
            after = json.loads(committed.after or "{}")
            if after.get("seed_sha256") != seed_digest(seed):
                problems.append(f"the seed does not match the hash committed in audit event {committed.sequence}")
            if after.get("protocol_sha256") != version.sha256:
                problems.append(f"audit event {committed.sequence} committed another protocol version")
            if first_allocation is not None and first_allocation < committed.sequence:
                problems.append(f"an allocation (event {first_allocation}) precedes the commitment ({committed.sequence})")

        allocations = previous_minimization(uow, scheme.id)
        entries = {entry.id: entry for entry in uow.session.scalars(
            select(RandomizationListEntry).where(RandomizationListEntry.scheme_id == scheme.id))}
        by_stratum: dict[str, list[RandomizationListEntry]] = {}
        for entry in entries.values():
            by_stratum.setdefault(entry.stratum, []).append(entry)
        for stratum, rows in sorted(by_stratum.items()):
            problems.extend(_check_stratum(stratum, rows, settings, seed))
        used = {a.list_entry_id for a in allocations if a.list_entry_id is not None}
        for entry_id in sorted(set(entries) - used):
            problems.append(f"list position {entries[entry_id].stratum}#{entries[entry_id].sequence} has no allocation")
        names = [factor.name for factor in settings.factors]
        previous: list[tuple[dict[str, str], str]] = []
        for allocation in allocations:
            problems.extend(_check_allocation(allocation, entries, settings, seed, names, previous))
            previous.append(((allocation.details or {}).get("levels", {}), allocation.arm_id))
        return RandomizationCheck(
            scheme_exists=True,
            seed_sha256=scheme.seed_sha256,
            commitment_sequence=committed.sequence if committed is not None else None,
            allocations_checked=len(allocations),
            strata_checked=len(by_stratum),
            problems=problems,
        )


def _commitment_event(uow: UnitOfWork, scheme_id: int) -> AuditEvent | None:
    events = uow.audit_events.for_entity("randomization_scheme", str(scheme_id))
    return next((event for event in events if event.action == "randomization_scheme.create"), None)


def _check_stratum(stratum: str, rows: list[RandomizationListEntry], settings: Any, seed: str) -> list[str]:
    rows = sorted(rows, key=lambda row: row.sequence)
    sequences = [row.sequence for row in rows]
    if sequences != list(range(1, len(rows) + 1)):
        return [f"stratum {stratum}: positions {sequences} are not 1..{len(rows)} without gaps or repeats"]
    expected = generate_block_list(dict(settings.ratio), list(settings.block_sizes), len(rows), seed, stratum)
    problems = []
    for row, entry in zip(rows, expected, strict=True):
        if (row.arm_id, row.block_number, row.block_size) != (entry.arm, entry.block, entry.block_size):
            problems.append(f"stratum {stratum} position {row.sequence} differs from the list the seed gives")
    return problems


def _check_allocation(
    allocation: Allocation,
    entries: dict[int, RandomizationListEntry],
    settings: Any,
    seed: str,
    names: list[str],
    previous: list[tuple[dict[str, str], str]],
) -> list[str]:
    label = f"allocation {allocation.id} (subject {allocation.subject_id})"
    details = allocation.details or {}
    if allocation.method == "permuted_blocks":
        entry = entries.get(allocation.list_entry_id or -1)
        if entry is None:
            return [f"{label} has no list position"]
        if (entry.arm_id, entry.stratum) != (allocation.arm_id, allocation.stratum):
            return [f"{label} is not the arm and stratum of its list position"]
        return []
    decision = details.get("decision") or {}
    levels = details.get("levels") or {}
    counts = marginal_counts(previous, names)
    seen = {name: {levels.get(name): dict(counts.get(name, {}).get(levels.get(name), {}))} for name in names}
    if details.get("counts") != seen:
        return [f"{label}: the counts it recorded are not those of the allocations before it"]
    stream = minimization_stream(seed, int(details.get("ordinal", 0)))
    draws = list(decision.get("draws") or [])
    if draws != [stream.random() for _ in draws]:
        return [f"{label}: its draws are not the seed's stream"]
    replayed = minimization_assign(
        levels, counts, dict(settings.ratio), {f.name: f.weight for f in settings.factors},
        float(settings.preferred_arm_probability or 1.0), settings.imbalance_measure, rng=ReplayRng(draws),
    )
    if replayed.arm != allocation.arm_id:
        return [f"{label}: replaying the decision gives {replayed.arm}, not {allocation.arm_id}"]
    return []
