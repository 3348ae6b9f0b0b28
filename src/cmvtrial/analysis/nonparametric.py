"""Wilcoxon rank-sum test with the Hodges–Lehmann shift and its CI, exactly as R's ``wilcox.test``.

The SAP's sensitivity analysis for NK cells and the immune markers (DESIGN.md §4) compares the
change from baseline between arms without assuming normality. R's
``wilcox.test(x, y, conf.int = TRUE)`` is the reference:

* W and its p-value come from scipy's ``mannwhitneyu``, with the method chosen as R chooses it —
  the exact distribution when both groups have fewer than 50 values and there are no ties,
  otherwise the normal approximation with tie and continuity correction (equal to R to 4e-13).
* The Hodges–Lehmann shift and its CI are computed here. In the exact case R takes the median of
  all differences x_i − y_j and the CI from quantiles of the Wilcoxon distribution (``qwilcox``).
  In the normal-approximation case R does *not* take the median of the differences: it solves
  W(d) = z for d with ``uniroot`` (tolerance 1e-4), so its estimate differs from the median by up
  to the root-finder's tolerance (reference/statistics.md item 7). To equal R, this module runs the
  same root-finder (Brent's zeroin, as R's C ``R_zeroin2``) on the same step function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

from cmvtrial.analysis.validation import (
    arm_levels,
    confidence_level,
    label_column,
    numeric_column,
    same_length,
)
from cmvtrial.errors import InvalidInput

# R's choice of the exact test: both samples smaller than this and no ties (wilcox.test.default).
_R_EXACT_LIMIT = 50
# R's default tolerance for the asymptotic Hodges–Lehmann root (wilcox.test, tol.root = 1e-4).
_R_ROOT_TOLERANCE = 1e-4
_R_ROOT_MAX_ITERATIONS = 1000
_DBL_EPSILON = float(np.finfo(float).eps)


@dataclass(frozen=True)
class WilcoxonRankSum:
    """Rank-sum test of x versus y with the Hodges–Lehmann location shift (x − y) and its CI."""

    x_label: str
    y_label: str
    n_x: int
    n_y: int
    w: float
    p: float
    exact: bool
    estimate: float
    ci: tuple[float, float]
    conf_level: float
    n_missing: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def method(self) -> str:
        if self.exact:
            return "Wilcoxon rank-sum exact test; Hodges-Lehmann median of differences, exact CI"
        return (
            "Wilcoxon rank-sum test, normal approximation with continuity and tie correction; "
            "Hodges-Lehmann shift and CI by root-finding as R"
        )

    @property
    def r_equivalent(self) -> str:
        return "wilcox.test(x, y, conf.int = TRUE)"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["ci"] = list(self.ci)
        out["notes"] = list(self.notes)
        out["method"] = self.method
        out["r_equivalent"] = self.r_equivalent
        return out


def wilcoxon_by_arm(
    values: Sequence[float] | np.ndarray,
    arm: Sequence[Any] | np.ndarray,
    *,
    reference: str | None = None,
    conf_level: float = 0.95,
) -> WilcoxonRankSum:
    """Compare ``values`` of the non-reference arm (x) with the reference arm (y).

    Missing values are left out and counted per arm (R drops non-finite values silently; here the
    count is kept so the report can say how many week-12 values were missing).
    """
    same_length(values=values, arm=arm)
    v = numeric_column(values, "value", allow_missing=True)
    a = label_column(arm, "arm")
    levels = arm_levels(a, reference)
    if len(levels) != 2:
        raise InvalidInput(f"the rank-sum test compares two arms; arm has {len(levels)} values", field="arm")
    missing = {level: int(np.isnan(v[a == level]).sum()) for level in levels}
    x = v[(a == levels[1]) & ~np.isnan(v)]
    y = v[(a == levels[0]) & ~np.isnan(v)]
    result = wilcoxon_rank_sum(x, y, conf_level=conf_level, labels=(levels[1], levels[0]))
    return WilcoxonRankSum(**{**result.__dict__, "n_missing": missing})


def wilcoxon_rank_sum(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    conf_level: float = 0.95,
    labels: tuple[str, str] = ("x", "y"),
) -> WilcoxonRankSum:
    """Two-sided Wilcoxon rank-sum test and Hodges–Lehmann CI, as ``wilcox.test(x, y, conf.int=TRUE)``."""
    conf_level = confidence_level(conf_level)
    xs = numeric_column(x, f"{labels[0]} values")
    ys = numeric_column(y, f"{labels[1]} values")
    if len(xs) == 0 or len(ys) == 0:
        empty = labels[0] if len(xs) == 0 else labels[1]
        raise InvalidInput(f"no values in group {empty!r}: the rank-sum test needs both groups", field="value")
    nx, ny = len(xs), len(ys)
    ranks = stats.rankdata(np.concatenate([xs, ys]))
    w = float(ranks[:nx].sum() - nx * (nx + 1) / 2)
    ties = len(np.unique(ranks)) != len(ranks)
    exact = nx < _R_EXACT_LIMIT and ny < _R_EXACT_LIMIT and not ties
    test = stats.mannwhitneyu(
        xs, ys, alternative="two-sided", method="exact" if exact else "asymptotic", use_continuity=True
    )
    notes: list[str] = []
    if exact:
        estimate, ci, achieved = _exact_shift(xs, ys, conf_level)
        if achieved != conf_level:
            notes.append(f"requested confidence level not achievable; the interval is {achieved:.4g}")
    else:
        estimate, ci = _asymptotic_shift(xs, ys, conf_level)
        achieved = conf_level
    return WilcoxonRankSum(
        x_label=labels[0],
        y_label=labels[1],
        n_x=nx,
        n_y=ny,
        w=w,
        p=float(test.pvalue),
        exact=exact,
        estimate=estimate,
        ci=ci,
        conf_level=achieved,
        notes=tuple(notes),
    )


def _exact_shift(x: np.ndarray, y: np.ndarray, conf_level: float) -> tuple[float, tuple[float, float], float]:
    """Median of the m·n differences and the exact CI from Wilcoxon quantiles (R, no ties)."""
    m, n = len(x), len(y)
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    alpha = 1 - conf_level
    qu = _qwilcox(alpha / 2, m, n)
    if qu == 0:
        qu = 1
    ql = m * n - qu
    achieved_alpha = 2 * _pwilcox(qu - 1, m, n)
    achieved = 1 - achieved_alpha if achieved_alpha - alpha > alpha / 2 else conf_level
    return float(np.median(diffs)), (float(diffs[qu - 1]), float(diffs[ql])), achieved


@lru_cache(maxsize=64)
def _wilcoxon_counts(m: int, n: int) -> tuple[int, ...]:
    """Number of arrangements giving W = 0..m·n: the Gaussian binomial [m+n choose m] in q.

    Built as Π_{i=1..m} (1 − q^(n+i)) / (1 − q^i) with exact integers (the counts exceed 2^53).
    """
    size = m * n + 1
    coeffs = np.zeros(size + m + n + 1, dtype=object)
    coeffs[:] = 0
    coeffs[0] = 1
    for i in range(1, m + 1):
        shift = n + i
        coeffs[shift:] = coeffs[shift:] - coeffs[:-shift]
        for residue in range(i):
            coeffs[residue::i] = np.cumsum(coeffs[residue::i])
    return tuple(int(c) for c in coeffs[:size])


def _qwilcox(probability: float, m: int, n: int) -> int:
    """R's ``qwilcox`` (lower tail), with its 10·DBL_EPSILON allowance, in R's floating point."""
    counts = _wilcoxon_counts(m, n)
    total = float(math.comb(m + n, n))
    cumulative = 0.0
    if probability <= 0.5:
        target = probability - 10 * _DBL_EPSILON
        for q, count in enumerate(counts):
            cumulative += float(count) / total
            if cumulative >= target:
                return q
    else:
        target = 1 - probability + 10 * _DBL_EPSILON
        for q, count in enumerate(counts):
            cumulative += float(count) / total
            if cumulative > target:
                return m * n - q
    return m * n


def _pwilcox(q: int, m: int, n: int) -> float:
    """P(W ≤ q) under the null, summing over the shorter tail as R does."""
    if q < 0:
        return 0.0
    counts = _wilcoxon_counts(m, n)
    total = float(math.comb(m + n, n))
    if q <= m * n / 2:
        return sum(float(c) / total for c in counts[: q + 1])
    return 1.0 - sum(float(c) / total for c in counts[: m * n - q])


def _asymptotic_shift(x: np.ndarray, y: np.ndarray, conf_level: float) -> tuple[float, tuple[float, float]]:
    """R's normal-approximation Hodges–Lehmann estimate and CI: roots of the standardized W(d)."""
    mumin, mumax = float(x.min() - y.max()), float(x.max() - y.min())
    alpha = 1 - conf_level

    def standardized(correct: bool) -> Callable[[float], float]:
        return lambda d: _standardized_w(x, y, d, correct)

    with_correction = standardized(True)
    w_min, w_max = with_correction(mumin), with_correction(mumax)

    def root(zq: float) -> float:
        f_lower, f_upper = w_min - zq, w_max - zq
        if f_lower <= 0:
            return mumin
        if f_upper >= 0:
            return mumax
        return _r_zeroin(lambda d: with_correction(d) - zq, mumin, mumax, f_lower, f_upper)

    lower = root(float(stats.norm.isf(alpha / 2)))
    upper = root(float(stats.norm.ppf(alpha / 2)))
    without_correction = standardized(False)
    f_lo, f_hi = without_correction(mumin), without_correction(mumax)
    if f_lo * f_hi > 0:
        raise InvalidInput("the Hodges-Lehmann estimate is undefined: all observations are tied", field="value")
    estimate = _r_zeroin(without_correction, mumin, mumax, f_lo, f_hi)
    return estimate, (lower, upper)


