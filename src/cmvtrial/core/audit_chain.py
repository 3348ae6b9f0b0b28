"""The audit trail's hash chain, as pure functions: canonical JSON, event hashes, chain verification.

Why a chain: 21 CFR 11.10(a) and (e) ask that a system can *discern altered records* and that an
audit trail never obscures prior values (reference/standards.md §2.1, P11-01 and P11-05). Each
event's hash covers its own content and the previous event's hash, so changing, deleting,
inserting or reordering any stored event breaks every hash from that point on, and
``verify_chain`` names the first event where the stored trail stops matching.

Everything hashed is text that is stored verbatim (before/after values are kept as the canonical
JSON produced here), so verification recomputes exactly what was written; nothing depends on how a
database re-renders JSON or timestamps.

The store and the services feed this module plain values; it does no I/O and reads no clock.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

#: The "previous hash" of the first event: 64 zeros, so every event has one.
GENESIS_HASH = "0" * 64

#: The fields of an event that its hash covers, besides the previous hash.
HASHED_FIELDS: tuple[str, ...] = (
    "sequence",
    "occurred_at",
    "user_id",
    "username",
    "site_id",
    "action",
    "entity_type",
    "entity_id",
    "before",
    "after",
    "reason",
)


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for a value: dates as ISO text, times in UTC, decimals as text.

    Decimals become strings so that no precision is lost (a float would round them). Naive
    datetimes are refused: an audit trail must say unambiguously when something happened
    (ICH E6(R3) §4.2.2(d), reference/standards.md E6-09).
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} has no JSON form")
        return value
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((to_jsonable(item) for item in value), key=canonical_json)
    if isinstance(value, list | tuple):
        return [to_jsonable(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    raise TypeError(f"cannot put a {type(value).__name__} into the audit trail")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 kept, no NaN."""
    return json.dumps(
        to_jsonable(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def format_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: the only time format the chain hashes."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("audit times must carry a time zone (naive datetime given)")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(previous_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of the event's fields and the previous event's hash.

    ``fields`` must hold exactly ``HASHED_FIELDS``; ``before`` and ``after`` are the stored JSON
    texts (or None) and ``occurred_at`` an aware datetime.
    """
    if set(fields) != set(HASHED_FIELDS):
        missing = sorted(set(HASHED_FIELDS) - set(fields))
        extra = sorted(set(fields) - set(HASHED_FIELDS))
        raise ValueError(f"event fields do not match the chain's: missing {missing}, extra {extra}")
    payload = dict(fields)
    payload["previous_hash"] = previous_hash
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One stored audit event, as verification sees it."""

    sequence: int
    occurred_at: datetime
    user_id: int | None
    username: str
    site_id: int | None
    action: str
    entity_type: str
    entity_id: str
    before: str | None
    after: str | None
    reason: str | None
    previous_hash: str
    hash: str

    def hashed_fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in HASHED_FIELDS}


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last sequence number and hash the application wrote; catches removal of the newest events."""

    last_sequence: int
    last_hash: str


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The verdict on a trail: ``ok``, how many events were read, and where and why it first broke.

    ``last_hash`` (intact trails only) is the newest event's hash: written down outside the
    database, it later proves that nothing was cut from the end, which the chain alone cannot.
    """

    ok: bool
    count: int
    first_broken_sequence: int | None = None
    reason: str | None = None
    last_hash: str | None = None


def verify_chain(events: Iterable[ChainedEvent], head: ChainHead | None = None) -> VerificationResult:
    """Check events (in stored sequence order) against each other and against the chain head.

    The checks, in order, for each event: its sequence number is the next one (a gap means an
    event was removed, a repeat or a step back means rows were reordered), it points at the
    previous event's hash, and its content still gives its stored hash (a changed value or a
    renumbered event fails here). Finally the last event must be the one the head records:
    events removed from the end, or added after it, are caught there.
    """
    expected_sequence = 1
    previous = GENESIS_HASH
    count = 0
    broken: tuple[int, str] | None = None
    for event in events:
        count += 1
        if broken is not None:
            continue
        broken = _check_event(event, expected_sequence, previous)
        expected_sequence = event.sequence + 1
        previous = event.hash
    if broken is None and head is not None:
        broken = _check_head(head, count, expected_sequence - 1, previous)
    if broken is None:
        return VerificationResult(ok=True, count=count, last_hash=previous)
    return VerificationResult(ok=False, count=count, first_broken_sequence=broken[0], reason=broken[1])


def _check_event(event: ChainedEvent, expected_sequence: int, previous: str) -> tuple[int, str] | None:
    if event.sequence > expected_sequence:
        return (
            expected_sequence,
            f"event {expected_sequence} is missing (the next stored event is {event.sequence})",
        )
    if event.sequence < expected_sequence:
        return (
            event.sequence,
            f"event {event.sequence} is out of order (expected event {expected_sequence})",
        )
    if event.previous_hash != previous:
        return (
            event.sequence,
            f"event {event.sequence} does not point at the hash of event {event.sequence - 1} "
            "(an event before it was removed, inserted or altered)",
        )
    if event_hash(event.previous_hash, event.hashed_fields()) != event.hash:
        return event.sequence, f"event {event.sequence} was altered: its content no longer matches its hash"
    return None


def _check_head(head: ChainHead, count: int, last_sequence: int, last_hash: str) -> tuple[int, str] | None:
    if last_sequence < head.last_sequence:
        first = last_sequence + 1
        which = f"event {first} is" if first == head.last_sequence else f"events {first} to {head.last_sequence} are"
        return first, f"{which} missing from the end of the trail"
    if last_sequence > head.last_sequence:
        return (
            head.last_sequence + 1,
            f"event {head.last_sequence + 1} was added behind the application's back "
            f"(the trail was written up to event {head.last_sequence})",
        )
    if last_hash != head.last_hash:
        return last_sequence, f"event {last_sequence} does not match the hash the application last wrote"
    return None
