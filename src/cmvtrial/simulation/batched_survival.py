"""Log-rank test and one-covariate Cox model over thousands of simulated trials at once.

Why our own kernels: lifelines and R analyse one data set per call (about 20 and 300 trials per
second on our machine, reference/statistics.md), while a power calculation needs hundreds of
thousands of trials. Every trial here is a row of a ``(trials, patients)`` array; a trial with fewer
patients is padded and the padding masked out. The method is the textbook one, done for all rows
together:

1. sort each row by time (integer days, as our weekly visits give, sort by a packed key; other times
   by ``argsort``);
2. mark the first and last position of each run of tied times and broadcast, to every position,
   the number at risk (all, and in the experimental group) and the number of events of its run,
   from cumulative sums. With integer times (the packed sort) the four running counts (patients,
   experimental, events, experimental events) travel packed in 16-bit fields of one int64, so one
   cumulative sum and two running maxima do the work of ten accumulations;
3. log-rank: sum over distinct event times of observed minus expected events in the experimental
   group and the hypergeometric variance (R ``survdiff``);
4. Cox with one binary covariate: every quantity of the partial likelihood reduces to per-event
   counts fixed before the iterations, so each Newton-Raphson step is a few array operations. Ties
   by Efron (R and lifelines default) or Breslow; step-halving when the likelihood falls, as R's
   ``coxph.fit`` does.

The results equal lifelines' and R's on single data sets (tests/unit/test_simulation_batched_survival.py).
Masks enter as exact 0/1 factors rather than ``np.where`` (a select on a random mask runs element by
element, ~10× slower than arithmetic); the values are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from cmvtrial.errors import InvalidInput

Ties = Literal["efron", "breslow"]

#: Largest integer time the packed-key sort handles (days; far beyond any follow-up we simulate).
_PACKED_MAX_TIME = (1 << 28) - 1
#: Patients per trial the packed running counts hold (four 16-bit fields of an int64, sign bit clear).
_PACKED_MAX_PATIENTS = (1 << 15) - 1
_FIELD = 16
_FIELD_MASK = (1 << _FIELD) - 1


@dataclass(frozen=True)
class RiskSets:
    """Per-position counts of sorted trials, computed once and shared by log-rank and Cox.

    Every array has shape ``(trials, patients)`` and refers to the position after sorting.
    ``first`` marks the first position of each run of equal times; the counts are those of the
    run the position belongs to.
    """

    event: NDArray[np.bool_]
    group: NDArray[np.bool_]
    first: NDArray[np.bool_]
    at_risk: NDArray[np.int32]
    at_risk_1: NDArray[np.int32]
    deaths: NDArray[np.int32]
    deaths_1: NDArray[np.int32]
    rank_in_run: NDArray[np.int32]


@dataclass(frozen=True)
class LogrankResult:
    """Two-group log-rank test per trial; ``observed_minus_expected`` is for the group coded True."""

    statistic: NDArray[np.float64]
    p_value: NDArray[np.float64]
    observed_minus_expected: NDArray[np.float64]
    variance: NDArray[np.float64]
    events: NDArray[np.float64]


@dataclass(frozen=True)
class CoxResult:
    """Cox model ``hazard ~ group`` per trial: log hazard ratio (group True vs False), Wald test."""

    coef: NDArray[np.float64]
    se: NDArray[np.float64]
    z: NDArray[np.float64]
    p_value: NDArray[np.float64]
    loglik: NDArray[np.float64]
    loglik_null: NDArray[np.float64]
    iterations: int
    converged: NDArray[np.bool_]

    @property
    def hazard_ratio(self) -> NDArray[np.float64]:
        return np.exp(self.coef)


def _as_2d(name: str, values: ArrayLike) -> NDArray:
    array = np.asarray(values)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise InvalidInput(f"{name} must have shape (trials, patients)", field=name, value=array.shape)
    return array


def _packable(time: NDArray) -> bool:
    return bool(np.issubdtype(time.dtype, np.integer) and time.size and time.min() >= 0
                and time.max() <= _PACKED_MAX_TIME)


def _sorted_keys(time: NDArray, event: NDArray[np.bool_], group: NDArray[np.bool_],
                 valid: NDArray[np.bool_] | None) -> NDArray[np.int32]:
    """Integer times packed with the flags into one key per patient (time, event, group, padding),
    each row sorted by value: a radix-friendly sort, several times faster than ``argsort`` plus
    gathers. Within a time, censored patients come first, then events, control before experimental."""
    key = time.astype(np.int32) << 3
    key |= event.view(np.int8) << 2
    key |= group.view(np.int8) << 1
    if valid is not None:
        key |= (~valid).view(np.int8)
        # Padding sorts after every real time: give it the largest key.
        key[~valid] = np.iinfo(np.int32).max
    key.sort(axis=1)  # equal keys are identical, so stability is moot
    return key


def _sorted_rows(
    time: NDArray, event: NDArray[np.bool_], group: NDArray[np.bool_], valid: NDArray[np.bool_]
) -> tuple[NDArray, NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Sort every row by time (packed keys for integer times, ``argsort`` otherwise)."""
    if _packable(time):
        key = _sorted_keys(time, event, group, valid)
        return key >> 3, (key & 4).astype(bool), (key & 2).astype(bool), (key & 1) == 0
    filled = np.where(valid, time.astype(np.float64), np.inf)
    order = np.argsort(filled, axis=1, kind="stable")
    take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return take(filled), take(event), take(group), take(valid)


