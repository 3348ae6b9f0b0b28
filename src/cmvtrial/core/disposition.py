"""A subject's end of study: why a randomized subject leaves early, and when one has completed.

Why these rules live in core: whether a withdrawal can be recorded, and which visit ends a
subject's participation, follow from dates and the visit calendar alone, so they are pure and the
same for every adapter (and for the demo loader). The services store what these functions return.

**Reasons** are the CDISC "Completion/Reason for Non-Completion" terms (NCI codelist C66727, the
SDTM DS domain's DSDECOD; SDTMIG 3.4 §6.2 DS), not a trial's own list, so they live here rather
than in a protocol file. Each reason says which subject status it leads to, in the vocabulary of
the analysis snapshot (``analysis.trial_data.SUBJECT_STATUSES``): a subject lost to follow-up or who
died is counted apart from one who withdrew (CONSORT 2010 item 13b), so those reasons keep their
own status; every other early end is ``withdrawn``. "Other" needs the reason in words.

**Withdrawal** (:func:`check_withdrawal`) is dated: not in the future, not before randomization
(the subject was not yet in the trial), and not before data already recorded for the subject — a
visit done, a dose recorded — because data dated after a subject left would contradict the record
(the withdrawal date is the last day the subject took part; data of that day itself are accepted).

**Completion** (:func:`final_visit`): the subject's final protocol visit is the last visit of their
calendar once every visit has a date — in both shipped protocols the follow-up visit three months
after the end of treatment (``FU3M``), which has no date until treatment has ended. A subject
completes once that visit is done.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from cmvtrial.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.schedule import Calendar, ScheduledVisit

#: A subject who took part to the end.
COMPLETED = "completed"
#: Statuses of a subject who left before the end (the snapshot's DISCONTINUED_STATUSES).
LEFT_EARLY: tuple[str, ...] = ("withdrawn", "lost_to_follow_up", "died")
#: Statuses after which nothing more happens to a subject: no visit, no dose, no second end.
ENDED: tuple[str, ...] = (*LEFT_EARLY, COMPLETED)
#: The longest "other" reason or note kept (a free-text field, not a document).
MAX_DETAILS = 2000


@dataclass(frozen=True)
class ExitReason:
    """One reason a subject's participation ends: our code, a label for people, the CDISC term."""

    code: str
    label: str
    dsdecod: str
    status: str
    needs_details: bool = False


#: Why a randomized subject leaves early; the order is the one forms show.
WITHDRAWAL_REASONS: tuple[ExitReason, ...] = (
    ExitReason("withdrew_consent", "withdrew consent", "WITHDRAWAL BY SUBJECT", "withdrawn"),
    ExitReason("lost_to_follow_up", "lost to follow-up", "LOST TO FOLLOW-UP", "lost_to_follow_up"),
    ExitReason("adverse_event", "adverse event", "ADVERSE EVENT", "withdrawn"),
    ExitReason("investigator_decision", "investigator decision", "PHYSICIAN DECISION", "withdrawn"),
    ExitReason("death", "death", "DEATH", "died"),
    ExitReason("other", "other", "OTHER", "withdrawn", needs_details=True),
)
#: The end of a subject who took part to the final visit.
COMPLETION = ExitReason(COMPLETED, "completed", "COMPLETED", COMPLETED)
_BY_CODE = {reason.code: reason for reason in (*WITHDRAWAL_REASONS, COMPLETION)}


def exit_reason(code: str | None) -> ExitReason | None:
    """The reason stored under ``code`` (None for a subject still in the trial or an unknown code)."""
    return _BY_CODE.get(code or "")


def withdrawal_reason(code: object) -> ExitReason:
    """The withdrawal reason ``code`` names (its code or its label); InvalidInput listing the choices."""
    text = " ".join(code.split()).casefold() if isinstance(code, str) else ""
    for reason in WITHDRAWAL_REASONS:
        if text in (reason.code, reason.label, reason.code.replace("_", " ")):
            return reason
    choices = [reason.code for reason in WITHDRAWAL_REASONS]
    near = difflib.get_close_matches(text.replace(" ", "_"), choices, n=1)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise InvalidInput(f"'{code}' is not a withdrawal reason{hint}; use one of {', '.join(choices)}",
                       field="reason", value=code if isinstance(code, str) else str(code), choices=choices)


def clean_details(details: object) -> str | None:
    """Free text with its white space collapsed; None when empty. InvalidInput when too long or not text."""
    if details is None:
        return None
    if not isinstance(details, str):
        raise InvalidInput("details must be text", field="details", value=str(details))
    text = " ".join(details.split())
    if len(text) > MAX_DETAILS:
        raise InvalidInput(f"details are {len(text)} characters; at most {MAX_DETAILS}", field="details",
                           limit=MAX_DETAILS)
    return text or None


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawal that may be recorded: the date, the reason and the words that go with it."""

    on_date: date
    reason: ExitReason
    details: str | None

    @property
    def status(self) -> str:
        return self.reason.status

    def describe(self) -> str:
        """``withdrew consent``, ``other: moved abroad``: the snapshot's withdrawal reason (ADSL DCSREAS)."""
        return f"{self.reason.label}: {self.details}" if self.reason.needs_details and self.details else self.reason.label


@dataclass(frozen=True)
class LatestData:
    """The latest date something was recorded for a subject, and what it was (for the message)."""

    on_date: date
    what: str


def check_withdrawal(
    reason: object,
    on_date: object,
    *,
    details: object = None,
    today: date,
    randomized_on: date,
) -> Withdrawal:
    """Whether a withdrawal of a randomized subject can be recorded (see the module docstring).

    Bad input (an unknown reason, "other" without words, a date that is not one, in the future or
    before randomization) is InvalidInput; a date before data already recorded is returned as a
    conflict by :func:`conflicting_data` so the service can refuse it in the right family.
    """
    found = withdrawal_reason(reason)
    words = clean_details(details)
    if found.needs_details and words is None:
        raise InvalidInput(f"reason '{found.code}' needs the reason in words (details)", field="details")
    if not isinstance(on_date, date) or hasattr(on_date, "hour"):
        raise InvalidInput("the withdrawal date must be a date (YYYY-MM-DD)", field="date", value=str(on_date))
    if on_date > today:
        raise InvalidInput(f"the withdrawal date {on_date.isoformat()} is after today ({today.isoformat()})",
                           field="date", value=on_date.isoformat())
    if on_date < randomized_on:
        raise InvalidInput(f"the withdrawal date {on_date.isoformat()} is before randomization "
                           f"({randomized_on.isoformat()})", field="date", value=on_date.isoformat())
    return Withdrawal(on_date, found, words)


def conflicting_data(withdrawal: Withdrawal, latest: LatestData | None) -> str | None:
    """Why ``withdrawal`` contradicts data already recorded, or None when it does not."""
    if latest is None or latest.on_date <= withdrawal.on_date:
        return None
    return (f"the withdrawal date {withdrawal.on_date.isoformat()} is before data already recorded: "
            f"{latest.what} on {latest.on_date.isoformat()}")


def final_visit(calendar: Calendar) -> ScheduledVisit | None:
    """The subject's last protocol visit, or None while one is still undated (anchored to an end of
    treatment not yet reached). Cancelled visits do not count; of visits on the same day, the plan's
    later one is last."""
    if any(visit.status == "pending" for visit in calendar.visits):
        return None
    last: ScheduledVisit | None = None
    for visit in calendar.visits:  # in date order, then the plan's
        if visit.status != "cancelled" and visit.target_date is not None and (
                last is None or visit.target_date >= last.target_date):  # type: ignore[operator]
            last = visit
    return last
