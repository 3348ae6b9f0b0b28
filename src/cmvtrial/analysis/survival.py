"""Kaplan–Meier curves, median and survival at chosen days, restricted mean: as R's survival.

The duration of CMV viremia (first positive to first negative CMV-DNA, censored at the last
assessment) is summarised per arm by a Kaplan–Meier curve, its median with a 95% CI, the
probability of still being viremic at protocol days, and a restricted mean as a sensitivity
analysis (DESIGN.md §4); the log-rank test is in ``logrank.py``, the Cox model in ``cox.py``. R's survival package is the reference, and lifelines differs from it exactly where
this module does its own arithmetic (reference/statistics.md):

* the CI transform: R's default is ``log``, lifelines offers only ``log-log`` (item 1);
* the median when S = 0.5 over an interval: R takes the midpoint, lifelines the first time (item 2);
* the restricted-mean standard error: lifelines' variance is Var(min(T, τ)), not the estimator's (item 3).

The Kaplan–Meier product itself is a few lines once the risk table exists, and the risk table is
needed for Greenwood's variance anyway, so it is computed here too; a test checks it equals
lifelines' ``KaplanMeierFitter``, and fixtures check every number against R.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats

from cmvtrial.analysis.validation import (
    arm_levels,
    confidence_level,
    event_column,
    finite_or_none,
    label_column,
    numeric_column,
    same_length,
    times_column,
)
from cmvtrial.errors import InvalidInput

ConfType = Literal["log", "log-log", "plain"]
CONF_TYPES: tuple[str, ...] = ("log", "log-log", "plain")

# R's numerical tolerance for "S equals 0.5" in the median rule: sqrt(.Machine$double.eps)
# (survival:::survmean). A property of floating point, not of the trial.
_R_TOLERANCE = math.sqrt(np.finfo(float).eps)


@dataclass(frozen=True)
class MedianSurvival:
    """Median time with its CI; ``None`` where the curve (or its CI band) never reaches 0.5."""

    estimate: float | None
    lower: float | None
    upper: float | None
    conf_level: float

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.estimate, "median_ci": [self.lower, self.upper], "conf_level": self.conf_level}


@dataclass(frozen=True)
class SurvivalAt:
    """S(t) at one requested time, as one row of R's ``summary(fit, times = t)``.

    ``n_event`` counts events since the previous requested time; ``std_err`` is the SE of S(t).
    Times after the last observation are not estimable (R drops them): every value is ``None``.
    """

    time: float
    n_risk: int
    n_event: int | None
    surv: float | None
    std_err: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RestrictedMean:
    """Restricted mean survival time up to ``tau`` with R's standard error."""

    tau: float
    estimate: float
    std_err: float
    method: str = "area under the Kaplan-Meier curve up to tau; Greenwood-type SE as R's survmean"
    r_equivalent: str = "print(survfit(Surv(time, event) ~ 1), rmean = tau)"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class KaplanMeier:
    """One Kaplan–Meier curve at every distinct observed time, as R's ``survfit`` object.

    ``std_err`` is R's ``$std.err``: the standard error of the cumulative hazard (Greenwood),
    i.e. of log S(t); ``summary(fit)`` multiplies it by S(t).
    """

    label: str
    conf_type: str
    conf_level: float
    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    surv: np.ndarray
    std_err: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    median: MedianSurvival
    method: str = "Kaplan-Meier with Greenwood variance"

    @property
    def n(self) -> int:
        return int(self.n_event.sum() + self.n_censor.sum())

    @property
    def events(self) -> int:
        return int(self.n_event.sum())

    @property
    def r_equivalent(self) -> str:
        return f'survfit(Surv(time, event) ~ 1, conf.type = "{self.conf_type}", conf.int = {self.conf_level})'

    def survival_at(self, times: Sequence[float]) -> tuple[SurvivalAt, ...]:
        """S(t) with SE, CI and number at risk at each time, sorted, as ``summary(fit, times=)``."""
        requested = np.sort(numeric_column(list(times), "times"))
        if (requested < 0).any():
            raise InvalidInput("survival times asked for must not be negative", field="times")
        last = self.time[-1]
        cumulative_events = np.concatenate([[0], np.cumsum(self.n_event)])
        rows: list[SurvivalAt] = []
        events_before = 0
        for t in requested:
            first_at_or_after = int(np.searchsorted(self.time, t, side="left"))
            n_risk = int(self.n_risk[first_at_or_after]) if first_at_or_after < len(self.time) else 0
            if t > last:
                rows.append(SurvivalAt(float(t), n_risk, None, None, None, None, None))
                continue
            index = int(np.searchsorted(self.time, t, side="right"))  # rows with time <= t
            events_to_t = int(cumulative_events[index])
            if index == 0:  # before the first observed time: R's survfit0 row at time 0
                surv, se_log, lower, upper = 1.0, 0.0, 1.0, 1.0
            else:
                i = index - 1
                surv, se_log = self.surv[i], self.std_err[i]
                lower, upper = self.lower[i], self.upper[i]
            rows.append(
                SurvivalAt(
                    time=float(t),
                    n_risk=n_risk,
                    n_event=events_to_t - events_before,
                    surv=float(surv),
                    std_err=finite_or_none(se_log * surv) if surv > 0 else None,
                    lower=finite_or_none(lower),
                    upper=finite_or_none(upper),
                )
            )
            events_before = events_to_t
        return tuple(rows)

    def restricted_mean(self, tau: float) -> RestrictedMean:
        """Area under S(t) from 0 to ``tau`` and its SE, as ``print(fit, rmean = tau)``.

        R (survival:::survmean): with A_j the area under the curve from event time t_j to τ and
        h_j = d_j / (n_j (n_j − d_j)), Var = Σ_{t_j < τ} A_j² h_j. The curve is carried flat past
        its last time when τ lies beyond it, as R does.
        """
        tau = float(tau)
        if not math.isfinite(tau) or tau <= 0:
            raise InvalidInput(f"the restriction time tau must be positive, not {tau:g}", field="tau")
        at_risk_after = self.n_risk - self.n_event
        with np.errstate(divide="ignore", invalid="ignore"):
            hazard_var = np.where(at_risk_after == 0, 0.0, self.n_event / (self.n_risk * at_risk_after))
        keep = self.time <= tau
        times = np.concatenate([self.time[keep], [tau]])
        surv = np.concatenate([self.surv[keep], self.surv[keep][-1:] if keep.any() else [1.0]])
        hh = np.concatenate([hazard_var[keep], [0.0]])
        widths = np.diff(np.concatenate([[0.0], times]))
        rectangles = widths * np.concatenate([[1.0], surv[:-1]])
        areas_after = np.cumsum(rectangles[1:][::-1])
        variance = float(np.sum(areas_after**2 * hh[::-1][1:]))
        return RestrictedMean(tau=tau, estimate=float(rectangles.sum()), std_err=math.sqrt(variance))

    def to_dict(self, *, curve: bool = False) -> dict[str, Any]:
        """Summary numbers (and the whole curve if asked), ``None`` for not reached / not estimable."""
        out: dict[str, Any] = {
            "label": self.label,
            "n": self.n,
            "events": self.events,
            **self.median.to_dict(),
            "conf_type": self.conf_type,
            "method": self.method,
            "r_equivalent": self.r_equivalent,
        }
        if curve:
            out["curve"] = {
                name: [finite_or_none(v) for v in getattr(self, name)]
                for name in ("time", "n_risk", "n_event", "n_censor", "surv", "std_err", "lower", "upper")
            }
        return out


