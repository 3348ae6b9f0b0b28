"""The Cox partial likelihood: log-likelihood, score and information for any strata and ties.

Why a module of its own: every Cox quantity that lifelines does not give (the Breslow fit, the
score test, ``cox.zph``) and the check that a coefficient is estimable at all are built on the
risk sets of each stratum; :mod:`cmvtrial.analysis.cox` turns them into a model and its tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cmvtrial.errors import InvalidInput

# Newton–Raphson stopping rule for the Breslow fit: relative change in the log partial likelihood.
# Tighter than R's default 1e-9 (coxph.control eps) so that the answer is the maximum itself;
# R's default stops within 5e-9 of it (statistics.md item 4). Numerical, not a trial number.
_NR_TOLERANCE = 1e-14
_NR_MAX_ITERATIONS = 60


def at_risk_of_an_event(t: np.ndarray, e: np.ndarray, s: np.ndarray) -> list[np.ndarray]:
    """Per stratum with an event, the rows at risk at its first event time.

    Why: the risk sets of a stratum are nested, so this largest one holds every risk set the partial
    likelihood uses. A covariate that does not vary within it (in any stratum) leaves the likelihood
    flat in its coefficient: the information is zero however β is chosen.
    """
    groups = []
    for stratum in sorted(set(s.tolist())):
        in_stratum = s == stratum
        if e[in_stratum].any():
            groups.append(np.flatnonzero(in_stratum & (t >= t[in_stratum & (e == 1)].min())))
    return groups


def flat_at_event_times(t: np.ndarray, e: np.ndarray, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Covariates that take one value among the subjects at risk in every stratum (exact: no tolerance)."""
    flat = np.ones(x.shape[1], dtype=bool)
    for rows in at_risk_of_an_event(t, e, s):
        flat &= np.ptp(x[rows], axis=0) == 0
    return flat


