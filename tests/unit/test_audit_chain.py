"""The hash chain in core/audit_chain.py: canonical JSON, event hashes, and detection of every tampering."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmvtrial.core.audit_chain import (
    GENESIS_HASH,
    HASHED_FIELDS,
    ChainedEvent,
    ChainHead,
    VerificationResult,
    canonical_json,
    event_hash,
    format_utc,
    verify_chain,
)

START = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def build_chain(length: int) -> list[ChainedEvent]:
    events: list[ChainedEvent] = []
    previous = GENESIS_HASH
    for sequence in range(1, length + 1):
        fields = {
            "sequence": sequence,
            "occurred_at": START + timedelta(minutes=sequence),
            "user_id": 1,
            "username": "admin",
            "site_id": sequence % 3 or None,
            "action": "site.create",
            "entity_type": "site",
            "entity_id": str(sequence),
            "before": None,
            "after": canonical_json({"code": f"S{sequence}", "active": True}),
            "reason": None if sequence % 2 else "set-up",
        }
        digest = event_hash(previous, fields)
        events.append(ChainedEvent(**fields, previous_hash=previous, hash=digest))
        previous = digest
    return events


def head_of(events: list[ChainedEvent]) -> ChainHead:
    return ChainHead(events[-1].sequence, events[-1].hash) if events else ChainHead(0, GENESIS_HASH)


def test_canonical_json_sorts_keys_and_renders_times_in_utc():
    plus_eight = timezone(timedelta(hours=8))
    value = {"b": 1, "a": datetime(2025, 1, 1, 16, 0, tzinfo=plus_eight), "c": date(2025, 1, 2), "d": Decimal("1.10")}
    assert canonical_json(value) == '{"a":"2025-01-01T08:00:00.000000Z","b":1,"c":"2025-01-02","d":"1.10"}'


def test_canonical_json_keeps_unicode_and_refuses_what_json_cannot_say():
    assert canonical_json({"name": "Pékin 北京"}) == '{"name":"Pékin 北京"}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical_json({"x": object()})


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="time zone"):
        format_utc(datetime(2025, 1, 1))


def test_event_hash_is_deterministic_and_covers_the_previous_hash():
    fields = dataclasses.asdict(build_chain(1)[0])
    hashed = {name: fields[name] for name in HASHED_FIELDS}
    assert event_hash(GENESIS_HASH, hashed) == event_hash(GENESIS_HASH, dict(reversed(hashed.items())))
    assert event_hash(GENESIS_HASH, hashed) != event_hash("1" * 64, hashed)
    assert len(event_hash(GENESIS_HASH, hashed)) == 64


def test_event_hash_refuses_missing_or_extra_fields():
    fields = {name: None for name in HASHED_FIELDS}
    with pytest.raises(ValueError, match="missing"):
        event_hash(GENESIS_HASH, {k: v for k, v in fields.items() if k != "reason"})
    with pytest.raises(ValueError, match="extra"):
        event_hash(GENESIS_HASH, {**fields, "note": "x"})


@pytest.mark.parametrize("length", [0, 1, 7])
def test_an_intact_chain_verifies(length):
    events = build_chain(length)
    expected = VerificationResult(ok=True, count=length, last_hash=head_of(events).last_hash)
    assert verify_chain(events, head_of(events)) == expected


def test_a_changed_value_is_named():
    events = build_chain(5)
    events[2] = dataclasses.replace(events[2], after='{"active":false,"code":"S3"}')
    result = verify_chain(events, head_of(build_chain(5)))
    assert (result.ok, result.first_broken_sequence, result.count) == (False, 3, 5)
    assert "altered" in result.reason


def test_a_deleted_event_is_named():
    events = build_chain(5)
    del events[1]
    result = verify_chain(events, head_of(build_chain(5)))
    assert (result.ok, result.first_broken_sequence) == (False, 2)
    assert "missing" in result.reason


def test_an_inserted_event_is_caught_even_with_a_correct_hash():
    events = build_chain(5)
    head = head_of(events)
    fields = {**events[-1].hashed_fields(), "sequence": 6, "entity_id": "99"}
    forged = ChainedEvent(**fields, previous_hash=events[-1].hash, hash=event_hash(events[-1].hash, fields))
    result = verify_chain([*events, forged], head)
    assert (result.ok, result.first_broken_sequence) == (False, 6)


def test_swapped_sequence_numbers_are_caught():
    events = build_chain(5)
    swapped = [
        dataclasses.replace(events[3], sequence=2),
        dataclasses.replace(events[1], sequence=4),
    ]
    reordered = [events[0], swapped[0], events[2], swapped[1], events[4]]
    result = verify_chain(reordered, head_of(events))
    assert (result.ok, result.first_broken_sequence) == (False, 2)


def test_events_removed_from_the_end_are_caught_by_the_head():
    events = build_chain(5)
    result = verify_chain(events[:3], head_of(events))
    assert (result.ok, result.first_broken_sequence) == (False, 4)
    assert verify_chain([], head_of(events)).first_broken_sequence == 1


def test_a_changed_head_is_caught():
    events = build_chain(3)
    result = verify_chain(events, ChainHead(3, "f" * 64))
    assert (result.ok, result.first_broken_sequence) == (False, 3)


# --- any single edit is detected (hypothesis) ---------------------------------------------------

CHAIN_LENGTH = 6
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
values_by_field = {
    "sequence": st.integers(min_value=-5, max_value=50),
    "occurred_at": st.datetimes(timezones=st.just(UTC)),
    "user_id": st.none() | st.integers(),
    "username": st.text(max_size=10),
    "site_id": st.none() | st.integers(),
    "action": st.text(max_size=10),
    "entity_type": st.text(max_size=10),
    "entity_id": st.text(max_size=10),
    "before": st.none() | st.text(max_size=20),
    "after": st.none() | st.text(max_size=20),
    "reason": st.none() | st.text(max_size=20),
    "previous_hash": hex64,
    "hash": hex64,
}


@st.composite
def single_edits(draw: st.DrawFn) -> tuple[list[ChainedEvent], ChainHead]:
    events = build_chain(CHAIN_LENGTH)
    head = head_of(events)
    kind = draw(st.sampled_from(["change", "delete", "insert", "swap", "head"]))
    index = draw(st.integers(0, CHAIN_LENGTH - 1))
    if kind == "change":
        name = draw(st.sampled_from(sorted(values_by_field)))
        old = getattr(events[index], name)
        new = draw(values_by_field[name].filter(lambda value: value != old))
        events[index] = dataclasses.replace(events[index], **{name: new})
        events.sort(key=lambda event: event.sequence)  # the database returns rows by sequence
    elif kind == "delete":
        del events[index]
    elif kind == "insert":
        source = events[draw(st.integers(0, CHAIN_LENGTH - 1))]
        events.insert(index, dataclasses.replace(source, entity_id=source.entity_id + "x"))
        events = [dataclasses.replace(event, sequence=n) for n, event in enumerate(events, start=1)]
    elif kind == "swap":
        other = draw(st.integers(0, CHAIN_LENGTH - 2))
        other += other >= index
        a, b = events[index], events[other]
        events[index], events[other] = dataclasses.replace(b, sequence=a.sequence), dataclasses.replace(a, sequence=b.sequence)
    else:
        changed = draw(st.sampled_from(["last_sequence", "last_hash"]))
        if changed == "last_sequence":
            head = ChainHead(draw(st.integers(-3, 30).filter(lambda n: n != head.last_sequence)), head.last_hash)
        else:
            head = ChainHead(head.last_sequence, draw(hex64.filter(lambda h: h != head.last_hash)))
    return events, head


@settings(max_examples=300)
@given(single_edits())
def test_any_single_edit_is_detected(edited):
    events, head = edited
    result = verify_chain(events, head)
    assert not result.ok
    assert result.first_broken_sequence is not None and result.reason