def risk_sets(
    time: ArrayLike, event: ArrayLike, group: ArrayLike, valid: ArrayLike | None = None
) -> RiskSets:
    """Sort the trials and count, for every position, its run's risk set and events.

    ``time``: follow-up time; ``event``: True if the event (CMV-DNA negativity) was seen, False if
    censored; ``group``: True for the experimental arm; ``valid``: False for padding.
    """
    time_a = _as_2d("time", time)
    event_a = _as_2d("event", event).astype(bool)
    group_a = _as_2d("group", group).astype(bool)
    valid_a = np.ones_like(event_a) if valid is None else _as_2d("valid", valid).astype(bool)
    if not (time_a.shape == event_a.shape == group_a.shape == valid_a.shape):
        raise InvalidInput(
            "time, event, group and valid must have the same shape",
            field="shape",
            value=[time_a.shape, event_a.shape, group_a.shape, valid_a.shape],
        )
    if np.issubdtype(time_a.dtype, np.floating) and not np.all(np.isfinite(time_a[valid_a])):
        raise InvalidInput("times must be finite numbers", field="time")
    if np.any(time_a[valid_a] < 0):
        raise InvalidInput("times cannot be negative", field="time")
    if time_a.shape[1] <= _PACKED_MAX_PATIENTS and _packable(time_a):
        return _packed_risk_sets(_sorted_keys(time_a, event_a, group_a, None if valid is None else valid_a))

    t, e, g, v = _sorted_rows(time_a, event_a, group_a, valid_a)
    e = e & v
    g = g & v
    trials, n = t.shape
    first = np.ones((trials, n), dtype=bool)
    first[:, 1:] = t[:, 1:] != t[:, :-1]
    last = np.ones((trials, n), dtype=bool)
    last[:, :-1] = first[:, 1:]

    # Counts of a run, spread over its positions with running min/max instead of gathers: the
    # number at risk never rises along a row (so a running minimum over run starts carries the
    # start's value forward), and cumulative event counts never fall.
    at_risk_from = np.cumsum(v[:, ::-1], axis=1, dtype=np.int32)[:, ::-1]
    at_risk_1_from = np.cumsum(g[:, ::-1], axis=1, dtype=np.int32)[:, ::-1]
    cum_e = np.cumsum(e, axis=1, dtype=np.int32)
    cum_e1 = np.cumsum(e & g, axis=1, dtype=np.int32)
    at_risk = _carry_forward_min(at_risk_from, first)
    at_risk_1 = _carry_forward_min(at_risk_1_from, first)
    before_e = _carry_forward_max(cum_e - e, first)
    before_e1 = _carry_forward_max(cum_e1 - (e & g), first)
    through_e = _carry_backward_min(cum_e, last)
    through_e1 = _carry_backward_min(cum_e1, last)
    return RiskSets(
        event=e,
        group=g,
        first=first & v,
        at_risk=at_risk,
        at_risk_1=at_risk_1,
        deaths=through_e - before_e,
        deaths_1=through_e1 - before_e1,
        rank_in_run=cum_e - before_e - 1,
    )


