"""Cox proportional-hazards regression, its three tests and the proportional-hazards check, as R.

The SAP's effect measure for the duration of CMV viremia is the hazard ratio of clearance, IL-2
versus control, with a 95% CI, stratified by the randomization strata (DESIGN.md §4). R's
``coxph`` is the reference. What the libraries give and what is added here
(reference/statistics.md items 4 and 5):

* Efron ties (R's default) are fitted by lifelines' ``CoxPHFitter`` with its convergence
  criteria tightened to exhaustion; with its defaults it stops up to 2.5e-3 (relative) away from R.
* Breslow ties, which lifelines lacks, are fitted here by Newton–Raphson on the partial likelihood.
* The score (log-rank) test, which lifelines lacks, is U(0)ᵀ I(0)⁻¹ U(0) computed here; Wald and
  likelihood-ratio tests come from the fit.
* The proportional-hazards test is R survival 3.x's ``cox.zph`` (transform "km"): the score test
  of adding β·g(t) terms, g = 1 − KM(t−) of all data, centred over the events — computed from the
  same risk-set sums (lifelines' ``proportional_hazard_test`` uses a different method).

* Data that cannot give an estimate give a model that says so instead of a warning or a wrong SE:
  a covariate constant among the subjects at risk at every event time of every stratum (e.g. each
  site's few subjects all in one arm) has a NaN coefficient, as R's ``NA``, the others fitted
  without it; a likelihood without a maximum (separation, e.g. no events in one arm) has every
  coefficient NaN. Both with a note saying why; the report prints ``None``/"–".

One function (:mod:`cmvtrial.analysis.partial_likelihood`) computes the partial log-likelihood,
score vector and information matrix for Efron or Breslow ties and any strata; everything but the
Efron point estimate is built on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from cmvtrial.analysis.partial_likelihood import (
    RiskSets,
    centred_at_event_times,
    flat_at_event_times,
    monotone_direction,
    newton_raphson,
)
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

TIES: tuple[str, ...] = ("efron", "breslow")


@dataclass(frozen=True)
class ChiSquareTest:
    """A chi-square statistic with its df and p; NaN (``None`` in JSON) when not estimable."""

    statistic: float
    df: int
    p: float

    def to_dict(self) -> dict[str, Any]:
        return {"statistic": finite_or_none(self.statistic), "df": self.df, "p": finite_or_none(self.p)}


def _chi_square(statistic: float, df: int) -> ChiSquareTest:
    return ChiSquareTest(statistic=float(statistic), df=int(df), p=float(stats.chi2.sf(statistic, df)))


@dataclass(frozen=True)
class CoxTerm:
    """One coefficient: log hazard ratio, SE, hazard ratio with CI, Wald z and p."""

    name: str
    coef: float
    se: float
    hr: float
    hr_lower: float
    hr_upper: float
    z: float
    p: float

    def to_dict(self) -> dict[str, Any]:
        return {key: finite_or_none(value) if isinstance(value, float) else value for key, value in self.__dict__.items()}


@dataclass(frozen=True)
class ProportionalHazardsTest:
    """cox.zph: one chi-square per covariate and a global one; small p means non-proportional."""

    terms: tuple[tuple[str, ChiSquareTest], ...]
    global_test: ChiSquareTest
    transform: str = "km"
    method: str = "score test for beta(t) = beta + gamma * g(t), g = 1 - KM(t-) centred (Grambsch-Therneau)"
    r_equivalent: str = 'cox.zph(fit, transform = "km")  # survival >= 3.0'

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": {name: test.to_dict() for name, test in self.terms},
            "global": self.global_test.to_dict(),
            "transform": self.transform,
            "method": self.method,
            "r_equivalent": self.r_equivalent,
        }


@dataclass(frozen=True)
class CoxModel:
    """A fitted Cox model: coefficients, the Wald, likelihood-ratio and score tests, the PH check."""

    terms: tuple[CoxTerm, ...]
    ties: str
    strata: tuple[str, ...]
    n: int
    events: int
    loglik_null: float
    loglik: float
    wald: ChiSquareTest
    likelihood_ratio: ChiSquareTest
    score: ChiSquareTest
    proportional_hazards: ProportionalHazardsTest
    conf_level: float
    notes: tuple[str, ...] = field(default=())

    @property
    def method(self) -> str:
        fitter = "lifelines CoxPHFitter, converged to exhaustion" if self.ties == "efron" else "Newton-Raphson"
        kind = "stratified " if self.strata else ""
        return f"{kind}Cox proportional hazards, {self.ties} ties ({fitter})"

    @property
    def r_equivalent(self) -> str:
        rhs = " + ".join(term.name for term in self.terms) + (" + strata(strata)" if self.strata else "")
        return f'coxph(Surv(time, event) ~ {rhs}, ties = "{self.ties}")'

    def term(self, name: str) -> CoxTerm:
        for term in self.terms:
            if term.name == name:
                return term
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "terms": [term.to_dict() for term in self.terms],
            "ties": self.ties,
            "strata": list(self.strata),
            "n": self.n,
            "events": self.events,
            "loglik": [self.loglik_null, self.loglik],
            "wald": self.wald.to_dict(),
            "likelihood_ratio": self.likelihood_ratio.to_dict(),
            "score": self.score.to_dict(),
            "proportional_hazards": self.proportional_hazards.to_dict(),
            "conf_level": self.conf_level,
            "notes": list(self.notes),
            "method": self.method,
            "r_equivalent": self.r_equivalent,
        }


def cox_hazard_ratio(
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    arm: Sequence[Any] | np.ndarray,
    *,
    reference: str | None = None,
    strata: Sequence[Any] | np.ndarray | None = None,
    ties: str = "efron",
    conf_level: float = 0.95,
) -> CoxModel:
    """Hazard ratio of the other arm versus ``reference`` (two arms), stratified if ``strata`` is given.

    The single term is named after the arm, like R's ``arm<level>`` coefficient of a factor whose
    reference level was set with ``relevel``.
    """
    same_length(time=time, event=event, arm=arm, strata=strata)
    a = label_column(arm, "arm")
    levels = arm_levels(a, reference)
    if len(levels) != 2:
        raise InvalidInput(
            f"a hazard ratio compares two arms; arm has {len(levels)} values ({', '.join(levels)})", field="arm"
        )
    covariate = (a == levels[1]).astype(float)
    return cox_regression(
        time, event, {f"arm{levels[1]}": covariate}, strata=strata, ties=ties, conf_level=conf_level
    )


def cox_regression(
    time: Sequence[float] | np.ndarray,
    event: Sequence[int] | np.ndarray,
    covariates: Mapping[str, Sequence[float] | np.ndarray],
    *,
    strata: Sequence[Any] | np.ndarray | None = None,
    ties: str = "efron",
    conf_level: float = 0.95,
) -> CoxModel:
    """Fit a Cox model on numeric covariates (code factors as 0/1 columns before calling)."""
    if ties not in TIES:
        raise InvalidInput(f"unknown ties method {ties!r}; use one of {', '.join(TIES)}", field="ties")
    if not covariates:
        raise InvalidInput("a Cox model needs at least one covariate", field="covariates")
    conf_level = confidence_level(conf_level)
    same_length(time=time, event=event, strata=strata, **dict(covariates))
    t = times_column(time)
    e = event_column(event)
    names = list(covariates)
    x = np.column_stack([numeric_column(covariates[name], name) for name in names])
    s = label_column(strata, "strata") if strata is not None else np.full(len(t), "all", dtype=object)
    if e.sum() == 0:
        raise InvalidInput("no events: a Cox model cannot be fitted", field="event")
    constant = [name for name, column in zip(names, x.T, strict=True) if np.all(column == column[0])]
    if constant:
        raise InvalidInput(f"covariate {constant[0]!r} takes a single value", field=constant[0])
    if np.linalg.matrix_rank(x - x.mean(axis=0)) < x.shape[1]:
        raise InvalidInput(f"covariates {', '.join(names)} are collinear: a Cox model cannot be fitted", field=names[0])
    flat = flat_at_event_times(t, e, x, s)
    if flat.any():  # not estimable: the partial likelihood does not depend on these coefficients
        kept = {name: covariates[name] for name, is_flat in zip(names, flat, strict=True) if not is_flat}
        base = (cox_regression(time, event, kept, strata=strata, ties=ties, conf_level=conf_level) if kept
                else _null_model(t, e, s, strata is not None, ties, conf_level))
        return _with_not_estimable(base, names)
    if np.linalg.matrix_rank(centred_at_event_times(t, e, x, s)) < x.shape[1]:
        raise InvalidInput(f"covariates {', '.join(names)} are collinear within the strata among the subjects at "
                           "risk at an event: a Cox model cannot be fitted", field=names[0])

    data = RiskSets(t, e, x, s)
    direction = monotone_direction(t, e, x, s)
    if direction is not None:  # no maximum: the estimate is infinite
        return _separated(data, names, direction, ties, s if strata is not None else None, conf_level)
    notes: list[str] = []
    if ties == "efron":
        beta, covariance, lifelines_notes = _fit_efron_with_lifelines(t, e, x, s if strata is not None else None)
        notes.extend(lifelines_notes)
    else:
        beta = newton_raphson(data, ties, notes)
        covariance = np.linalg.inv(data.derivatives(beta, ties).information)
    at_null = data.derivatives(np.zeros(len(names)), ties)
    at_fit = data.derivatives(beta, ties)

    se = np.sqrt(np.diag(covariance))
    z_crit = stats.norm.ppf(1 - (1 - conf_level) / 2)
    terms = tuple(
        CoxTerm(
            name=name,
            coef=float(b),
            se=float(sd),
            hr=_exp(b),
            hr_lower=_exp(b - z_crit * sd),
            hr_upper=_exp(b + z_crit * sd),
            z=float(b / sd),
            p=float(2 * stats.norm.sf(abs(b / sd))),
        )
        for name, b, sd in zip(names, beta, se, strict=True)
    )
    p = len(names)
    score = float(at_null.score @ np.linalg.solve(at_null.information, at_null.score))
    return CoxModel(
        terms=terms,
        ties=ties,
        strata=tuple(sorted(set(s.tolist()))) if strata is not None else (),
        n=len(t),
        events=int(e.sum()),
        loglik_null=at_null.loglik,
        loglik=at_fit.loglik,
        wald=_chi_square(float(beta @ np.linalg.solve(covariance, beta)), p),
        likelihood_ratio=_chi_square(2 * (at_fit.loglik - at_null.loglik), p),
        score=_chi_square(score, p),
        proportional_hazards=_zph_test(data, beta, ties, names, t, e),
        conf_level=conf_level,
        notes=tuple(notes),
    )


def _separated(
    data: RiskSets, names: list[str], direction: np.ndarray, ties: str, strata: np.ndarray | None, conf_level: float
) -> CoxModel:
    """The model of a monotone likelihood: every coefficient NaN (not estimable: its estimate is
    infinite) with a note naming the direction, the Wald, likelihood-ratio and proportional-hazards
    tests NaN (they need a maximum); the score test, taken at β = 0, stands."""
    at_null = data.derivatives(np.zeros(len(names)), ties)
    nan = math.nan
    p = len(names)
    if p == 1:
        limit = "infinity" if direction[0] > 0 else "zero"
        what = f"the hazard ratio of {names[0]} tends to {limit}"
    else:
        what = "the coefficients of " + ", ".join(names) + " diverge"
    return CoxModel(
        terms=tuple(CoxTerm(name, nan, nan, nan, nan, nan, nan, nan) for name in names), ties=ties,
        strata=tuple(sorted(set(strata.tolist()))) if strata is not None else (), n=len(data.x),
        events=int(sum(group[1].sum() for group in data.groups)), loglik_null=at_null.loglik, loglik=nan,
        wald=ChiSquareTest(nan, p, nan), likelihood_ratio=ChiSquareTest(nan, p, nan),
        score=_chi_square(float(at_null.score @ np.linalg.solve(at_null.information, at_null.score)), p),
        proportional_hazards=ProportionalHazardsTest(
            terms=tuple((name, ChiSquareTest(nan, 1, nan)) for name in names), global_test=ChiSquareTest(nan, p, nan)),
        conf_level=conf_level,
        notes=(f"the partial likelihood has no maximum: {what} (monotone likelihood, e.g. one arm has no events, "
               "or each event of one arm happens when no subject of the other is still at risk in its stratum); "
               'not estimable (R: "coefficient may be infinite")',),
    )


def _null_model(
    t: np.ndarray, e: np.ndarray, s: np.ndarray, stratified: bool, ties: str, conf_level: float
) -> CoxModel:
    """The model with no estimable coefficient: the likelihood-ratio and score tests are 0 on 0 df
    (p = 1) and the Wald test is NA, as R prints them; ``cox.zph`` (an error in R) is NaN."""
    loglik = RiskSets(t, e, np.zeros((len(t), 1)), s).derivatives(np.zeros(1), ties).loglik
    missing = ChiSquareTest(math.nan, 0, math.nan)
    return CoxModel(
        terms=(), ties=ties, strata=tuple(sorted(set(s.tolist()))) if stratified else (), n=len(t),
        events=int(e.sum()), loglik_null=loglik, loglik=loglik, wald=missing,
        likelihood_ratio=ChiSquareTest(0.0, 0, 1.0), score=ChiSquareTest(0.0, 0, 1.0),
        proportional_hazards=ProportionalHazardsTest(terms=(), global_test=missing), conf_level=conf_level,
    )


def _with_not_estimable(base: CoxModel, names: list[str]) -> CoxModel:
    """``base`` (fitted without the flat covariates) with those back as NaN terms and a note.

    R's answer when a covariate is constant among the subjects at risk at every event time of every
    stratum (small strata that randomization happened to fill from one arm, or a single arm left at
    risk at the event times): its coefficient is NA ("X matrix deemed to be singular"), the others
    are fitted without it and the tests count only those. Fitting it anyway gives a zero
    information matrix: a NaN or negative variance, or lifelines failing to invert it.
    """
    fitted = {term.name: term for term in base.terms}
    zph = dict(base.proportional_hazards.terms)
    nan = math.nan
    flat = [name for name in names if name not in fitted]
    one = len(flat) == 1
    note = (f"{', '.join(flat)} take{'s' if one else ''} one value among the subjects at risk at every event time"
            f"{' within each stratum' if base.strata else ''} (e.g. each stratum's subjects all in one arm): "
            f"{'its coefficient is' if one else 'their coefficients are'} not estimable (R: NA)")
    return replace(
        base,
        terms=tuple(fitted.get(name, CoxTerm(name, nan, nan, nan, nan, nan, nan, nan)) for name in names),
        proportional_hazards=replace(base.proportional_hazards, terms=tuple(
            (name, zph.get(name, ChiSquareTest(nan, 0, nan))) for name in names)),
        notes=(*base.notes, note),
    )


def _exp(value: float) -> float:
    """exp() that gives infinity for a separated model's huge coefficient instead of raising."""
    return math.exp(value) if value < 709 else math.inf