def kaplan_meier(
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    *,
    conf_type: str = "log",
    conf_level: float = 0.95,
    label: str = "all",
) -> KaplanMeier:
    """The Kaplan–Meier curve of one group with Greenwood SE, R's CI band and R's median rule."""
    if conf_type not in CONF_TYPES:
        raise InvalidInput(
            f"unknown confidence-interval type {conf_type!r}; use one of {', '.join(CONF_TYPES)}",
            field="conf_type",
        )
    conf_level = confidence_level(conf_level)
    same_length(time=time, event=event)
    t = times_column(time)
    e = event_column(event)
    order = np.argsort(t, kind="stable")
    t, e = t[order], e[order]
    unique_times, first_index = np.unique(t, return_index=True)
    n_total = len(t)
    n_risk = n_total - first_index
    n_event = np.add.reduceat(e, first_index)
    n_censor = np.add.reduceat(1 - e, first_index)
    surv = np.cumprod(1.0 - n_event / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        increments = np.where(n_event == 0, 0.0, n_event / (n_risk * (n_risk - n_event)))
    std_err = np.sqrt(np.cumsum(increments))
    lower, upper = _confidence_band(surv, std_err, conf_type, conf_level)
    median = MedianSurvival(
        estimate=_r_median(unique_times, surv),
        lower=_r_median(unique_times, lower),
        upper=_r_median(unique_times, upper),
        conf_level=conf_level,
    )
    return KaplanMeier(
        label=label,
        conf_type=conf_type,
        conf_level=conf_level,
        time=unique_times.astype(float),
        n_risk=n_risk.astype(np.int64),
        n_event=n_event.astype(np.int64),
        n_censor=n_censor.astype(np.int64),
        surv=surv,
        std_err=std_err,
        lower=lower,
        upper=upper,
        median=median,
    )


def kaplan_meier_by_group(
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    group: Sequence[Any] | np.ndarray,
    *,
    reference: str | None = None,
    conf_type: str = "log",
    conf_level: float = 0.95,
) -> dict[str, KaplanMeier]:
    """One curve per group (arm), reference group first; as ``survfit(Surv(time, event) ~ arm)``."""
    same_length(time=time, event=event, group=group)
    t = times_column(time)
    e = event_column(event)
    g = label_column(group, "arm")
    levels = arm_levels(g, reference)
    return {
        level: kaplan_meier(t[g == level], e[g == level], conf_type=conf_type, conf_level=conf_level, label=level)
        for level in levels
    }


def _confidence_band(
    surv: np.ndarray, std_err: np.ndarray, conf_type: str, conf_level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise CI of S(t) as survival:::survfit_confint (log-scale SE, upper limit capped at 1)."""
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "plain":
            half = std_err * surv * z
            # np.maximum keeps NaN (S = 0 with infinite SE) as R's pmax does.
            return np.maximum(surv - half, 0.0), np.minimum(surv + half, 1.0)
        if conf_type == "log":
            positive = np.where(surv == 0, np.nan, surv)
            half = z * std_err
            return np.exp(np.log(positive) - half), np.minimum(np.exp(np.log(positive) + half), 1.0)
        interior = np.where((surv == 0) | (surv == 1), np.nan, surv)
        half = z * std_err / np.log(interior)
        loglog = np.log(-np.log(interior))
        return np.exp(-np.exp(loglog - half)), np.exp(-np.exp(loglog + half))


def _r_median(time: np.ndarray, curve: np.ndarray) -> float | None:
    """First time the curve is at or below 0.5; the midpoint to the next drop when it sits at 0.5.

    This is R's rule in ``print.survfit`` (survival:::survmean, ``minmin``), applied alike to the
    estimate and to the two CI bands: for S = 0.5 exactly over [t_i, t_k) the median is
    (t_i + t_k) / 2 (the veteran data give 52.5); a curve that never falls to 0.5 has no median.
    """
    keep = ~np.isnan(curve) & (curve < 0.5 + _R_TOLERANCE)
    if not keep.any():
        return None
    x, y = time[keep], curve[keep]
    if abs(y[0] - 0.5) < _R_TOLERANCE and (y < y[0]).any():
        return float((x[0] + x[np.flatnonzero(y < y[0])[0]]) / 2)
    return float(x[0])


@dataclass(frozen=True)
class RmstComparison:
    """Restricted mean survival time per arm, their difference and ratio with CIs and p-values."""

    tau: float
    treated: str
    reference: str
    treated_rmst: RestrictedMean
    reference_rmst: RestrictedMean
    difference: float
    difference_se: float
    difference_ci: tuple[float, float]
    difference_p: float
    ratio: float
    ratio_ci: tuple[float, float]
    ratio_p: float
    conf_level: float
    method: str = (
        "difference: normal approximation with Var = se1^2 + se0^2 (independent arms); "
        "ratio: delta method on log(rmst1 / rmst0); per-arm SE as R's survmean"
    )
    r_equivalent: str = "survRM2::rmst2(time, event, arm, tau) (difference and ratio rows)"

    def to_dict(self) -> dict[str, Any]:
        out = {key: finite_or_none(value) if isinstance(value, float) else value for key, value in self.__dict__.items()}
        out["treated_rmst"] = self.treated_rmst.to_dict()
        out["reference_rmst"] = self.reference_rmst.to_dict()
        out["difference_ci"] = [finite_or_none(v) for v in self.difference_ci]
        out["ratio_ci"] = [finite_or_none(v) for v in self.ratio_ci]
        return out


def rmst_comparison(treated: KaplanMeier, reference: KaplanMeier, tau: float, conf_level: float = 0.95) -> RmstComparison:
    """Compare the restricted mean of two arms up to ``tau`` (treated minus / over reference).

    R's survival gives each arm's RMST and SE (``print(fit, rmean = tau)``) but no comparison;
    survRM2 (CRAN only, not in Debian) does it with these same formulas:
    diff = μ₁ − μ₀, SE = √(se₁² + se₀²); log ratio = log μ₁ − log μ₀, SE = √(se₁²/μ₁² + se₀²/μ₀²);
    Wald CIs and two-sided normal p-values. The fixture computes them in R from survmean's values.
    """
    conf_level = confidence_level(conf_level)
    r1, r0 = treated.restricted_mean(tau), reference.restricted_mean(tau)
    z = stats.norm.ppf(1 - (1 - conf_level) / 2)
    difference = r1.estimate - r0.estimate
    difference_se = math.hypot(r1.std_err, r0.std_err)
    if r1.estimate > 0 and r0.estimate > 0:
        log_ratio = math.log(r1.estimate / r0.estimate)
        log_ratio_se = math.hypot(r1.std_err / r1.estimate, r0.std_err / r0.estimate)
    else:  # every subject of an arm had the event at time 0: the ratio is undefined
        log_ratio = log_ratio_se = math.nan
    return RmstComparison(
        tau=float(tau),
        treated=treated.label,
        reference=reference.label,
        treated_rmst=r1,
        reference_rmst=r0,
        difference=difference,
        difference_se=difference_se,
        difference_ci=(difference - z * difference_se, difference + z * difference_se),
        difference_p=_two_sided_normal_p(difference, difference_se),
        ratio=math.exp(log_ratio),
        ratio_ci=(math.exp(log_ratio - z * log_ratio_se), math.exp(log_ratio + z * log_ratio_se)),
        ratio_p=_two_sided_normal_p(log_ratio, log_ratio_se),
        conf_level=conf_level,
    )


def _two_sided_normal_p(estimate: float, std_err: float) -> float:
    if math.isnan(std_err):
        return math.nan
    if std_err == 0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * stats.norm.sf(abs(estimate / std_err)))