def _packed_risk_sets(key: NDArray[np.int32]) -> RiskSets:
    """:func:`risk_sets` from sorted packed keys, with the running counts packed in one int64.

    Per position, four 16-bit fields (from the low end) count control patients, experimental
    patients, control events and experimental events. A cumulative sum counts them up to each
    position; the value just before a run's first position, carried forward with a running maximum,
    is what precedes the run, and the value at its last position, carried backward, what the run
    ends with. Every field only grows along a row, so the packed value does too and one running
    maximum carries all four fields; and as no field of a difference below goes negative, one int64
    subtraction subtracts all four (read back as int16 views, without copying).
    """
    trials, n = key.shape
    # (1 << 16 g) (1 + e << 32): control/experimental patient and event counts; padding counts 0.
    packed = np.left_shift(np.int64(1), (key & 2) << 3)
    packed *= np.left_shift(key & 4, np.int64(30)) + 1
    padding = key & 1
    if padding.any():
        packed *= 1 - padding
    times = key >> 3
    first = np.ones((trials, n), dtype=bool)
    np.not_equal(times[:, 1:], times[:, :-1], out=first[:, 1:])
    last = np.ones((trials, n), dtype=bool)
    last[:, :-1] = first[:, 1:]

    through = np.cumsum(packed, axis=1)
    totals = through[:, -1:].copy()
    before = np.subtract(through, packed, out=packed)
    before_run = np.maximum.accumulate(before * first, axis=1)
    # Backward carry of the value at each run's last position: a running maximum, from the right,
    # of (ceiling - value) at last positions (0 elsewhere).
    ceiling = np.int64(np.iinfo(np.int64).max)
    end = np.subtract(ceiling, through, out=through)
    end *= last
    np.maximum.accumulate(end[:, ::-1], axis=1, out=end[:, ::-1])
    through_run = np.subtract(ceiling, end, out=end)

    fields = lambda packed_counts: packed_counts.view(np.int16).reshape(trials, n, 4)  # noqa: E731
    at_risk = fields(totals - before_run)
    run = fields(np.subtract(through_run, before_run, out=through_run))
    rank = fields(np.subtract(before, before_run, out=before))
    event = (key & 4).astype(bool)
    group = (key & 2).astype(bool)
    if padding.any():
        valid = padding == 0
        event &= valid
        group &= valid
        first &= valid
    at_risk_1 = at_risk[..., 1]
    return RiskSets(
        event=event,
        group=group,
        first=first,
        at_risk=at_risk[..., 0] + at_risk_1,
        at_risk_1=at_risk_1,
        deaths=run[..., 2] + run[..., 3],
        deaths_1=run[..., 3],
        rank_in_run=rank[..., 2] + rank[..., 3],
    )


_BIG = np.iinfo(np.int32).max


def _carry_forward_min(values: NDArray[np.int32], mark: NDArray[np.bool_]) -> NDArray[np.int32]:
    """Each position takes the value at the latest marked position at or before it (values non-increasing)."""
    return np.minimum.accumulate(np.where(mark, values, _BIG), axis=1)


def _carry_forward_max(values: NDArray[np.int32], mark: NDArray[np.bool_]) -> NDArray[np.int32]:
    """Each position takes the value at the latest marked position at or before it (values non-decreasing)."""
    return np.maximum.accumulate(np.where(mark, values, -1), axis=1)


def _carry_backward_min(values: NDArray[np.int32], mark: NDArray[np.bool_]) -> NDArray[np.int32]:
    """Each position takes the value at the next marked position at or after it (values non-decreasing)."""
    return np.minimum.accumulate(np.where(mark, values, _BIG)[:, ::-1], axis=1)[:, ::-1]


def chi2_1_sf(statistic: ArrayLike) -> NDArray[np.float64]:
    """Upper tail of the chi-square distribution with one degree of freedom."""
    # chi-square(1) tail = erfc(sqrt(x / 2)): the same number, ~50× faster than the incomplete gamma.
    return special.erfc(np.sqrt(0.5 * np.asarray(statistic, dtype=np.float64)))


def normal_two_sided_p(z: ArrayLike) -> NDArray[np.float64]:
    return 2.0 * special.ndtr(-np.abs(np.asarray(z, dtype=np.float64)))


def logrank(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    sets: RiskSets | None = None,
) -> LogrankResult:
    """Two-group log-rank test for every trial (R: ``survdiff(Surv(time, event) ~ group)``).

    Pass ``sets`` from :func:`risk_sets` to share the sorting with :func:`cox_binary`.
    """
    rs = sets if sets is not None else risk_sets(time, event, group, valid)
    # One term per distinct event time (its run's first position), zero elsewhere: there
    # n = 1, n1 = d = 0, written with 0/1 factors.
    use = rs.first & (rs.deaths > 0)
    n = (rs.at_risk - 1) * use + 1
    d = rs.deaths * use
    share = rs.at_risk_1 * use / n
    expected = (d * share).sum(axis=1)
    # (n - d) / (n - 1), the hypergeometric correction for ties; 0 when n = 1 (then d = 1, or d = 0
    # and the term is 0 anyway).
    tie_factor = (n - d) / np.maximum(n - 1, 1)
    variance = (d * share * (1 - share) * tie_factor).sum(axis=1)
    observed = (rs.event & rs.group).sum(axis=1).astype(np.float64)
    o_minus_e = observed - expected
    with np.errstate(invalid="ignore", divide="ignore"):
        statistic = np.where(variance > 0, o_minus_e**2 / np.where(variance > 0, variance, 1.0), 0.0)
    return LogrankResult(
        statistic=statistic,
        p_value=chi2_1_sf(statistic),
        observed_minus_expected=o_minus_e,
        variance=variance,
        events=rs.event.sum(axis=1).astype(np.float64),
    )


