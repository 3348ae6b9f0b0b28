"""The time-to-event analysis of two arms on any table: KM per arm, log-rank, Cox hazard ratio.

This is what ``cmvtrial analyze tte FILE.csv`` and the report's duration-of-viremia section show
(issue 6, DESIGN.md §4): Kaplan–Meier medians with 95% CI per arm (CI transform chosen, R's
``log`` by default), the log-rank test (stratified when strata are given), and the Cox hazard
ratio of the non-reference arm versus the reference (Efron ties, stratified when strata are
given). Every column is checked first, so a bad table fails with one named reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from cmvtrial.analysis.cox import CoxModel, cox_hazard_ratio
from cmvtrial.analysis.logrank import LogRank, logrank_test
from cmvtrial.analysis.survival import CONF_TYPES, KaplanMeier, kaplan_meier_by_group
from cmvtrial.analysis.validation import (
    arm_levels,
    event_column,
    label_column,
    require_columns,
    same_length,
    times_column,
)
from cmvtrial.errors import InvalidInput


@dataclass(frozen=True)
class TimeToEventAnalysis:
    reference: str
    treated: str
    km: dict[str, KaplanMeier]
    logrank: LogRank
    cox: CoxModel

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``analyze tte --json``; ``None`` for a limit not reached."""
        term = self.cox.terms[0]
        return {
            "km": {
                arm: {
                    "n": curve.n,
                    "events": curve.events,
                    "median": curve.median.estimate,
                    "median_ci": [curve.median.lower, curve.median.upper],
                }
                for arm, curve in self.km.items()
            },
            "logrank": {"chisq": self.logrank.chisq, "p": self.logrank.p},
            "cox": {
                "coef": term.coef,
                "se": term.se,
                "hr": term.hr,
                "hr_ci": [term.hr_lower, term.hr_upper],
                "p": term.p,
            },
        }


def analyze_time_to_event(
    frame: pd.DataFrame,
    *,
    time: str,
    event: str,
    arm: str,
    strata: str | None = None,
    reference: str | None = None,
    km_ci: str = "log",
    conf_level: float = 0.95,
) -> TimeToEventAnalysis:
    """Analyse columns ``time``/``event``/``arm`` (and ``strata``) of ``frame`` for two arms.

    Refuses, naming the problem: a missing column, a non-numeric or negative time, an event not
    coded 0/1, missing arm labels, a single arm or more than two, an unknown reference level or CI
    type. Without ``reference`` the first arm label in sorted order is the reference.
    """
    if km_ci not in CONF_TYPES:
        raise InvalidInput(f"unknown --km-ci {km_ci!r}; use one of {', '.join(CONF_TYPES)}", field="km_ci")
    require_columns(frame, [time, event, arm, strata])
    same_length(time=frame[time])
    t = times_column(frame[time], time)
    e = event_column(frame[event], event)
    a = label_column(frame[arm], arm)
    s = label_column(frame[strata], strata) if strata is not None else None
    levels = arm_levels(a, reference, arm)
    if len(levels) != 2:
        raise InvalidInput(
            f"{arm} has {len(levels)} values ({', '.join(levels)}); the analysis compares two arms", field=arm
        )
    return TimeToEventAnalysis(
        reference=levels[0],
        treated=levels[1],
        km=kaplan_meier_by_group(t, e, a, reference=levels[0], conf_type=km_ci, conf_level=conf_level),
        logrank=logrank_test(t, e, a, s, reference=levels[0]),
        cox=cox_hazard_ratio(t, e, a, reference=levels[0], strata=s, conf_level=conf_level),
    )
