"""ANCOVA and Welch's t-test over thousands of simulated trials at once (rows = trials).

Why: the power calculation runs each endpoint's test on every simulated trial; statsmodels and
scipy handle one data set per call. Missing values (NaN: a patient who dropped out before week 12,
or with too few samples for a slope) are left out of their trial, as a complete-case analysis
would. Results equal statsmodels' OLS and scipy's ``ttest_ind(equal_var=False)`` on single trials
(tests/unit/test_simulation_batched_tests.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from cmvtrial.errors import InvalidInput


@dataclass(frozen=True)
class GroupTestResult:
    """An estimate of the IL-2 minus control difference per trial, with its test."""

    estimate: NDArray[np.float64]
    se: NDArray[np.float64]
    statistic: NDArray[np.float64]
    df: NDArray[np.float64]
    p_value: NDArray[np.float64]
    n: NDArray[np.float64]


def _t_two_sided(statistic: NDArray[np.float64], df: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(invalid="ignore"):
        p = 2.0 * special.stdtr(np.where(df > 0, df, np.nan), -np.abs(statistic))
    return np.where(np.isfinite(p), p, 1.0)


def _rows(name: str, values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise InvalidInput(f"{name} must have shape (trials, patients)", field=name, value=array.shape)
    return array


def ancova(outcome: ArrayLike, group: ArrayLike, baseline: ArrayLike) -> GroupTestResult:
    """``outcome ~ group + baseline`` by least squares per trial; tests the group coefficient.

    R: ``summary(lm(change ~ arm + baseline))``, the ``arm`` row. ``group`` True is the IL-2 arm.
    """
    y = _rows("outcome", outcome)
    g = _rows("group", group)
    b = _rows("baseline", baseline)
    if not (y.shape == g.shape == b.shape):
        raise InvalidInput("outcome, group and baseline must have the same shape", field="shape")
    w = (np.isfinite(y) & np.isfinite(b)).astype(np.float64)
    y, b = np.where(w > 0, y, 0.0), np.where(w > 0, b, 0.0)
    n = w.sum(axis=1)
    # Centre the covariate per trial: the group coefficient is unchanged and the system better posed.
    b = np.where(w > 0, b - (w * b).sum(axis=1, keepdims=True) / np.maximum(n, 1)[:, None], 0.0)
    columns = (w, w * g, w * b)
    xtx = np.empty((y.shape[0], 3, 3))
    xty = np.empty((y.shape[0], 3))
    plain = (np.ones_like(g), g, b)
    for i in range(3):
        xty[:, i] = (columns[i] * y).sum(axis=1)
        for j in range(i, 3):
            xtx[:, i, j] = xtx[:, j, i] = (columns[i] * plain[j]).sum(axis=1)
    df = n - 3
    solvable = (df > 0) & (np.abs(np.linalg.det(xtx)) > 1e-12)
    safe = np.where(solvable[:, None, None], xtx, np.eye(3))
    inverse = np.linalg.inv(safe)
    coef = np.einsum("tij,tj->ti", inverse, np.where(solvable[:, None], xty, 0.0))
    fitted = coef[:, :1] + coef[:, 1:2] * g + coef[:, 2:3] * b
    rss = (w * (y - fitted) ** 2).sum(axis=1)
    sigma2 = np.where(df > 0, rss / np.maximum(df, 1), np.nan)
    se = np.sqrt(sigma2 * inverse[:, 1, 1])
    estimate = np.where(solvable, coef[:, 1], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = np.where(solvable & (se > 0), estimate / se, 0.0)
    return GroupTestResult(
        estimate=estimate,
        se=np.where(solvable, se, np.nan),
        statistic=statistic,
        df=df,
        p_value=np.where(solvable, _t_two_sided(statistic, df), 1.0),
        n=n,
    )


def welch(values: ArrayLike, group: ArrayLike) -> GroupTestResult:
    """Welch's two-sample t-test per trial (IL-2 minus control), NaN values left out.

    R: ``t.test(slope[arm == "IL-2"], slope[arm == "control"])`` (Welch is R's default).
    """
    x = _rows("values", values)
    g = _rows("group", group).astype(bool)
    if x.shape != g.shape:
        raise InvalidInput("values and group must have the same shape", field="shape")
    finite = np.isfinite(x)
    stats = []
    for in_group in (g, ~g):
        w = (finite & in_group).astype(np.float64)
        n = w.sum(axis=1)
        mean = (w * np.where(finite, x, 0.0)).sum(axis=1) / np.maximum(n, 1)
        squares = (w * (np.where(finite, x, 0.0) - mean[:, None]) ** 2).sum(axis=1)
        variance = np.where(n > 1, squares / np.maximum(n - 1, 1), np.nan)
        stats.append((n, mean, variance))
    (n1, m1, v1), (n0, m0, v0) = stats
    with np.errstate(invalid="ignore", divide="ignore"):
        a, c = v1 / n1, v0 / n0
        se = np.sqrt(a + c)
        statistic = (m1 - m0) / se
        df = (a + c) ** 2 / (a**2 / (n1 - 1) + c**2 / (n0 - 1))
    usable = (n1 > 1) & (n0 > 1) & (se > 0) & np.isfinite(se)
    return GroupTestResult(
        estimate=np.where(usable, m1 - m0, np.nan),
        se=np.where(usable, se, np.nan),
        statistic=np.where(usable, statistic, 0.0),
        df=np.where(usable, df, np.nan),
        p_value=np.where(usable, _t_two_sided(np.where(usable, statistic, 0.0), np.where(usable, df, 1.0)), 1.0),
        n=n1 + n0,
    )