def cox_binary(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    valid: ArrayLike | None = None,
    *,
    ties: Ties = "efron",
    sets: RiskSets | None = None,
    tol: float = 1e-12,
    max_iter: int = 30,
) -> CoxResult:
    """Cox proportional-hazards model with the group as its only covariate, for every trial.

    R: ``coxph(Surv(time, event) ~ group, ties = "efron")``. The Efron partial likelihood of one
    event at a run of ``d`` tied times (``d1`` of them in the experimental group), risk set ``n``
    (``n1``), and rank ``l`` among the tied events, is ``log(A e^b + B)`` with
    ``A = n1 - l d1 / d`` and ``B = n0 - l d0 / d`` (Breslow: ``l = 0``). Trials where the estimate
    runs off to infinity (all events in one arm) stop at ``max_iter`` with ``converged`` False and a
    large standard error, as R does.
    """
    if ties not in ("efron", "breslow"):
        raise InvalidInput(f"ties must be 'efron' or 'breslow', not '{ties}'", field="ties", value=ties)
    rs = sets if sets is not None else risk_sets(time, event, group, valid)
    e = rs.event
    # Non-event positions carry a = 0, b = 1 (0/1 factors: the event flag times its value, plus 1
    # where there is no event); the rank is clipped at 0 there so every factor is finite.
    fraction = np.maximum(rs.rank_in_run, 0) / np.maximum(rs.deaths, 1) if ties == "efron" else 0.0
    a = rs.at_risk_1 - fraction * rs.deaths_1
    a *= e
    b = (rs.at_risk - rs.at_risk_1) - fraction * (rs.deaths - rs.deaths_1)
    b *= e
    b += ~e
    observed_1 = (e & rs.group).sum(axis=1).astype(np.float64)
    # Two work arrays for every evaluation (no temporaries of the trials' size in the iterations).
    buffers = np.empty((2, *a.shape))

    def evaluate(a: NDArray, b: NDArray, observed_1: NDArray, beta: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        # Non-event positions add log(1) = 0 and p = 0, so no masking here.
        work, denominator = buffers[0, : a.shape[0]], buffers[1, : a.shape[0]]
        p = np.multiply(a, np.exp(beta)[:, None], out=work)
        np.add(p, b, out=denominator)
        p /= denominator
        loglik = beta * observed_1 - np.log(denominator, out=denominator).sum(axis=1)
        score = observed_1 - p.sum(axis=1)
        p -= np.multiply(p, p, out=denominator)
        information = p.sum(axis=1)
        return loglik, score, information

    trials = e.shape[0]
    beta = np.zeros(trials)
    loglik, score, information = evaluate(a, b, observed_1, beta)
    loglik_null = loglik.copy()
    converged = np.zeros(trials, dtype=bool)
    # The trials still iterating and their data: once at most three quarters of them are left, the
    # converged ones (step below tol) keep their estimate and leave, so the last iterations cost little.
    rows, rows_a, rows_b, rows_observed = np.arange(trials), a, b, observed_1
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 - the count is reported
        at, info = beta[rows], information[rows]
        step = np.where(info > 0, score[rows] / np.where(info > 0, info, 1.0), 0.0)
        candidate = at + step
        new_loglik, new_score, new_information = evaluate(rows_a, rows_b, rows_observed, candidate)
        # Step-halving where the likelihood fell (R coxph.fit does the same).
        floor = loglik[rows] - 1e-12 * np.abs(loglik[rows])
        worse = new_loglik < floor
        halvings = 0
        while worse.any() and halvings < 30:
            candidate = np.where(worse, (at + candidate) / 2.0, candidate)
            new_loglik, new_score, new_information = evaluate(rows_a, rows_b, rows_observed, candidate)
            worse = new_loglik < floor
            halvings += 1
        done = np.abs(candidate - at) <= tol * np.maximum(1.0, np.abs(candidate))
        beta[rows], loglik[rows], score[rows], information[rows] = candidate, new_loglik, new_score, new_information
        converged[rows[done]] = True
        going = ~converged[rows]
        left = np.count_nonzero(going)
        if left == 0:
            break
        if left <= 0.75 * rows.size:
            rows, rows_a, rows_b, rows_observed = rows[going], rows_a[going], rows_b[going], rows_observed[going]
    with np.errstate(divide="ignore"):
        se = np.where(information > 0, 1.0 / np.sqrt(np.where(information > 0, information, 1.0)), np.inf)
    z = np.where(np.isfinite(se), beta / se, 0.0)
    return CoxResult(
        coef=beta,
        se=se,
        z=z,
        p_value=normal_two_sided_p(z),
        loglik=loglik,
        loglik_null=loglik_null,
        iterations=iterations,
        converged=converged,
    )
