"""Analysis visits: which nominal visit a value counts for, by its study day and the protocol's windows.

Why by day and not by the visit a site filed the form under: a week-12 sample taken on day 80 but
filed as an unscheduled visit is still the week-12 value, and one filed as "week 12" on day 120 is
not. So, as an ADaM ``AVISIT``, each post-baseline value is placed by its study day (days since
randomization, day 0 = randomization, as the protocol's visit plan counts) into the windows the
protocol itself sets for its visits (``visits[].window``):

- a visit anchored to randomization on a fixed day (``W12``: day 84 ± 7) has one slot;
- a repeating visit (``TW``: every 7 days from day 7, ± 2) has one slot per repetition, numbered
  from 1, and only up to the end of treatment (plus its window) when the end of treatment is known,
  since the protocol repeats it "until CMV negative";
- a visit anchored to the end of treatment (``FU3M``: 90 days after, 0/+14) has one slot counted
  from the subject's end-of-treatment day, and none while that day is unknown.

A value inside several windows goes to the slot whose target day is nearest; on a tie a fixed visit
wins over a repetition (day 84 is "Week 12", not "Treatment week 12"), then the earlier target.
A value in no window is "Unscheduled". Screening visits and the baseline visit (day 0) have no slot:
the baseline is chosen separately (the last value on or before day 0, see ``derivations``).
Everything here is vectorised over all values at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol

UNSCHEDULED = "Unscheduled"
#: One day: a date difference divided by it is a study day.
DAY = np.timedelta64(1, "D")
BASELINE = "Baseline"


@dataclass(frozen=True)
class VisitSlot:
    """One nominal visit as an analysis window (a repeating visit stands for all its repetitions)."""

    code: str
    name: str
    anchor: str
    day: int
    before: int
    after: int
    every: int | None = None

    @property
    def repeats(self) -> bool:
        return self.every is not None


def visit_slots(protocol: Protocol) -> tuple[VisitSlot, ...]:
    """The post-baseline analysis windows of ``protocol``, in protocol order."""
    slots = []
    for visit in protocol.visits:
        if visit.anchor == "screening":
            continue
        if visit.repeat is not None:
            slots.append(
                VisitSlot(visit.code, visit.name, visit.anchor, visit.repeat.first_day, visit.window.before_days,
                          visit.window.after_days, visit.repeat.every_days)
            )
        elif not (visit.anchor == "randomization" and visit.day == 0):
            slots.append(VisitSlot(visit.code, visit.name, visit.anchor, int(visit.day or 0),
                                   visit.window.before_days, visit.window.after_days))
    return tuple(slots)


def baseline_visit_name(protocol: Protocol) -> str:
    """The protocol's name for the day-0 visit (``Baseline``)."""
    for visit in protocol.visits:
        if visit.anchor == "randomization" and visit.repeat is None and visit.day == 0:
            return visit.name
    return BASELINE


@dataclass(frozen=True)
class Assignment:
    """Per value: the analysis visit code and name, its target study day and the distance to it."""

    code: np.ndarray
    name: np.ndarray
    target: np.ndarray
    distance: np.ndarray


def assign_visits(study_day: np.ndarray, eot_day: np.ndarray, slots: tuple[VisitSlot, ...]) -> Assignment:
    """Place each post-baseline value (``study_day`` > 0) in its analysis visit.

    ``eot_day`` is each value's subject's end-of-treatment study day (NaN when not known). Values on
    or before day 0 and values in no window get ``Unscheduled`` with a NaN target.
    """
    day = np.asarray(study_day, dtype=float)
    eot = np.asarray(eot_day, dtype=float)
    n = len(day)
    best_distance = np.full(n, np.inf)
    best_repeat = np.ones(n, dtype=bool)
    best_target = np.full(n, np.nan)
    code = np.full(n, UNSCHEDULED, dtype=object)
    name = np.full(n, UNSCHEDULED, dtype=object)
    post = day > 0
    for slot in slots:
        if slot.anchor == "end_of_treatment":
            target = eot + slot.day
        elif slot.repeats:
            k = np.maximum(np.rint((day - slot.day) / slot.every), 0)
            target = slot.day + k * slot.every
        else:
            target = np.full(n, float(slot.day))
        with np.errstate(invalid="ignore"):
            inside = post & (day >= target - slot.before) & (day <= target + slot.after)
            if slot.repeats and slot.anchor == "randomization":
                inside &= ~(day > eot + slot.after)  # repetitions stop at the end of treatment
            distance = np.abs(day - target)
            better = inside & (
                (distance < best_distance)
                | ((distance == best_distance) & best_repeat & (not slot.repeats))
                | ((distance == best_distance) & (best_repeat == slot.repeats) & (target < best_target))
            )
        if not better.any():
            continue
        best_distance[better] = distance[better]
        best_repeat[better] = slot.repeats
        best_target[better] = target[better]
        if slot.repeats:
            number = (k[better] + 1).astype(int).astype(str)
            code[better] = slot.code + number.astype(object)
            name[better] = (slot.name + " ") + number.astype(object)
        else:
            code[better] = slot.code
            name[better] = slot.name
    best_distance[~np.isfinite(best_target)] = np.nan
    return Assignment(code=code, name=name, target=best_target, distance=best_distance)
