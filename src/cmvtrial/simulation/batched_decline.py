"""The decline-rate test of the power, batched: patients' slopes weighed as the mixed model weighs them.

The analysis compares log10 CMV-DNA decline rates with a linear mixed model (random intercept and
slope per patient, REML; ``analysis/mixed_model.py``, R ``nlme::lme``), about 40 ms a trial — too
slow for the power's hundreds of thousands of trials. Comparing per-patient least-squares slopes
with an unweighted test (Welch) loses a third of the model's power (docs/simulation.md): a slope
from two samples a week apart counts as much as one from ten. The mixed model weighs each
patient's slope by its precision; this two-stage test does the same, over ``(trials, patients)``
arrays at once:

1. per patient ``i`` with ≥ 2 samples: the slope ``bᵢ`` and its sampling variance ``s²/Sxxᵢ``,
   where ``s²`` is the within-patient residual variance pooled over the trial's patients
   (``Σ RSSᵢ / Σ (nᵢ − 2)``) and ``Sxxᵢ = Σ (t − t̄)²``;
2. the between-patient slope variance ``τ²`` (common to both arms, as the mixed model's random
   slope), maximising the REML likelihood of the two-stage model ``bᵢ ~ N(μ_arm, τ² + s²/Sxxᵢ)``:
   from a moment estimate (pooled over the arms after removing each arm's mean, truncated at 0),
   Newton steps in ``log τ²`` until it moves by less than 1e-10 of the slopes' variance (3-4
   steps);
3. weights ``wᵢ = 1 / (τ² + s²/Sxxᵢ)``; per arm the weighted mean slope; the difference (IL-2
   minus control) with standard error ``sqrt(1/Σw_IL-2 + 1/Σw_control)``; a two-sided t-test on
   the number of patients with a slope minus 2 degrees of freedom.

A moment estimate alone (DerSimonian–Laird's) gives ``τ²`` about 1.4 times REML's on these data,
weights too even, and less power than the mixed model (0.27 against 0.34 on the trials of
docs/simulation.md); with REML's ``τ²`` the test rejects the trials the mixed model rejects.
``tests/unit/test_simulation_power_decline_model.py`` measures that agreement on the same trials;
``tests/unit/test_simulation_batched_decline.py`` checks the numbers against a trial-by-trial
computation (per-patient ``numpy.polyfit``, the REML maximum by Brent's method, statsmodels' WLS).

A patient with fewer than 2 samples (a NaN slope) is left out, as Welch leaves them out; a trial
with fewer than 2 such patients in an arm, or without a residual degree of freedom to estimate
``s²``, has no test (p = 1, estimate NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.batched_tests import GroupTestResult, as_rows, row_dot, t_two_sided, without_nan

#: Scoring stops for a trial once a step moves τ² by less than this share of the typical slope
#: variance (τ² + the mean sampling variance): far below anything a p-value notices.
TAU2_TOLERANCE = 1e-10
#: A cap on the scoring steps (a mechanism limit, never reached on simulated trials: 2-6 steps).
MAX_SCORING_STEPS = 50
#: The largest change of log τ² in one step.
MAX_LOG_STEP = 3.0
#: A Newton step that moved τ² by less than this share of the typical slope variance (and
#: ``log τ²`` by less than :data:`NEWTON_STOP_LOG`) leaves an error of the order of its square
#: (Newton converges quadratically to an inner maximum), far below :data:`TAU2_TOLERANCE`, so the
#: trial stops without a confirming step. (1e-5 left errors up to 1e-9 on simulated trials; 1e-6
#: leaves 1e-11.)
NEWTON_STOP = 1e-6
NEWTON_STOP_LOG = 1e-3
#: A step that shrinks τ² (log τ² by more than 0.5) to below this share of the typical sampling
#: variance goes to 0 instead: heading for a maximum on the boundary, Newton in ``log τ²`` only
#: divides τ² by about e a step. The next step, Fisher's from 0, stays there if that is the
#: maximum and climbs back otherwise.
SNAP_TO_ZERO = 1e-2
#: Shrink the set of trials still being scored once this share of it has converged.
_COMPACT_WHEN_CONVERGED = 0.25


@dataclass(frozen=True)
class DeclineTestResult(GroupTestResult):
    """The weighted slope difference per trial, with the variances that set the weights."""

    within_variance: NDArray[np.float64]
    between_variance: NDArray[np.float64]
    scoring_steps: NDArray[np.int64]


@dataclass(frozen=True)
class _Slopes:
    """The testable trials' patients, ready for weighted sums by one matrix product per trial.

    ``columns`` ``(6, trials, patients)``: 1, ``b``, ``b²``, then the same times the IL-2 mask (0
    for a patient without a slope); ``sampling`` ``(trials, patients)``: ``vᵢ = s²/Sxxᵢ``, infinite
    without a slope, so every weight ``1/(τ² + vᵢ)`` of such a patient is exactly 0.
    """

    columns: NDArray[np.float64]
    sampling: NDArray[np.float64]
    typical: NDArray[np.float64]

    def take(self, trials: NDArray[np.intp]) -> _Slopes:
        return _Slopes(self.columns[:, trials], self.sampling[trials], self.typical[trials])


def _arm_sums(slopes: _Slopes, tau2: NDArray[np.float64], powers: int) -> NDArray[np.float64]:
    """``Σ wᵏ``, ``Σ wᵏ b``, ``Σ wᵏ b²`` per arm for ``k = 1..powers``, ``w = 1/(τ² + vᵢ)``.

    Shape ``(2 arms: IL-2, control, powers, 3, trials)``. The powers of the weights (contiguous
    planes) are multiplied by the six columns in one batched matrix product per trial: five times
    faster than a row dot per sum.
    """
    weights = np.empty((powers, *slopes.sampling.shape))
    w = np.add(tau2[:, None], slopes.sampling, out=weights[0])
    np.reciprocal(w, out=w)
    for k in range(1, powers):
        np.multiply(weights[k - 1], w, out=weights[k])
    sums = np.matmul(slopes.columns.transpose(1, 0, 2), weights.transpose(1, 2, 0))  # (trials, 6, powers)
    il2 = sums[:, 3:]
    return np.stack([il2, sums[:, :3] - il2]).transpose(0, 3, 2, 1)


def _moment_estimate(slopes: _Slopes) -> NDArray[np.float64]:
    """The start of the scoring: τ² by the method of moments (Hedges'), pooled over the arms after
    removing each arm's mean, truncated at 0: the slopes' pooled within-arm variance less the
    mean sampling variance. Unweighted, so it costs one pass over the columns (DerSimonian–Laird's
    weighted estimate costs a scoring step and leaves as many steps to go)."""
    sums = slopes.columns.sum(axis=2)  # (6, trials): n, Σb, Σb², then the IL-2 arm's
    il2 = sums[3:]
    control = sums[:3] - il2
    within = sum(arm[2] - arm[1] * arm[1] / arm[0] for arm in (il2, control))
    return np.maximum(within / (sums[0] - 2) - slopes.typical, 0.0)


def _scoring_step(
    slopes: _Slopes, tau2: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """One Newton step on the REML likelihood of ``bᵢ ~ N(μ_arm, τ² + vᵢ)``, in ``log τ²``.

    With ``w = 1/(τ² + vᵢ)``, ``r`` a slope less its arm's weighted mean and sums per arm:
    score ``S = ½ [Σ w²r² − Σ w + Σ_arm Σw²/Σw]``; expected information ``½ Σ w² − Σ_arm Σw³/Σw +
    ½ Σ_arm (Σw²/Σw)²``; observed information ``Σ w³r² − Σ_arm (Σw²r)²/Σw`` plus the expected one's
    last two terms less its first. Sums of ``wᵏ r²`` come from ``Σ wᵏ b²`` etc. (no residual array).

    Why in ``log τ²``: in ``τ²`` the likelihood is far from quadratic (patients with many samples
    have ``vᵢ`` ≪ τ²), Newton overshoots to 0 and climbs back slowly and Fisher scoring creeps — 9-10
    steps on simulated trials; in ``log τ²`` Newton takes 3-5. A step changes τ² by at most a
    factor e³, and by that much uphill where the likelihood is not concave in ``log τ²`` (far from
    an inner maximum: Fisher's step there crept, 40 steps in some trials). From τ² = 0 the
    step is Fisher's in τ² (it stays at 0 when the score there is not positive); a step towards 0
    ends there (:data:`SNAP_TO_ZERO`), so a maximum on the boundary is reached, not approached
    forever. Returns the proposed τ², the score at ``tau2`` and whether the step was a small
    Newton step (see :data:`NEWTON_STOP`); :func:`_reml_between_variance` keeps it inside the
    bracket the scores have drawn.
    """
    sums = _arm_sums(slopes, tau2, powers=3)
    (w, wb, _), (w2, w2b, w2b2), (w3, w3b, w3b2) = (sums[:, k].transpose(1, 0, 2) for k in range(3))
    mean = wb / w
    w2r2 = w2b2 - 2 * mean * w2b + mean * mean * w2
    w3r2 = w3b2 - 2 * mean * w3b + mean * mean * w3
    w2r = w2b - mean * w2
    ratio = w2 / w
    score = 0.5 * (w2r2.sum(axis=0) - w.sum(axis=0) + ratio.sum(axis=0))
    common = (w3 / w - 0.5 * ratio * ratio).sum(axis=0)
    expected = 0.5 * w2.sum(axis=0) - common
    observed = (w3r2 - w2r * w2r / w).sum(axis=0) - 0.5 * w2.sum(axis=0) + common
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        slope_eta = tau2 * score  # first and second derivatives of the likelihood in η = log τ²
        curvature = slope_eta - tau2 * tau2 * observed
        step = np.where(curvature < 0, -slope_eta / curvature, np.sign(score) * MAX_LOG_STEP)
        moved = tau2 * np.exp(np.clip(step, -MAX_LOG_STEP, MAX_LOG_STEP))
        small_newton = (tau2 > 0) & (curvature < 0) & (np.abs(step) < NEWTON_STOP_LOG)
        to_zero = (step < -0.5) & (moved < SNAP_TO_ZERO * slopes.typical)
    moved = np.where(tau2 > 0, moved, np.maximum(score / expected, 0.0))
    return np.where(to_zero | (moved < TAU2_TOLERANCE * slopes.typical), 0.0, moved), score, small_newton


def _reml_between_variance(slopes: _Slopes, tau2: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """τ² maximising the REML likelihood, from the moment estimate ``tau2`` (one per trial).

    Safeguarded Newton: the score's sign at each τ² tried narrows a bracket around the maximum
    (positive below it, negative above), and a step that would leave the bracket bisects it
    instead (in ``log τ²``) — plain Newton can cycle where the likelihood is not concave (seen in
    trials of 5 patients per arm). A trial that has converged is left alone (its answer never
    depends on the others in its block); the set of trials still moving is shrunk once a quarter
    of it has converged.
    """
    tau2 = tau2.copy()
    steps = np.zeros(tau2.shape, dtype=np.int64)
    active = np.arange(tau2.size)
    current, t = slopes, tau2.copy()
    low, high = np.zeros(t.size), np.full(t.size, np.inf)
    moving = np.ones(active.size, dtype=bool)
    for _ in range(MAX_SCORING_STEPS):
        proposed, score, small_newton = _scoring_step(current, t)
        low = np.where(score > 0, t, low)
        high = np.where((score <= 0) & (t > 0), t, high)
        # (a step too small to change τ² is inside: it has converged)
        inside = ((proposed > low) & (proposed < high)) | ((proposed == 0) & (low == 0)) | (proposed == t)
        with np.errstate(invalid="ignore", over="ignore"):
            bisected = np.where(low > 0, np.sqrt(low * high), 0.5 * high)
        updated = np.where(moving, np.where(inside, proposed, bisected), t)
        steps[active] += moving
        change = np.abs(updated - t) / (updated + current.typical)
        moving &= (change > TAU2_TOLERANCE) & ~(small_newton & inside & (change < NEWTON_STOP))
        t = updated
        tau2[active] = t
        if not moving.any():
            break
        if np.count_nonzero(~moving) >= _COMPACT_WHEN_CONVERGED * moving.size:
            keep = np.flatnonzero(moving)
            active, t, current, low, high = active[keep], t[keep], current.take(keep), low[keep], high[keep]
            moving = np.ones(keep.size, dtype=bool)
    return tau2, steps


def two_stage_decline(
    slope: ArrayLike, day_ss: ArrayLike, residual_ss: ArrayLike, samples: ArrayLike, group: ArrayLike,
) -> DeclineTestResult:
    """The two-stage, precision-weighted test of the IL-2 minus control difference in decline rates.

    ``slope``, ``day_ss`` (Σ(t − t̄)²), ``residual_ss`` and ``samples`` describe each patient's
    least-squares line (NaN slope: fewer than 2 samples); ``group`` True is the IL-2 arm; all of
    shape ``(trials, patients)``. R: the ``day:arm`` row of ``nlme::lme(value ~ day * arm,
    random = ~ day | subject)``, approximated as the module docstring says.
    """
    b = as_rows("slope", slope)
    sxx = as_rows("day_ss", day_ss)
    rss = as_rows("residual_ss", residual_ss)
    n = as_rows("samples", samples)
    g = np.asarray(group, dtype=bool)
    g = g[np.newaxis, :] if g.ndim == 1 else g
    if not (b.shape == sxx.shape == rss.shape == n.shape == g.shape):
        raise InvalidInput("slope, day_ss, residual_ss, samples and group must have the same shape", field="shape")
    with np.errstate(invalid="ignore"):
        used = np.isfinite(b) & (n >= 2) & (sxx > 0) & np.isfinite(sxx) & np.isfinite(rss)
    in_any = used.astype(np.float64)
    counts_il2 = np.count_nonzero(used & g, axis=1).astype(np.float64)
    patients = in_any.sum(axis=1)
    counts = (counts_il2, patients - counts_il2)
    residual_df = row_dot(in_any, without_nan(n)) - 2 * patients
    # A line through two points leaves ±1e-16 of rounding in its residual sum of squares.
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = row_dot(in_any, np.maximum(without_nan(rss), 0.0)) / residual_df
    testable = (counts[0] >= 2) & (counts[1] >= 2) & (residual_df > 0) & (s2 > 0) & np.isfinite(s2)
    tau2 = np.full(testable.shape, np.nan)
    steps = np.zeros(testable.shape, dtype=np.int64)
    estimate, se = np.full(testable.shape, np.nan), np.full(testable.shape, np.nan)
    # Every trial of a power block is testable but for rare small ones: no copies then.
    rows = slice(None) if testable.all() else np.flatnonzero(testable)
    if testable.any():
        slopes = _prepare(b[rows], sxx[rows], in_any[rows], g[rows], s2[rows], patients[rows])
        tau2[rows], steps[rows] = _reml_between_variance(slopes, _moment_estimate(slopes))
        sums = _arm_sums(slopes, tau2[rows], powers=1)[:, 0]
        estimate[rows] = sums[0, 1] / sums[0, 0] - sums[1, 1] / sums[1, 0]
        se[rows] = np.sqrt(1.0 / sums[0, 0] + 1.0 / sums[1, 0])
    usable = testable & np.isfinite(estimate) & (se > 0)
    statistic = np.where(usable, estimate / np.where(usable, se, 1.0), 0.0)
    df = counts[0] + counts[1] - 2
    return DeclineTestResult(
        estimate=np.where(usable, estimate, np.nan),
        se=np.where(usable, se, np.nan),
        statistic=statistic,
        df=np.where(usable, df, np.nan),
        p_value=np.where(usable, t_two_sided(statistic, np.where(usable, df, 1.0)), 1.0),
        n=counts[0] + counts[1],
        within_variance=np.where(testable, s2, np.nan),
        between_variance=tau2,
        scoring_steps=steps,
    )


def _prepare(b, sxx, used, il2, s2, patients) -> _Slopes:
    """The columns and sampling variances of the testable trials (see :class:`_Slopes`); ``used``
    is the 0/1 mask of patients with a slope. Arithmetic only (a select on a mask is far slower)."""
    columns = np.empty((6, *b.shape))
    np.copyto(columns[0], used)
    np.multiply(without_nan(b), used, out=columns[1])
    np.multiply(columns[1], columns[1], out=columns[2])
    np.multiply(columns[:3], il2, out=columns[3:])
    day_ss = without_nan(sxx)
    day_ss *= used  # 0 without a slope: s²/0 is the infinite sampling variance wanted there
    with np.errstate(divide="ignore"):
        sampling = np.divide(s2[:, None], day_ss)
    day_ss += 1.0 - used
    typical = s2 * row_dot(used, np.reciprocal(day_ss, out=day_ss)) / patients
    return _Slopes(columns, sampling, typical)
