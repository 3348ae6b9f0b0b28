"""ANCOVA of change from baseline at week 12 on arm and baseline (plus strata), per marker and family.

The SAP (DESIGN.md §4) analyses NK count, NK%, every immune marker, C3/C4 and the cytokines the
same way: change to week 12 regressed on arm and the baseline value (and the randomization
strata), the arm coefficient as the treatment effect with its 95% CI, and Holm's adjustment across
each family of markers. The reference is R's ``lm(change ~ arm + baseline + strata)`` with
``emmeans(fit, ~ arm)`` for the adjusted means and ``p.adjust`` for the family.

statsmodels' OLS equals R's ``lm`` to 4e-13 (reference/statistics.md), provided the factor
reference levels are the same: patsy sorts "SLE" before "other", R's collation puts "other"
first (item 6). So the arm's reference level is always explicit here, and arm and strata labels
the design matrix is built here, with treatment coding on our levels, rather than by a formula. The arm effect, its test and the adjusted
means do not depend on how the strata are coded.

Missing values: a subject without the week-12 value (or the baseline, or a stratum) is left out of
that marker's model — a complete-case analysis, as ``lm``'s default ``na.omit`` — and the number
left out per arm is part of the result so the report can state it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cmvtrial.analysis.validation import (
    arm_levels,
    confidence_level,
    label_column,
    numeric_column,
    require_columns,
)
from cmvtrial.errors import InvalidInput

# Multiplicity adjustments offered, named as R's p.adjust names them.
ADJUSTMENTS: tuple[str, ...] = ("holm", "bonferroni", "hochberg", "BH")


@dataclass(frozen=True)
class AdjustedMean:
    """Least-squares (adjusted) mean of the outcome in one arm, as one row of ``emmeans(fit, ~ arm)``."""

    arm: str
    estimate: float
    se: float
    lower: float
    upper: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Ancova:
    """The arm effect (treated minus reference) on one outcome, adjusted for baseline and strata."""

    outcome: str
    reference: str
    treated: str
    estimate: float
    se: float
    t: float
    df: int
    p: float
    lower: float
    upper: float
    baseline_coef: float | None
    baseline_se: float | None
    adjusted_means: tuple[AdjustedMean, ...]
    sigma: float
    n_used: dict[str, int]
    n_missing: dict[str, int]
    adjusters: tuple[str, ...]
    conf_level: float
    p_adjusted: float | None = None
    adjustment: str | None = None
    method: str = "ANCOVA: ordinary least squares (statsmodels OLS), complete cases; adjusted means with strata weighted equally"

    @property
    def r_equivalent(self) -> str:
        rhs = " + ".join(["arm", *self.adjusters])
        return f"lm(change ~ {rhs}); emmeans(fit, ~ arm)"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["adjusted_means"] = [mean.to_dict() for mean in self.adjusted_means]
        out["adjusters"] = list(self.adjusters)
        out["r_equivalent"] = self.r_equivalent
        return out


@dataclass(frozen=True)
class AncovaFamily:
    """One ANCOVA per marker with p-values adjusted for multiplicity across the family."""

    results: tuple[Ancova, ...]
    adjustment: str
    r_equivalent: str = 'p.adjust(p, method = "holm")'

    def __getitem__(self, outcome: str) -> Ancova:
        for result in self.results:
            if result.outcome == outcome:
                return result
        raise KeyError(outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "adjustment": self.adjustment,
            "r_equivalent": self.r_equivalent,
            "results": [result.to_dict() for result in self.results],
        }


@dataclass(frozen=True)
class Marker:
    """One outcome of a family: its name, the column of the change, the column of the baseline."""

    name: str
    change: str
    baseline: str | None = None
    extra: tuple[str, ...] = field(default=())


def ancova(
    frame: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    baseline: str | None = None,
    strata: str | None = None,
    covariates: Sequence[str] = (),
    reference: str | None = None,
    conf_level: float = 0.95,
    label: str | None = None,
) -> Ancova:
    """Fit ``outcome ~ arm + baseline + strata + covariates`` by OLS on the complete cases.

    ``outcome`` is the change from baseline (the caller derives it); ``reference`` is the control
    arm's label. Refuses a missing column, non-numeric values, a single arm, an arm with no
    complete case and a model with no residual degrees of freedom.
    """
    import statsmodels.api as sm

    conf_level = confidence_level(conf_level)
    require_columns(frame, [outcome, arm, baseline, strata, *covariates])
    if len(frame) == 0:
        raise InvalidInput("the table has no rows", field=outcome)
    arm_labels = label_column(frame[arm], arm)
    levels = arm_levels(arm_labels, reference, arm)
    if len(levels) != 2:
        raise InvalidInput(f"{arm} has {len(levels)} values; the ANCOVA compares two arms", field=arm)
    y = numeric_column(frame[outcome], outcome, allow_missing=True)
    treated = (arm_labels == levels[1]).astype(float)
    # Continuous adjusters (baseline, covariates) and the stratum label, row by row.
    continuous = {
        name: numeric_column(frame[name], name, allow_missing=True)
        for name in ([baseline] if baseline is not None else []) + list(covariates)
    }
    stratum = pd.Series(frame[strata], copy=False).astype(object) if strata is not None else None
    complete = ~np.isnan(y)
    for values in continuous.values():
        complete &= ~np.isnan(values)
    if stratum is not None:
        complete &= stratum.notna().to_numpy()
    n_used = {level: int(np.sum(complete & (treated == k))) for k, level in enumerate(levels)}
    n_missing = {level: int(np.sum(~complete & (treated == k))) for k, level in enumerate(levels)}
    empty = [level for level, count in n_used.items() if count == 0]
    if empty:
        raise InvalidInput(f"arm {empty[0]!r} has no complete values of {outcome}", field=outcome)

    # The design, built explicitly so that the reference levels are ours and not a formula
    # engine's: intercept, arm (1 = treated), continuous adjusters, then one 0/1 column per stratum
    # other than the first in sorted order (treatment coding, as R's contr.treatment).
    columns = [np.ones(int(complete.sum())), treated[complete]]
    columns.extend(values[complete] for values in continuous.values())
    strata_levels = sorted(set(stratum[complete].astype(str))) if stratum is not None else []
    used_strata = stratum[complete].astype(str).to_numpy() if stratum is not None else None
    columns.extend((used_strata == level).astype(float) for level in strata_levels[1:])
    x = np.column_stack(columns)
    if x.shape[0] <= x.shape[1] or np.linalg.matrix_rank(x) < x.shape[1]:
        raise InvalidInput(
            f"too few complete values of {outcome} to estimate the model ({x.shape[0]} subjects)", field=outcome
        )
    fit = sm.OLS(y[complete], x).fit()
    estimate, se = float(fit.params[1]), float(fit.bse[1])
    df = int(fit.df_resid)
    lower, upper = (float(v) for v in fit.conf_int(alpha=1 - conf_level)[1])

    # Adjusted means: the prediction with continuous adjusters at their mean over the subjects used
    # and the strata weighted equally (emmeans' default), SE from the coefficient covariance.
    covariance = fit.cov_params()
    t_crit = stats.t.ppf(1 - (1 - conf_level) / 2, df)
    means = []
    for k, level in enumerate(levels):
        contrast = np.concatenate(
            [
                [1.0, float(k)],
                [values[complete].mean() for values in continuous.values()],
                np.full(max(len(strata_levels) - 1, 0), 1.0 / len(strata_levels) if strata_levels else 0.0),
            ]
        )
        value = float(contrast @ fit.params)
        value_se = float(np.sqrt(contrast @ covariance @ contrast))
        means.append(AdjustedMean(level, value, value_se, value - t_crit * value_se, value + t_crit * value_se))

    return Ancova(
        outcome=label or outcome,
        reference=levels[0],
        treated=levels[1],
        estimate=estimate,
        se=se,
        t=float(fit.tvalues[1]),
        df=df,
        p=float(fit.pvalues[1]),
        lower=lower,
        upper=upper,
        baseline_coef=float(fit.params[2]) if baseline is not None else None,
        baseline_se=float(fit.bse[2]) if baseline is not None else None,
        adjusted_means=tuple(means),
        sigma=float(np.sqrt(fit.scale)),
        n_used=n_used,
        n_missing=n_missing,
        adjusters=tuple(
            ([baseline] if baseline is not None else []) + ([strata] if strata is not None else []) + list(covariates)
        ),
        conf_level=conf_level,
    )


def ancova_family(
    frame: pd.DataFrame,
    markers: Sequence[Marker] | Mapping[str, tuple[str, str | None]],
    *,
    arm: str,
    strata: str | None = None,
    reference: str | None = None,
    adjust: str = "holm",
    conf_level: float = 0.95,
) -> AncovaFamily:
    """One ANCOVA per marker, then the arm p-values adjusted across the family (Holm by default).

    ``markers`` is a list of ``Marker`` or a mapping name -> (change column, baseline column).
    """
    if adjust not in ADJUSTMENTS:
        raise InvalidInput(f"unknown adjustment {adjust!r}; use one of {', '.join(ADJUSTMENTS)}", field="adjust")
    if isinstance(markers, Mapping):
        markers = [Marker(name, change, base) for name, (change, base) in markers.items()]
    if not markers:
        raise InvalidInput("the family has no markers", field="markers")
    results = [
        ancova(
            frame,
            outcome=marker.change,
            arm=arm,
            baseline=marker.baseline,
            strata=strata,
            covariates=marker.extra,
            reference=reference,
            conf_level=conf_level,
            label=marker.name,
        )
        for marker in markers
    ]
    adjusted = adjust_p_values([result.p for result in results], adjust)
    return AncovaFamily(
        results=tuple(
            replace(result, p_adjusted=p, adjustment=adjust) for result, p in zip(results, adjusted, strict=True)
        ),
        adjustment=adjust,
        r_equivalent=f'p.adjust(p, method = "{adjust}")',
    )


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> tuple[float, ...]:
    """Multiplicity-adjusted p-values, R's ``p.adjust`` formulas line for line.

    With n p-values sorted ascending p₍₁₎ ≤ … ≤ p₍ₙ₎: Holm min(1, cummax((n − i + 1) p₍ᵢ₎));
    Hochberg min(1, cummin from the top of (n − i + 1) p₍ᵢ₎); Benjamini–Hochberg min(1, cummin
    from the top of n/i · p₍ᵢ₎); Bonferroni min(1, n p). (statsmodels' ``multipletests`` gives the
    same numbers but takes ~50 ms for Holm; these are microseconds.)
    """
    if method not in ADJUSTMENTS:
        raise InvalidInput(f"unknown adjustment {method!r}; use one of {', '.join(ADJUSTMENTS)}", field="adjust")
    p = numeric_column(list(p_values), "p-value") if len(p_values) else np.zeros(0)
    if ((p < 0) | (p > 1)).any():
        raise InvalidInput("p-values must lie between 0 and 1", field="p-value")
    n = len(p)
    if n == 0:
        return ()
    if method == "bonferroni":
        return tuple(float(v) for v in np.minimum(1.0, n * p))
    adjusted = np.empty(n)
    if method == "holm":
        order = np.argsort(p, kind="stable")
        rank = np.arange(1, n + 1)
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate((n - rank + 1) * p[order]))
    else:
        order = np.argsort(-p, kind="stable")  # decreasing
        rank = np.arange(n, 0, -1)
        factor = (n + 1 - rank) if method == "hochberg" else n / rank
        adjusted[order] = np.minimum(1.0, np.minimum.accumulate(factor * p[order]))
    return tuple(float(v) for v in adjusted)