def _fit_efron_with_lifelines(
    t: np.ndarray, e: np.ndarray, x: np.ndarray, strata: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Efron fit by lifelines, with ``precision = r_precision = 1e-20`` so it runs to exhaustion."""
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    columns = [f"x{i}" for i in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=columns)
    frame["_time"], frame["_event"] = t, e
    if strata is not None:
        frame["_stratum"] = strata.astype(str)
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fitter = CoxPHFitter().fit(
                frame,
                duration_col="_time",
                event_col="_event",
                strata=["_stratum"] if strata is not None else None,
                fit_options={"precision": 1e-20, "r_precision": 1e-20, "max_steps": 500},
            )
        except ConvergenceError as error:
            raise InvalidInput(f"the Cox model cannot be fitted: {str(error).splitlines()[0]}") from None
    for warning in caught:
        notes.append(f"lifelines: {str(warning.message).strip().splitlines()[0]}")
    beta = fitter.params_.loc[columns].to_numpy(dtype=float)
    covariance = fitter.variance_matrix_.loc[columns, columns].to_numpy(dtype=float)
    return beta, covariance, notes


def _zph_test(
    data: RiskSets, beta: np.ndarray, ties: str, names: list[str], t: np.ndarray, e: np.ndarray
) -> ProportionalHazardsTest:
    """survival 3.x ``cox.zph`` with the "km" transform, from per-event-time score and information.

    g(t) = 1 − S(t−) from the Kaplan–Meier curve of all data (strata ignored), centred by its mean
    over the events. For the model β(t) = β + γ·g(t) at (β̂, γ = 0) the score for γ is
    Σ_t g_t U_t and the information is [[Σ I_t, Σ g_t I_t], [Σ g_t I_t, Σ g_t² I_t]]. Covariate j's
    test uses the rows of all β and of γ_j, with the β part of the score set to 0, as R does.
    """
    from cmvtrial.analysis.survival import kaplan_meier

    km = kaplan_meier(t, e)
    before = np.searchsorted(km.time, t, side="left")  # KM times strictly below each t
    left_surv = np.concatenate([[1.0], km.surv])[before]
    g_all = 1.0 - left_surv
    g_all = g_all - g_all[e == 1].mean()
    at_fit = data.derivatives(beta, ties)
    g_of_time = dict(zip(t.tolist(), g_all.tolist(), strict=True))
    g = np.array([g_of_time[time] for time in at_fit.event_time.tolist()])
    p = len(names)
    u_gamma = (g[:, None] * at_fit.score_by_time).sum(axis=0)
    info = at_fit.information_by_time
    imat = np.block(
        [
            [info.sum(axis=0), (g[:, None, None] * info).sum(axis=0)],
            [(g[:, None, None] * info).sum(axis=0), (g[:, None, None] ** 2 * info).sum(axis=0)],
        ]
    )

    def quadratic_form(u: np.ndarray, matrix: np.ndarray) -> float:
        try:
            return float(u @ np.linalg.solve(matrix, u))
        except np.linalg.LinAlgError:  # e.g. every event at one time: g(t) carries no information
            return math.nan

    terms = []
    for j, name in enumerate(names):
        rows = [*range(p), p + j]
        u = np.concatenate([np.zeros(p), [u_gamma[j]]])
        terms.append((name, _chi_square(quadratic_form(u, imat[np.ix_(rows, rows)]), 1)))
    u = np.concatenate([np.zeros(p), u_gamma])
    return ProportionalHazardsTest(terms=tuple(terms), global_test=_chi_square(quadratic_form(u, imat), p))
