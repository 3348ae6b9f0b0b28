"""A subject's visit calendar as an iCalendar file (RFC 5545), for a coordinator's calendar app.

Why hand-built text and not a library: the file needs one calendar of all-day events, and the
four rules that make such a file valid are short — CRLF line ends, lines folded at 75 octets
(continuations start with a space, never splitting a UTF-8 character), TEXT values escaped
(``\\`` ``;`` ``,`` and newlines, RFC 5545 §3.3.11), and a UID plus a DTSTAMP on every event. A
dependency would not remove any of our decisions (what the events are, their UIDs).

Decisions:
- one all-day event per dated visit, on its target date (on the actual date once done); the window,
  the status and the forms are in the description. Pending visits (no date yet) are left out.
- UIDs are stable (protocol, subject, visit, occurrence), so importing a newer export updates the
  same events; cancelled treatment visits stay in the file with ``STATUS:CANCELLED`` so a calendar
  that imported them earlier removes them.
- only the trial's subject code appears, never identifying data (DESIGN.md §8 "Secure").
- ``DTSTAMP`` is the ``generated_at`` passed in (pure: no clock is read).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from cmvtrial.core.schedule import Calendar, ScheduledVisit, VisitStatus
from cmvtrial.errors import InvalidInput

PRODID = "-//cmvtrial//visit calendar//EN"
#: RFC 5545 §3.1: lines SHOULD NOT be longer than 75 octets, excluding the line break.
MAX_LINE_OCTETS = 75
CRLF = "\r\n"

#: VEVENT STATUS: a visit that will not happen (cancelled after end of treatment, or missed) is
#: CANCELLED, so calendar apps strike it out; every other visit is CONFIRMED.
_CANCELLED = (VisitStatus.CANCELLED, VisitStatus.MISSED)


def escape_text(value: str) -> str:
    """A TEXT value escaped per RFC 5545 §3.3.11."""
    return (value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
            .replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n"))


def fold(line: str) -> str:
    """One content line folded into chunks of at most 75 octets (RFC 5545 §3.1)."""
    chunks: list[str] = []
    current, size = "", 0
    limit = MAX_LINE_OCTETS
    for character in line:
        width = len(character.encode("utf-8"))
        if size + width > limit:
            chunks.append(current)
            current, size = " ", 1  # a continuation starts with one space, which counts
        current += character
        size += width
    chunks.append(current)
    return CRLF.join(chunks)


def _date(value: date) -> str:
    return value.strftime("%Y%m%d")


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _uid_part(value: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "-" for c in value)


def _event(visit: ScheduledVisit, calendar: Calendar, subject: str, stamp: str) -> list[str]:
    day = visit.actual_date if visit.status == VisitStatus.DONE and visit.actual_date else visit.target_date
    assert day is not None and visit.window_start is not None and visit.window_end is not None
    uid = f"{_uid_part(calendar.protocol_id)}.{_uid_part(subject)}.{_uid_part(visit.label)}@cmvtrial"
    description = [
        f"Visit {visit.label} ({visit.name}) of subject {subject}, protocol {calendar.protocol_id}.",
        f"Target {visit.target_date.isoformat() if visit.target_date else '-'}; window "
        f"{visit.window_start.isoformat()} to {visit.window_end.isoformat()}.",
        f"Status on {calendar.today.isoformat()}: {visit.status}"
        + (f" on {visit.actual_date.isoformat()}" if visit.actual_date else "")
        + (" (outside the window: protocol deviation)" if visit.out_of_window else "") + ".",
    ]
    if visit.end_of_treatment:
        description.append("End of treatment (first negative CMV-DNA).")
    if visit.forms:
        description.append("Forms: " + ", ".join(visit.forms) + ".")
    lines = [
        "BEGIN:VEVENT",
        f"UID:{escape_text(uid)}",
        f"DTSTAMP:{stamp}",
        f"DTSTART;VALUE=DATE:{_date(day)}",
        f"DTEND;VALUE=DATE:{_date(day + timedelta(days=1))}",
        f"SUMMARY:{escape_text(f'{subject} {visit.label}: {visit.name}')}",
        f"DESCRIPTION:{escape_text(chr(10).join(description))}",
        f"CATEGORIES:{escape_text(visit.code)}",
        "TRANSP:TRANSPARENT",
    ]
    lines.append(f"STATUS:{'CANCELLED' if visit.status in _CANCELLED else 'CONFIRMED'}")
    lines.append("END:VEVENT")
    return lines


def calendar_to_ics(calendar: Calendar, *, subject: str, generated_at: datetime) -> str:
    """The calendar as iCalendar text (CRLF line ends, folded, ending with a line break)."""
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidInput("the subject code is required for the calendar file", field="subject")
    if not isinstance(generated_at, datetime) or generated_at.utcoffset() is None:
        raise InvalidInput("generated_at must be a date and time with its time zone", field="generated_at")
    stamp = _stamp(generated_at)
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        f"X-WR-CALNAME:{escape_text(f'{calendar.protocol_id} visits: {subject.strip()}')}",
    ]
    for visit in calendar.visits:
        if visit.target_date is None:
            continue  # pending: no date until treatment has ended
        lines.extend(_event(visit, calendar, subject.strip(), stamp))
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + CRLF for line in lines)
