"""iCalendar export (core/icalendar.py), checked against RFC 5545's rules: CRLF line ends, lines of
at most 75 octets folded with a leading space, TEXT escaping (§3.3.11), a UID and DTSTAMP per event."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.core.icalendar import calendar_to_ics, escape_text, fold
from cmvtrial.core.schedule import VisitRecord, visit_calendar
from cmvtrial.errors import InvalidInput
from cmvtrial.protocols import load_shipped_protocol

PROTOCOL = load_shipped_protocol("sle-cmv-il2")[0]
STAMP = datetime(2025, 3, 14, 10, 26, 53, tzinfo=timezone(timedelta(hours=1)))
RANDOMIZED = date(2024, 2, 26)


def unfold(text: str) -> list[str]:
    """Content lines with folding undone (RFC 5545 §3.1)."""
    assert text.endswith("\r\n")
    return text[:-2].replace("\r\n ", "").split("\r\n")


def events(text: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for line in unfold(text):
        if line == "BEGIN:VEVENT":
            found.append({})
        elif found and line != "END:VEVENT" and ":" in line:
            name, _, value = line.partition(":")
            found[-1].setdefault(name, value)
    return found


def unescape(value: str) -> str:
    out, index = [], 0
    while index < len(value):
        if value[index] == "\\":
            nxt = value[index + 1]
            out.append("\n" if nxt in "nN" else nxt)
            index += 2
        else:
            out.append(value[index])
            index += 1
    return "".join(out)


@pytest.fixture
def ics() -> str:
    calendar = visit_calendar(
        PROTOCOL, randomized_on=RANDOMIZED, today=date(2024, 3, 25), end_of_treatment=date(2024, 3, 11),
        records={("BL", 0): VisitRecord(RANDOMIZED), ("TW", 1): VisitRecord(date(2024, 3, 8)),
                 ("TW", 3): VisitRecord()},
    )
    return calendar_to_ics(calendar, subject="S-001", generated_at=STAMP)


def test_structure_and_line_rules(ics):
    assert ics.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:")
    assert ics.endswith("END:VCALENDAR\r\n")
    assert "\n" not in ics.replace("\r\n", "")  # every line break is CRLF
    for line in ics.split("\r\n"):
        assert len(line.encode("utf-8")) <= 75


def test_one_event_per_dated_visit_with_stable_unique_uids(ics):
    found = events(ics)
    uids = [event["UID"] for event in found]
    assert uids == ["sle-cmv-il2.S-001.BL@cmvtrial", "sle-cmv-il2.S-001.TW1@cmvtrial", "sle-cmv-il2.S-001.TW2@cmvtrial",
                    "sle-cmv-il2.S-001.TW3@cmvtrial", "sle-cmv-il2.S-001.W12@cmvtrial", "sle-cmv-il2.S-001.FU3M@cmvtrial"]
    assert all(event["DTSTAMP"] == "20250314T092653Z" for event in found)  # generated_at in UTC


def test_dates_statuses_and_descriptions(ics):
    by_uid = {event["UID"].split(".")[2].split("@")[0]: event for event in events(ics)}
    assert by_uid["TW1"]["DTSTART;VALUE=DATE"] == "20240308"  # done: on the actual date
    assert by_uid["TW1"]["DTEND;VALUE=DATE"] == "20240309"
    assert by_uid["W12"]["DTSTART;VALUE=DATE"] == "20240520"
    assert by_uid["FU3M"]["DTSTART;VALUE=DATE"] == "20240609"  # 11 Mar + 90 days
    assert by_uid["TW3"]["STATUS"] == "CANCELLED"  # after end of treatment
    assert by_uid["W12"]["STATUS"] == "CONFIRMED"
    description = unescape(by_uid["TW2"]["DESCRIPTION"])
    assert "End of treatment (first negative CMV-DNA)." in description
    assert "window 2024-03-09 to 2024-03-13" in description
    assert unescape(by_uid["TW1"]["SUMMARY"]) == "S-001 TW1: Treatment week"
    assert "done on 2024-03-08 (outside the window: protocol deviation)" in unescape(by_uid["TW1"]["DESCRIPTION"])
    assert "outside the window" not in unescape(by_uid["BL"]["DESCRIPTION"])


def test_pending_visits_are_left_out():
    calendar = visit_calendar(PROTOCOL, randomized_on=RANDOMIZED, today=RANDOMIZED)
    text = calendar_to_ics(calendar, subject="S-002", generated_at=STAMP)
    assert "FU3M" not in text and "W12" in text


def test_text_values_are_escaped():
    assert escape_text("a,b;c\\d\ne") == "a\\,b\\;c\\\\d\\ne"
    calendar = visit_calendar(PROTOCOL, randomized_on=RANDOMIZED, today=RANDOMIZED)
    text = calendar_to_ics(calendar, subject="Ré;mi, 01", generated_at=STAMP)
    summaries = [unescape(event["SUMMARY"]) for event in events(text)]
    assert summaries[0] == "Ré;mi, 01 BL: Baseline"
    assert events(text)[0]["UID"] == "sle-cmv-il2.R--mi--01.BL@cmvtrial"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"subject": " ", "generated_at": STAMP}, "subject code"),
     ({"subject": "S", "generated_at": datetime(2025, 1, 1)}, "time zone")],
)
def test_bad_input_is_refused(kwargs, message):
    calendar = visit_calendar(PROTOCOL, randomized_on=RANDOMIZED, today=RANDOMIZED)
    with pytest.raises(InvalidInput, match=message):
        calendar_to_ics(calendar, **kwargs)


@given(st.text(min_size=0, max_size=400))
def test_folding_keeps_every_character_and_the_octet_limit(text):
    line = "DESCRIPTION:" + escape_text(text)
    folded = fold(line)
    parts = folded.split("\r\n")
    assert all(len(part.encode("utf-8")) <= 75 for part in parts)
    assert all(part.startswith(" ") for part in parts[1:])
    assert folded.replace("\r\n ", "") == line
    assert unescape(line.removeprefix("DESCRIPTION:")) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_dtstamp_is_utc():
    calendar = visit_calendar(PROTOCOL, randomized_on=RANDOMIZED, today=RANDOMIZED)
    text = calendar_to_ics(calendar, subject="S", generated_at=datetime(2025, 1, 1, 23, 30, tzinfo=UTC))
    assert "DTSTAMP:20250101T233000Z" in text
