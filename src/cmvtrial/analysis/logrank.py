"""Log-rank test of equal hazards between arms, stratified by the randomization strata, as R.

The SAP compares the duration of CMV viremia between arms with a log-rank test stratified by the
randomization strata when the protocol has them (DESIGN.md §4). R's ``survdiff`` is the reference;
lifelines has the unstratified test but no stratified one (reference/statistics.md item 5), so the
test is computed here for both cases — a test checks that with one stratum it equals lifelines'
``logrank_test``, and fixtures check both against R.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from cmvtrial.analysis.validation import (
    arm_levels,
    event_column,
    label_column,
    same_length,
    times_column,
)


@dataclass(frozen=True)
class LogRank:
    """Log-rank test of k groups, optionally stratified (sums of O − E and V over strata)."""

    groups: tuple[str, ...]
    observed: tuple[float, ...]
    expected: tuple[float, ...]
    variance: tuple[tuple[float, ...], ...]
    chisq: float
    df: int
    p: float
    strata: tuple[str, ...] = field(default=())
    method: str = "log-rank (Mantel-Haenszel) test"

    @property
    def stratified(self) -> bool:
        return len(self.strata) > 0

    @property
    def r_equivalent(self) -> str:
        return "survdiff(Surv(time, event) ~ arm" + (" + strata(strata))" if self.stratified else ")")

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["r_equivalent"] = self.r_equivalent
        out["stratified"] = self.stratified
        return out


def logrank_test(
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    group: Sequence[Any] | np.ndarray,
    strata: Sequence[Any] | np.ndarray | None = None,
    *,
    reference: str | None = None,
) -> LogRank:
    """Log-rank test of equal hazards across groups, stratified when ``strata`` is given.

    Within each stratum, at each event time with n at risk and d events, group g contributes
    E_g = n_g d / n and the hypergeometric covariance V_gh = d (n − d)/(n − 1) · n_g/n · (δ_gh − n_h/n).
    O − E and V are summed over times and strata, and χ² = (O − E)ᵀ V⁻¹ (O − E) on all groups but
    the first with E > 0, df = that count, as survival's ``survdiff``. Where V is singular (all at
    risk fail together, and R's ``solve`` fails) a generalized inverse is used and df is its rank
    (p = 1 when that is 0). With one stratum the test equals lifelines' ``logrank_test``.
    """
    same_length(time=time, event=event, group=group, strata=strata)
    t = times_column(time)
    e = event_column(event)
    g = label_column(group, "arm")
    levels = arm_levels(g, reference)
    s = label_column(strata, "strata") if strata is not None else np.full(len(t), "all", dtype=object)
    stratum_levels = tuple(sorted(set(s.tolist())))
    k = len(levels)
    observed = np.zeros(k)
    expected = np.zeros(k)
    variance = np.zeros((k, k))
    for stratum in stratum_levels:
        in_stratum = s == stratum
        o, ex, v = _logrank_sums(t[in_stratum], e[in_stratum], g[in_stratum], levels)
        observed += o
        expected += ex
        variance += v
    usable = np.flatnonzero(expected > 0)
    chisq, df = 0.0, 0
    if len(usable) >= 2:
        keep = usable[1:]
        diff = (observed - expected)[keep]
        v = variance[np.ix_(keep, keep)]
        df = int(np.linalg.matrix_rank(v))
        if df == len(keep):
            chisq = float(diff @ np.linalg.solve(v, diff))
        elif df > 0:  # degenerate (R's solve() fails here): a generalized inverse
            chisq = float(diff @ np.linalg.pinv(v) @ diff)
    p = float(stats.chi2.sf(chisq, df)) if df > 0 else 1.0
    return LogRank(
        groups=levels,
        observed=tuple(map(float, observed)),
        expected=tuple(map(float, expected)),
        variance=tuple(tuple(map(float, row)) for row in variance),
        chisq=chisq,
        df=df,
        p=p,
        strata=stratum_levels if strata is not None else (),
    )


def _logrank_sums(
    t: np.ndarray, e: np.ndarray, g: np.ndarray, levels: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed, expected and covariance of event counts per group within one stratum."""
    event_times = np.unique(t[e == 1])
    k = len(levels)
    if len(event_times) == 0:
        return np.zeros(k), np.zeros(k), np.zeros((k, k))
    at_risk = np.empty((k, len(event_times)))
    deaths = np.empty((k, len(event_times)))
    observed = np.empty(k)
    for i, level in enumerate(levels):
        times_g = np.sort(t[g == level])
        at_risk[i] = len(times_g) - np.searchsorted(times_g, event_times, side="left")
        event_times_g = np.sort(t[(g == level) & (e == 1)])
        deaths[i] = np.searchsorted(event_times_g, event_times, side="right") - np.searchsorted(
            event_times_g, event_times, side="left"
        )
        observed[i] = deaths[i].sum()
    n = at_risk.sum(axis=0)
    d = deaths.sum(axis=0)
    share = at_risk / n
    expected = (share * d).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    variance = np.einsum("t,it->i", spread, share)[:, None] * np.eye(k) - np.einsum(
        "t,it,jt->ij", spread, share, share
    )
    return observed, expected, variance
