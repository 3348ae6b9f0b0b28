"""The batched two-stage decline-rate test equals a trial-by-trial computation with the same weights.

The reference, one trial at a time: each patient's line by ``numpy.polyfit`` (slope, residual sum
of squares), the pooled within-patient variance, the REML between-patient slope variance as the
root of the likelihood's derivative by Brent's method (``scipy.optimize.brentq``; the likelihood
itself is maximised independently as a check), then weighted least squares of the slopes on the
arm with statsmodels and known weights. R, for the last step:
``summary(lm(slope ~ arm, weights = w))`` with the residual scale fixed at 1, as ``metafor::rma(slope,
vi, mods = ~ arm, method = "REML")`` does.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize, stats

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.batched_decline import two_stage_decline


def patients_lines(seed: int, trials: int = 12, patients: int = 24):
    """Per patient: (slope, Σ(t − t̄)², residual SS, samples), from simulated weekly samples.

    Trials alternate between a real between-patient spread of slopes and none (a REML maximum on
    the boundary τ² = 0); a patient has 1 to 8 samples, so some have no slope and some a line
    through two points.
    """
    rng = np.random.default_rng(seed)
    group = np.zeros((trials, patients), dtype=bool)
    group[:, : patients // 2] = True
    shape = (trials, patients)
    slope, day_ss, residual_ss = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    samples = rng.integers(1, 9, shape)
    samples[:, :2] = 3  # at least two patients with a slope per arm
    samples[:, patients // 2 : patients // 2 + 2] = 3
    for trial, patient in np.ndindex(shape):
        spread = 0.04 if trial % 2 == 0 else 0.0
        true_slope = -0.2 + 0.05 * group[trial, patient] + spread * rng.standard_normal()
        days = np.concatenate([[0.0], np.cumsum(rng.integers(5, 10, samples[trial, patient] - 1))])
        values = 6 + true_slope * days + 0.3 * rng.standard_normal(days.size)
        if days.size >= 2:
            fit, residuals, *_ = np.polyfit(days, values, 1, full=True)
            slope[trial, patient] = fit[0]
            day_ss[trial, patient] = np.sum((days - days.mean()) ** 2)
            residual_ss[trial, patient] = residuals[0] if residuals.size else 0.0
    return slope, day_ss, residual_ss, samples, group


def reml_log_likelihood(tau2: float, b: np.ndarray, v: np.ndarray, arm: np.ndarray) -> float:
    """REML log-likelihood of b ~ N(mean of the arm, τ² + v), up to a constant."""
    w = 1.0 / (tau2 + v)
    total = -0.5 * np.sum(np.log(tau2 + v))
    for in_arm in (arm, ~arm):
        mean = np.sum(w[in_arm] * b[in_arm]) / np.sum(w[in_arm])
        total -= 0.5 * np.log(np.sum(w[in_arm])) + 0.5 * np.sum(w[in_arm] * (b[in_arm] - mean) ** 2)
    return float(total)


def reml_score(tau2: float, b: np.ndarray, v: np.ndarray, arm: np.ndarray) -> float:
    """The derivative of :func:`reml_log_likelihood` in τ²."""
    w = 1.0 / (tau2 + v)
    score = -0.5 * np.sum(w)
    for in_arm in (arm, ~arm):
        wa = w[in_arm]
        mean = np.sum(wa * b[in_arm]) / np.sum(wa)
        score += 0.5 * np.sum(wa**2 * (b[in_arm] - mean) ** 2) + 0.5 * np.sum(wa**2) / np.sum(wa)
    return float(score)


def reference(slope, day_ss, residual_ss, samples, group):
    """(estimate, se, p, s², τ²) of one trial, computed plainly."""
    used = np.isfinite(slope)
    b, arm, v_scale = slope[used], group[used], day_ss[used]
    s2 = residual_ss[used].sum() / (samples[used] - 2).sum()
    v = s2 / v_scale
    if reml_score(0.0, b, v, arm) <= 0:
        tau2 = 0.0
    else:
        upper = np.var(b) + 1.0
        while reml_score(upper, b, v, arm) > 0:
            upper *= 2
        tau2 = optimize.brentq(reml_score, 0.0, upper, args=(b, v, arm), xtol=1e-300, rtol=4 * np.finfo(float).eps)
    weights = 1.0 / (tau2 + v)
    fit = sm.WLS(b, sm.add_constant(arm.astype(float)), weights=weights).fit(cov_type="fixed scale")
    estimate, se = fit.params[1], fit.bse[1]
    df = b.size - 2
    return estimate, se, 2 * stats.t.sf(abs(estimate / se), df), s2, tau2


@pytest.mark.parametrize("seed", [1, 2])
def test_equals_a_trial_by_trial_reml_and_weighted_least_squares(seed):
    data = patients_lines(seed)
    result = two_stage_decline(*data)
    boundary = 0
    for trial in range(data[0].shape[0]):
        estimate, se, p, s2, tau2 = reference(*(array[trial] for array in data))
        assert result.within_variance[trial] == pytest.approx(s2, rel=1e-12)
        assert result.between_variance[trial] == pytest.approx(tau2, rel=1e-8, abs=1e-12)
        assert result.estimate[trial] == pytest.approx(estimate, rel=1e-8)
        assert result.se[trial] == pytest.approx(se, rel=1e-8)
        assert result.p_value[trial] == pytest.approx(p, rel=1e-8, abs=1e-14)
        assert result.df[trial] == np.isfinite(data[0][trial]).sum() - 2
        boundary += tau2 == 0.0
    assert 0 < boundary < data[0].shape[0]  # both kinds of maximum were met


def test_the_root_is_the_maximum_of_the_reml_likelihood():
    """The reference's score is the likelihood's derivative: its root is where the likelihood peaks."""
    slope, day_ss, residual_ss, samples, group = patients_lines(3)
    trial = 0
    used = np.isfinite(slope[trial])
    s2 = residual_ss[trial][used].sum() / (samples[trial][used] - 2).sum()
    b, v, arm = slope[trial][used], s2 / day_ss[trial][used], group[trial][used]
    tau2 = two_stage_decline(slope, day_ss, residual_ss, samples, group).between_variance[trial]
    best = optimize.minimize_scalar(lambda t: -reml_log_likelihood(t, b, v, arm), bounds=(0, 1), method="bounded",
                                    options={"xatol": 1e-12})
    assert tau2 > 0 and tau2 == pytest.approx(best.x, rel=1e-4)
    assert reml_score(tau2, b, v, arm) == pytest.approx(0.0, abs=1e-6 * np.sum(1 / (tau2 + v)))


def test_a_trial_gives_the_same_answer_alone_or_in_any_block():
    """Every trial's fit is its own: the power's answer cannot depend on how trials are grouped."""
    data = patients_lines(4)
    together = two_stage_decline(*data)
    for trial in (0, 5):
        alone = two_stage_decline(*(array[trial : trial + 1] for array in data))
        assert alone.p_value[0] == together.p_value[trial]
        assert alone.between_variance[0] == together.between_variance[trial]


def test_patients_without_a_slope_are_left_out():
    slope, day_ss, residual_ss, samples, group = patients_lines(5, trials=2)
    result = two_stage_decline(slope, day_ss, residual_ss, samples, group)
    keep = np.isfinite(slope[0])
    alone = two_stage_decline(slope[0][keep], day_ss[0][keep], residual_ss[0][keep], samples[0][keep], group[0][keep])
    assert alone.p_value[0] == pytest.approx(result.p_value[0], rel=1e-12)
    assert result.n[0] == keep.sum()


def test_no_test_without_two_patients_per_arm_or_a_residual_degree_of_freedom():
    slope = np.array([[-0.1, -0.2, -0.3, np.nan], [-0.1, -0.2, -0.3, -0.25], [-0.1, -0.2, -0.3, -0.25]])
    day_ss = np.array([[50.0, 60.0, 70.0, np.nan], [50.0, 60.0, 70.0, 80.0], [50.0, 60.0, 70.0, 80.0]])
    residual_ss = np.array([[0.1, 0.2, 0.1, np.nan], [0.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.1, 0.3]])
    samples = np.array([[3, 4, 3, 1], [2, 2, 2, 2], [3, 3, 3, 3]])
    group = np.array([[True, True, False, False]] * 3)
    result = two_stage_decline(slope, day_ss, residual_ss, samples, group)
    # one control patient with a slope; lines through two points only; a trial that can be tested
    assert result.p_value[:2].tolist() == [1.0, 1.0]
    assert np.isnan(result.estimate[:2]).all() and result.statistic[:2].tolist() == [0.0, 0.0]
    assert 0 < result.p_value[2] < 1 and np.isfinite(result.estimate[2])


def test_shape_mismatch_is_refused():
    with pytest.raises(InvalidInput, match="same shape"):
        two_stage_decline([[0.1, 0.2]], [[1.0, 2.0]], [[0.1, 0.1]], [[3, 3]], [[True]])
    with pytest.raises(InvalidInput, match="same shape"):
        two_stage_decline([[0.1, 0.2]], [[1.0, 2.0]], [[0.1, 0.1]], [[3, 3]], [[True], [False]])