def centred_at_event_times(t: np.ndarray, e: np.ndarray, x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """The covariates at risk, centred per stratum: rank-deficient when they are collinear there."""
    return np.concatenate([x[rows] - x[rows].mean(axis=0) for rows in at_risk_of_an_event(t, e, s)])


def monotone_direction(t: np.ndarray, e: np.ndarray, x: np.ndarray, s: np.ndarray) -> np.ndarray | None:
    """A direction v in which the partial likelihood never falls, or ``None`` when it has a maximum.

    Why: with v·(x_i − x_j) ≥ 0 for every event i and every j at risk at its time (same stratum),
    each term of the log-likelihood's derivative along v is ≥ 0, so the likelihood climbs for ever
    (monotone likelihood, "separation": e.g. no events in one arm, or each event of one arm when no
    subject of the other is at risk) and the estimate is infinite. Fitting it anyway stops wherever
    the weights underflow, with a meaningless, NaN or negative variance. Flat directions (v·x
    constant on every risk set) must be excluded first. One covariate: exact, each event against
    the largest and smallest value at risk (running extremes, linear time). More: a linear
    programme over all (event, at risk) pairs finds v, which is then checked.
    """
    if x.shape[1] == 1:
        rising = falling = True
        for rows in at_risk_of_an_event(t, e, s):
            order = rows[np.argsort(-t[rows], kind="stable")]  # time descending: risk sets grow
            times, values, events = t[order], x[order, 0], e[order] == 1
            last_tied = np.searchsorted(-times, -times, side="right") - 1  # ties are at risk together
            rising &= bool(np.all(values[events] >= np.maximum.accumulate(values)[last_tied][events]))
            falling &= bool(np.all(values[events] <= np.minimum.accumulate(values)[last_tied][events]))
        return np.ones(1) if rising else -np.ones(1) if falling else None
    from scipy.optimize import linprog

    contrasts = np.concatenate([
        x[event] - x[rows[t[rows] >= t[event]]]
        for rows in at_risk_of_an_event(t, e, s) for event in rows[e[rows] == 1]
    ])
    found = linprog(-contrasts.sum(axis=0), A_ub=-contrasts, b_ub=np.zeros(len(contrasts)),
                    bounds=[(-1, 1)] * x.shape[1], method="highs")
    if found.status != 0:
        return None
    # Numerical tolerances of the check (relative to the largest contrast), not trial numbers.
    along, scale = contrasts @ found.x, np.abs(contrasts).max()
    return found.x if along.min() >= -1e-9 * scale and along.max() > 1e-6 * scale else None


@dataclass(frozen=True)
class Derivatives:
    loglik: float
    score: np.ndarray  # U(beta), length p
    information: np.ndarray  # I(beta) = -d2 loglik, p x p
    score_by_time: np.ndarray  # per (stratum, event time): sum over its events of x_i - mean, m x p
    information_by_time: np.ndarray  # per (stratum, event time) information, m x p x p
    event_time: np.ndarray  # the m event times


class RiskSets:
    """Data sorted once per stratum, so the partial likelihood can be evaluated at any beta."""

    def __init__(self, time: np.ndarray, event: np.ndarray, x: np.ndarray, strata: np.ndarray) -> None:
        # Centring the covariates leaves every likelihood quantity unchanged and keeps exp() tame.
        self.x = x - x.mean(axis=0)
        self.groups = []
        for stratum in sorted(set(strata.tolist())):
            index = np.flatnonzero(strata == stratum)
            order = index[np.lexsort((-event[index], -time[index]))]  # time descending
            self.groups.append((time[order], event[order], self.x[order]))

    def derivatives(self, beta: np.ndarray, ties: str) -> Derivatives:
        loglik = 0.0
        score_parts, info_parts, times = [], [], []
        for t, e, x in self.groups:
            part = _stratum_derivatives(t, e, x, beta, ties)
            loglik += part[0]
            score_parts.append(part[1])
            info_parts.append(part[2])
            times.append(part[3])
        score_by_time = np.concatenate(score_parts)
        information_by_time = np.concatenate(info_parts)
        return Derivatives(
            loglik=loglik,
            score=score_by_time.sum(axis=0),
            information=information_by_time.sum(axis=0),
            score_by_time=score_by_time,
            information_by_time=information_by_time,
            event_time=np.concatenate(times),
        )


def _stratum_derivatives(
    t: np.ndarray, e: np.ndarray, x: np.ndarray, beta: np.ndarray, ties: str
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Partial likelihood pieces of one stratum (rows sorted by time, descending).

    At an event time with d tied events, risk-set sums S0, S1, S2 (of w, w·x, w·xxᵀ, w = exp(xβ))
    and the sums D0, D1, D2 over the d events: Efron uses, for k = 0..d−1, S − (k/d)·D; Breslow uses
    S for all k. Each k adds −log S0k to the log-likelihood, −S1k/S0k to the score and
    S2k/S0k − (S1k/S0k)(S1k/S0k)ᵀ to the information.
    """
    p = x.shape[1]
    eta = x @ beta
    w = np.exp(eta)
    wx = w[:, None] * x
    wxx = wx[:, :, None] * x[:, None, :]
    s0, s1, s2 = np.cumsum(w), np.cumsum(wx, axis=0), np.cumsum(wxx, axis=0)
    # Blocks of equal time; the risk set of a block is every row up to its last row.
    starts = np.flatnonzero(np.concatenate([[True], t[1:] != t[:-1]]))
    ends = np.concatenate([starts[1:], [len(t)]]) - 1
    d = np.add.reduceat(e, starts)
    has_events = d > 0
    starts, ends, d = starts[has_events], ends[has_events], d[has_events]
    if len(d) == 0:
        return 0.0, np.zeros((0, p)), np.zeros((0, p, p)), np.zeros(0)
    ew = e * w
    all_starts = np.flatnonzero(np.concatenate([[True], t[1:] != t[:-1]]))
    d0 = np.add.reduceat(ew, all_starts)[has_events]
    d1 = np.add.reduceat(ew[:, None] * x, all_starts, axis=0)[has_events]
    d2 = np.add.reduceat(ew[:, None, None] * x[:, :, None] * x[:, None, :], all_starts, axis=0)[has_events]
    event_x = np.add.reduceat(e[:, None] * x, all_starts, axis=0)[has_events]
    event_eta = np.add.reduceat(e * eta, all_starts)[has_events]

    block = np.repeat(np.arange(len(d)), d)  # one row per event, k = 0..d-1 within its block
    k = np.arange(len(block)) - np.repeat(np.cumsum(d) - d, d)
    fraction = k / d[block] if ties == "efron" else np.zeros(len(block))
    a0 = s0[ends][block] - fraction * d0[block]
    a1 = s1[ends][block] - fraction[:, None] * d1[block]
    a2 = s2[ends][block] - fraction[:, None, None] * d2[block]
    mean = a1 / a0[:, None]
    info_rows = a2 / a0[:, None, None] - mean[:, :, None] * mean[:, None, :]
    first_rows = np.cumsum(d) - d
    score_by_time = event_x - np.add.reduceat(mean, first_rows, axis=0)
    information_by_time = np.add.reduceat(info_rows, first_rows, axis=0)
    loglik = float(event_eta.sum() - np.log(a0).sum())
    return loglik, score_by_time, information_by_time, t[ends]


def newton_raphson(data: RiskSets, ties: str, notes: list[str]) -> np.ndarray:
    """Maximise the partial likelihood from β = 0, halving steps that lower it (as R's coxfit6)."""
    p = data.x.shape[1]
    beta = np.zeros(p)
    current = data.derivatives(beta, ties)
    for _ in range(_NR_MAX_ITERATIONS):
        try:
            step = np.linalg.solve(current.information, current.score)
        except np.linalg.LinAlgError:
            raise InvalidInput("the Cox model cannot be fitted: covariates are collinear") from None
        candidate_beta = beta + step
        candidate = data.derivatives(candidate_beta, ties)
        halvings = 0
        while not candidate.loglik >= current.loglik and halvings < 30:
            step = step / 2
            candidate_beta = beta + step
            candidate = data.derivatives(candidate_beta, ties)
            halvings += 1
        converged = abs(candidate.loglik - current.loglik) <= _NR_TOLERANCE * abs(current.loglik)
        beta, current = candidate_beta, candidate
        if converged or halvings >= 30:
            break
    else:
        notes.append("Newton-Raphson did not converge; a coefficient may be infinite")
    if np.any(np.abs(beta) > 20):
        notes.append("a coefficient is very large: the hazard ratio may be infinite (no events in one group)")
    return beta
