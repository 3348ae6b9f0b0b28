"""Decline of CMV titers: linear mixed model of log10 CMV-DNA on study day by arm, as R's nlme.

The SAP (DESIGN.md §4) compares the rate at which log10 CMV-DNA falls in each arm with a linear
mixed model: fixed effects day, arm and day × arm, a random intercept and slope on day per
subject, fitted by REML. The ``day:arm`` coefficient is the difference in decline rates. The
reference is ``nlme::lme(value ~ day * arm, random = ~ day | subject, method = "REML")``.

What nlme does and the Python libraries do not (reference/statistics.md item 8) is done here:

1. the REML maximum itself, found by the vectorised fit in ``reml.py`` (statsmodels' ``MixedLM``
   reaches the same maximum on small data — a test checks it — but takes about a minute and fails
   to converge for 10,000 subjects; statsmodels' optimizer and nlme's default both stop about 1e-6
   short of the maximum on our data);
2. the fixed effects' covariance σ̂²(XᵀW⁻¹X)⁻¹ = (Σᵢ XᵢᵀVᵢ⁻¹Xᵢ)⁻¹, as nlme, where statsmodels uses
   the joint Hessian;
3. t-tests with nlme's "containment" degrees of freedom (``getFixDF``) where statsmodels uses z:
   a column that varies within some subject gets N − subjects − (number of such columns); one
   constant within every subject gets subjects − (number of such columns) − 1; the intercept the
   larger of the two.

It also gives per-visit means with t confidence intervals (R's ``t.test(x)$conf.int``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cmvtrial.analysis.reml import fit_reml
from cmvtrial.analysis.validation import (
    arm_levels,
    confidence_level,
    label_column,
    numeric_column,
    require_columns,
)
from cmvtrial.errors import InvalidInput

@dataclass(frozen=True)
class FixedEffect:
    """A fixed-effect estimate with nlme's SE, containment df, t-test and CI."""

    name: str
    estimate: float
    se: float
    df: int
    t: float
    p: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeclineModel:
    """The fitted model: fixed effects, variance components, and the per-arm decline rates."""

    reference: str
    treated: str
    fixed: tuple[FixedEffect, ...]
    reference_slope: FixedEffect
    treated_slope: FixedEffect
    sd_intercept: float
    sd_slope: float
    correlation: float
    sigma: float
    loglik: float
    n_obs: int
    n_subjects: int
    n_missing: int
    conf_level: float
    notes: tuple[str, ...] = ()
    method: str = (
        "linear mixed model, random intercept and slope, REML; fixed-effect SEs from (X'V^-1X)^-1, "
        "t-tests with nlme containment df"
    )
    r_equivalent: str = 'nlme::lme(value ~ day * arm, random = ~ day | subject, method = "REML")'

    @property
    def slope_difference(self) -> FixedEffect:
        """Difference in decline rates (treated minus reference), the ``day:arm`` coefficient."""
        return self.fixed[3]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("fixed", "reference_slope", "treated_slope")}
        out["fixed"] = [effect.to_dict() for effect in self.fixed]
        out["reference_slope"] = self.reference_slope.to_dict()
        out["treated_slope"] = self.treated_slope.to_dict()
        out["slope_difference"] = self.slope_difference.to_dict()
        out["notes"] = list(self.notes)
        return out


