"""Batched ANCOVA and Welch t-test equal statsmodels and scipy on single trials.

R equivalents:
    summary(lm(change ~ arm + baseline))$coefficients["arm", ]   -> ancova()
    t.test(x[arm == 1], x[arm == 0])                              -> welch()
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.batched_tests import ancova, welch


def data(seed: int, trials: int = 6, n: int = 40):
    rng = np.random.default_rng(seed)
    group = rng.random((trials, n)) < 0.5
    baseline = rng.lognormal(4, 0.6, (trials, n))
    outcome = 0.3 * baseline + 15 * group + rng.normal(0, 20, (trials, n))
    outcome[rng.random((trials, n)) < 0.1] = np.nan  # dropouts
    return outcome, group, baseline


def test_ancova_equals_statsmodels_ols():
    outcome, group, baseline = data(1)
    result = ancova(outcome, group, baseline)
    for i in range(outcome.shape[0]):
        keep = np.isfinite(outcome[i])
        design = sm.add_constant(np.column_stack([group[i][keep].astype(float), baseline[i][keep]]))
        fit = sm.OLS(outcome[i][keep], design).fit()
        assert result.estimate[i] == pytest.approx(fit.params[1], abs=1e-8)
        assert result.se[i] == pytest.approx(fit.bse[1], rel=1e-8)
        assert result.p_value[i] == pytest.approx(fit.pvalues[1], rel=1e-8, abs=1e-12)
        assert result.df[i] == fit.df_resid


def test_welch_equals_scipy():
    outcome, group, _ = data(2)
    result = welch(outcome, group)
    for i in range(outcome.shape[0]):
        keep = np.isfinite(outcome[i])
        expected = stats.ttest_ind(outcome[i][keep & group[i]], outcome[i][keep & ~group[i]], equal_var=False)
        assert result.statistic[i] == pytest.approx(expected.statistic, rel=1e-10)
        assert result.p_value[i] == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-12)


def test_too_few_patients_give_no_rejection():
    outcome = np.array([[1.0, np.nan, np.nan, 2.0]])
    group = np.array([[True, True, False, False]])
    assert ancova(outcome, group, outcome).p_value[0] == 1.0
    assert welch(outcome, group).p_value[0] == 1.0


def test_shape_mismatch_is_refused():
    with pytest.raises(InvalidInput):
        ancova([[1.0, 2.0]], [[True]], [[1.0, 2.0]])
    with pytest.raises(InvalidInput):
        welch([[1.0, 2.0]], [[True]])