def _standardized_w(x: np.ndarray, y: np.ndarray, d: float, correct: bool) -> float:
    """(W(d) − E W − correction) / SD with tie correction, for x shifted by −d (R's inner ``W``)."""
    nx, ny = len(x), len(y)
    ranks = stats.rankdata(np.concatenate([x - d, y]))
    _, tie_counts = np.unique(ranks, return_counts=True)
    dz = ranks[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    correction = math.copysign(0.5, dz) if correct and dz != 0 else 0.0
    tie_term = float(np.sum(tie_counts.astype(float) ** 3 - tie_counts)) / ((nx + ny) * (nx + ny - 1))
    sigma = math.sqrt((nx * ny / 12) * ((nx + ny + 1) - tie_term))
    if sigma == 0:
        raise InvalidInput("the confidence interval is undefined: all observations are tied", field="value")
    return float((dz - correction) / sigma)


def _r_zeroin(f: Callable[[float], float], a: float, b: float, fa: float, fb: float) -> float:
    """Brent's root finder step for step as R's ``uniroot`` (C ``R_zeroin2``), tolerance 1e-4.

    The function here is a step function of d, so the root returned depends on the path the
    algorithm takes; following R's arithmetic exactly is what makes the answer equal R's.
    """
    tol = _R_ROOT_TOLERANCE
    c, fc = a, fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(_R_ROOT_MAX_ITERATIONS + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * _DBL_EPSILON * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:  # two distinct points: linear interpolation
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:  # inverse quadratic interpolation
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b