def fit_decline_model(
    frame: pd.DataFrame,
    *,
    value: str,
    day: str,
    arm: str,
    subject: str,
    reference: str | None = None,
    conf_level: float = 0.95,
) -> DeclineModel:
    """Fit ``value ~ day * arm`` with a random intercept and slope on ``day`` per ``subject`` (REML).

    Rows with a missing value are left out (and counted); a subject listed in two arms, a single
    arm, or too few subjects or observations to estimate the model are refused.
    """
    conf_level = confidence_level(conf_level)
    require_columns(frame, [value, day, arm, subject])
    if len(frame) == 0:
        raise InvalidInput("the table has no rows", field=value)
    y_all = numeric_column(frame[value], value, allow_missing=True)
    day_all = numeric_column(frame[day], day)
    arm_all = label_column(frame[arm], arm)
    subject_all = label_column(frame[subject], subject)
    keep = ~np.isnan(y_all)
    y, t, a, s = y_all[keep], day_all[keep], arm_all[keep], subject_all[keep]
    levels = arm_levels(a, reference, arm)
    if len(levels) != 2:
        raise InvalidInput(f"{arm} has {len(levels)} values; the model compares two arms", field=arm)
    arms_per_subject = pd.Series(a).groupby(s).nunique()
    if (arms_per_subject > 1).any():
        who = arms_per_subject.index[arms_per_subject > 1][0]
        raise InvalidInput(f"subject {who!r} appears in more than one arm", field=subject, value=who)
    treated = (a == levels[1]).astype(float)
    x = np.column_stack([np.ones_like(t), t, treated, t * treated])
    names = ("(Intercept)", day, f"{arm}{levels[1]}", f"{day}:{arm}{levels[1]}")
    z = np.column_stack([np.ones_like(t), t])
    n_subjects = len(set(s.tolist()))
    subjects_per_arm = pd.Series(s).groupby(a).nunique()
    if subjects_per_arm.min() < 2 or len(y) <= n_subjects + x.shape[1]:
        raise InvalidInput(
            "too few subjects or observations for a random intercept and slope model "
            f"({len(y)} observations, {n_subjects} subjects)",
            field=value,
        )
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise InvalidInput(f"{day} does not vary: the decline rate cannot be estimated", field=day)

    # Day is rescaled to unit SD for the fit (the model is invariant to it; the optimizer is
    # better conditioned), and the estimates are scaled back.
    scale = float(np.std(t)) or 1.0
    x_scale = np.array([1.0, 1 / scale, 1.0, 1 / scale])
    z_scale = np.array([1.0, 1 / scale])
    fit = fit_reml(y, x * x_scale, z * z_scale, s)
    fe = fit.beta * x_scale
    cov_fe = fit.beta_covariance * np.outer(x_scale, x_scale)
    cov_re = fit.random_covariance * np.outer(z_scale, z_scale)
    notes = []
    if not fit.converged:
        notes.append("the REML optimisation did not converge; estimates are uncertain")
    if fit.at_boundary:
        notes.append("a random-effect variance is estimated at zero (boundary of the parameter space)")
    df = _containment_df(x, s)
    t_crit = {d: stats.t.ppf(1 - (1 - conf_level) / 2, d) for d in set(df)}

    def effect(name: str, contrast: np.ndarray, dof: int) -> FixedEffect:
        estimate = float(contrast @ fe)
        se = float(math.sqrt(contrast @ cov_fe @ contrast))
        t_value = estimate / se
        half = t_crit.get(dof, stats.t.ppf(1 - (1 - conf_level) / 2, dof)) * se
        return FixedEffect(
            name=name,
            estimate=estimate,
            se=se,
            df=int(dof),
            t=t_value,
            p=float(2 * stats.t.sf(abs(t_value), dof)),
            lower=estimate - half,
            upper=estimate + half,
        )

    identity = np.eye(4)
    fixed = tuple(effect(name, identity[i], df[i]) for i, name in enumerate(names))
    return DeclineModel(
        reference=levels[0],
        treated=levels[1],
        fixed=fixed,
        reference_slope=effect(f"{day} ({levels[0]})", identity[1], df[1]),
        treated_slope=effect(f"{day} ({levels[1]})", identity[1] + identity[3], df[3]),
        sd_intercept=math.sqrt(cov_re[0, 0]),
        sd_slope=math.sqrt(cov_re[1, 1]),
        correlation=float(cov_re[0, 1] / math.sqrt(cov_re[0, 0] * cov_re[1, 1])),
        sigma=math.sqrt(fit.sigma2),
        # Rescaling X by C shifts the REML log-likelihood by -log|C|; undo it.
        loglik=fit.loglik + float(np.sum(np.log(x_scale))),
        n_obs=len(y),
        n_subjects=n_subjects,
        n_missing=int((~keep).sum()),
        conf_level=conf_level,
        notes=tuple(notes),
    )


def _containment_df(x: np.ndarray, groups: np.ndarray) -> list[int]:
    """Degrees of freedom per fixed-effect column by nlme's ``getFixDF`` for one grouping level."""
    n, p = x.shape
    n_groups = len(set(groups.tolist()))
    frame = pd.DataFrame(x)
    varies_within = (frame.groupby(groups).nunique() > 1).any().to_numpy()
    first = x[0]
    scale = np.where(first == 0, 1.0, first)
    is_intercept = np.all(np.abs(np.where(first == 0, x, x / scale - 1)) < math.sqrt(np.finfo(float).eps), axis=0)
    between = n_groups - int(np.sum(~varies_within & ~is_intercept))
    within = n - n_groups - int(np.sum(varies_within & ~is_intercept))
    if is_intercept.any():
        between -= 1
    else:
        within += 1
    return [max(between, within) if is_intercept[j] else (within if varies_within[j] else between) for j in range(p)]


@dataclass(frozen=True)
class VisitMean:
    """Mean of a value at one visit in one arm with its t-based CI (``None`` with one value)."""

    arm: str
    visit: Any
    n: int
    mean: float
    sd: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def visit_means(
    values: Sequence[float] | np.ndarray,
    visit: Sequence[Any] | np.ndarray,
    arm: Sequence[Any] | np.ndarray,
    *,
    conf_level: float = 0.95,
) -> tuple[VisitMean, ...]:
    """Per arm and visit: n, mean, SD and the t CI of the mean (R: ``t.test(x)$conf.int``).

    Missing values are left out; arm and visit order is sorted.
    """
    conf_level = confidence_level(conf_level)
    v = numeric_column(values, "value", allow_missing=True)
    a = label_column(arm, "arm")
    visits = pd.Series(visit, copy=False)
    if visits.isna().any():
        raise InvalidInput("visit is missing in some rows", field="visit")
    frame = pd.DataFrame({"arm": a, "visit": visits.to_numpy(), "value": v}).dropna(subset=["value"])
    rows: list[VisitMean] = []
    for (arm_value, visit_value), group in frame.groupby(["arm", "visit"], sort=True):
        data = group["value"].to_numpy()
        mean = float(data.mean())
        if len(data) > 1:
            sd = float(data.std(ddof=1))
            half = stats.t.ppf(1 - (1 - conf_level) / 2, len(data) - 1) * sd / math.sqrt(len(data))
            rows.append(VisitMean(str(arm_value), visit_value, len(data), mean, sd, mean - half, mean + half))
        else:
            rows.append(VisitMean(str(arm_value), visit_value, 1, mean, None, None, None))
    return tuple(rows)

