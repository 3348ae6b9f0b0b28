"""The batched log-rank and Cox kernels equal lifelines and statsmodels on single trials.

R equivalents (lifelines and statsmodels agree with R to ~1e-12 here, reference/statistics.md):
    survdiff(Surv(time, event) ~ group)                       -> logrank()
    coxph(Surv(time, event) ~ group, ties = "efron")          -> cox_binary(ties="efron")
    coxph(Surv(time, event) ~ group, ties = "breslow")        -> cox_binary(ties="breslow")
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import CoxPHFitter
from lifelines.statistics import logrank_test
from statsmodels.duration.hazard_regression import PHReg

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation import batched_survival as bs

TOL = 1e-8
# lifelines stops early by default; R-level agreement needs these (reference/statistics.md, item 4).
TIGHT = {"precision": 1e-20, "r_precision": 1e-20, "max_steps": 500}


def random_trials(seed: int, trials: int, n: int, *, integer: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 12, size=(trials, n)) if integer else np.round(rng.exponential(10, (trials, n)), 1)
    event = rng.random((trials, n)) < 0.7
    group = rng.random((trials, n)) < 0.5
    return time, event, group


def lifelines_logrank(time, event, group):
    return logrank_test(time[group], time[~group], event[group], event[~group])


def lifelines_cox(time, event, group):
    frame = pd.DataFrame({"T": time, "E": event.astype(int), "x": group.astype(float)})
    return CoxPHFitter().fit(frame, "T", "E", fit_options=TIGHT)


@pytest.mark.parametrize("integer", [True, False], ids=["tied-days", "continuous"])
def test_logrank_equals_lifelines(integer):
    time, event, group = random_trials(1, 12, 40, integer=integer)
    batched = bs.logrank(time, event, group)
    for i in range(time.shape[0]):
        expected = lifelines_logrank(time[i], event[i], group[i])
        assert batched.statistic[i] == pytest.approx(expected.test_statistic, abs=TOL, rel=TOL)
        assert batched.p_value[i] == pytest.approx(expected.p_value, abs=TOL, rel=TOL)


@pytest.mark.parametrize("integer", [True, False], ids=["tied-days", "continuous"])
def test_efron_cox_equals_lifelines(integer):
    time, event, group = random_trials(2, 12, 40, integer=integer)
    batched = bs.cox_binary(time, event, group)
    assert batched.converged.all()
    for i in range(time.shape[0]):
        fit = lifelines_cox(time[i], event[i], group[i])
        assert batched.coef[i] == pytest.approx(fit.params_["x"], abs=TOL)
        assert batched.se[i] == pytest.approx(fit.standard_errors_["x"], rel=1e-7)
        assert batched.loglik[i] == pytest.approx(fit.log_likelihood_, abs=TOL, rel=TOL)
        assert batched.p_value[i] == pytest.approx(fit.summary.loc["x", "p"], abs=TOL, rel=1e-7)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_equals_statsmodels_for_both_tie_methods(ties):
    time, event, group = random_trials(3, 8, 50, integer=True)
    batched = bs.cox_binary(time, event, group, ties=ties)
    for i in range(time.shape[0]):
        fit = PHReg(time[i].astype(float), group[i].astype(float)[:, None], status=event[i].astype(int), ties=ties).fit(
            tol=1e-12
        )
        assert batched.coef[i] == pytest.approx(fit.params[0], abs=1e-7)
        assert batched.se[i] == pytest.approx(fit.bse[0], rel=1e-6)


def test_padding_is_ignored():
    """A padded trial gives exactly the result of the unpadded one."""
    time, event, group = random_trials(4, 1, 30, integer=True)
    padded_time = np.concatenate([time, np.full((1, 10), 3)], axis=1)
    padded_event = np.concatenate([event, np.ones((1, 10), bool)], axis=1)
    padded_group = np.concatenate([group, np.ones((1, 10), bool)], axis=1)
    valid = np.concatenate([np.ones((1, 30), bool), np.zeros((1, 10), bool)], axis=1)
    for function in (bs.logrank, bs.cox_binary):
        plain = function(time, event, group)
        padded = function(padded_time, padded_event, padded_group, valid)
        assert padded.p_value[0] == pytest.approx(plain.p_value[0], abs=1e-12)


def test_no_events_and_one_sided_events():
    time = np.array([[1, 2, 3, 4], [1, 2, 3, 4]])
    event = np.array([[False] * 4, [True, True, False, False]])
    group = np.array([[True, True, False, False], [True, True, False, False]])
    lr = bs.logrank(time, event, group)
    assert lr.statistic[0] == 0 and lr.p_value[0] == 1
    cox = bs.cox_binary(time, event, group)
    # All events in one arm: the estimate runs off to infinity, as in R (with a warning there).
    assert not cox.converged[1]
    assert cox.coef[1] > 5 and cox.p_value[1] > 0.05


@pytest.mark.parametrize(
    ("time", "event", "group", "field"),
    [
        ([[1, 2]], [[True]], [[True, False]], "shape"),
        ([[1, -2]], [[True, True]], [[True, False]], "time"),
        ([[1.0, np.nan]], [[True, True]], [[True, False]], "time"),
        ([[[1]]], [[[True]]], [[[True]]], "time"),
    ],
)
def test_bad_input_is_refused(time, event, group, field):
    with pytest.raises(InvalidInput) as raised:
        bs.logrank(time, event, group)
    assert raised.value.details["field"] == field


def test_unknown_ties_method_is_refused():
    with pytest.raises(InvalidInput):
        bs.cox_binary([[1, 2]], [[True, True]], [[True, False]], ties="exact")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(4, 30))
def test_laws_permutation_and_label_swap(seed, n):
    """Order of patients does not matter; swapping the arms flips O - E and the log HR only."""
    time, event, group = random_trials(seed, 1, n, integer=True)
    order = np.random.default_rng(seed + 1).permutation(n)
    base_lr, base_cox = bs.logrank(time, event, group), bs.cox_binary(time, event, group)
    shuffled = bs.logrank(time[:, order], event[:, order], group[:, order])
    assert shuffled.statistic[0] == pytest.approx(base_lr.statistic[0], abs=1e-9)
    swapped_lr, swapped_cox = bs.logrank(time, event, ~group), bs.cox_binary(time, event, ~group)
    assert swapped_lr.statistic[0] == pytest.approx(base_lr.statistic[0], abs=1e-9)
    assert swapped_lr.observed_minus_expected[0] == pytest.approx(-base_lr.observed_minus_expected[0], abs=1e-9)
    if base_cox.converged[0] and swapped_cox.converged[0]:
        assert swapped_cox.coef[0] == pytest.approx(-base_cox.coef[0], abs=1e-8)
