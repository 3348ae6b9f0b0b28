"""Wilcoxon rank-sum with the Hodges–Lehmann shift and CI against R's ``wilcox.test``.

Reference: ``Rscript tests/reference/nonparametric/make_reference.R`` (R 4.2.2):
``wilcox.test(x, y, conf.int = TRUE)`` on NK/marker changes and synthetic samples covering the
exact path, the normal path because of ties, and the normal path because n >= 50. Asserted to 1e-6
relative (observed: 7e-15).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r_reference import assert_close, load, table

from cmvtrial.analysis.nonparametric import (
    _pwilcox,
    _qwilcox,
    _wilcoxon_counts,
    wilcoxon_by_arm,
    wilcoxon_rank_sum,
)
from cmvtrial.errors import InvalidInput

CASES = sorted(name for name in load("nonparametric") if name != "versions")


@pytest.mark.parametrize("case", CASES)
def test_rank_sum_and_hodges_lehmann_equal_wilcox_test(case):
    """R: w <- wilcox.test(x, y, conf.int = TRUE); w$statistic, w$p.value, w$estimate, w$conf.int."""
    samples = table("nonparametric", "samples.csv")
    rows = samples[samples.case == case]
    x, y = rows[rows.group == "x"].value.to_numpy(), rows[rows.group == "y"].value.to_numpy()
    expected = load("nonparametric")[case]
    result = wilcoxon_rank_sum(x, y)
    assert result.exact == ("exact" in expected["method"])
    assert (result.n_x, result.n_y) == (expected["n_x"], expected["n_y"])
    assert_close(
        [result.w, result.p, result.estimate, *result.ci, result.conf_level],
        [expected[k] for k in ["w", "p", "estimate", "lower", "upper", "conf_level"]],
        what=case,
    )


def test_normal_path_estimate_is_the_root_not_the_median_of_differences():
    """statistics.md item 7: with ties R's estimate is uniroot's answer, not median(x - y)."""
    samples = table("nonparametric", "samples.csv")
    rows = samples[samples.case == "nk_pct"]
    x, y = rows[rows.group == "x"].value.to_numpy(), rows[rows.group == "y"].value.to_numpy()
    result = wilcoxon_rank_sum(x, y)
    assert result.estimate != np.median(np.subtract.outer(x, y))
    assert result.estimate == pytest.approx(load("nonparametric")["nk_pct"]["estimate"], rel=1e-12)


def test_wilcoxon_distribution_is_a_distribution():
    counts = _wilcoxon_counts(7, 5)
    assert sum(counts) == math.comb(12, 5) and counts == counts[::-1]
    assert _pwilcox(35, 7, 5) == pytest.approx(1.0) and _pwilcox(-1, 7, 5) == 0.0
    assert _qwilcox(0.5, 7, 5) == 17 and _qwilcox(0.025, 7, 5) == 6  # R: qwilcox(c(.5, .025), 7, 5)


def test_by_arm_leaves_out_and_counts_missing_values():
    frame = pd.DataFrame({"v": [1.0, 2.5, np.nan, 4.0, 0.5, np.nan, 3.5, 0.2], "arm": list("ttttcccc")})
    result = wilcoxon_by_arm(frame.v, frame.arm, reference="c")
    assert (result.x_label, result.y_label) == ("t", "c")
    assert (result.n_x, result.n_y) == (3, 3)
    assert result.n_missing == {"c": 1, "t": 1}
    direct = wilcoxon_rank_sum([1.0, 2.5, 4.0], [0.5, 3.5, 0.2])
    assert (result.w, result.p, result.estimate) == (direct.w, direct.p, direct.estimate)
    assert result.to_dict()["r_equivalent"] == "wilcox.test(x, y, conf.int = TRUE)"


def test_bad_input_is_refused():
    with pytest.raises(InvalidInput, match="no values in group 'y'"):
        wilcoxon_rank_sum([1.0, 2.0], [])
    with pytest.raises(InvalidInput, match="all observations are tied"):
        wilcoxon_rank_sum([1.0] * 60, [1.0] * 60)
    with pytest.raises(InvalidInput, match="must be numeric"):
        wilcoxon_rank_sum([1.0, "a"], [2.0])
    with pytest.raises(InvalidInput, match="compares two arms"):
        wilcoxon_by_arm([1, 2, 3], ["a", "b", "c"])
    with pytest.raises(InvalidInput, match="confidence level"):
        wilcoxon_rank_sum([1.0, 2.0], [3.0], conf_level=1.5)


distinct = st.lists(st.integers(-500, 500), min_size=2, max_size=12, unique=True)


@settings(max_examples=80, deadline=None)
@given(distinct, st.integers(-50, 50))
def test_exact_case_laws(values, shift):
    """Without ties: shifting x shifts the estimate and CI by the same amount; swapping x and y
    negates them and keeps the p-value."""
    half = len(values) // 2
    x = np.array(values[:half], dtype=float)
    y = np.array(values[half:], dtype=float)
    base = wilcoxon_rank_sum(x, y)
    moved = wilcoxon_rank_sum(x * 1000 + shift, y * 1000)  # x1000 keeps the shifted values tie-free
    scaled = wilcoxon_rank_sum(x * 1000, y * 1000)
    assert base.exact and moved.exact
    assert moved.estimate == pytest.approx(scaled.estimate + shift)
    assert moved.ci == pytest.approx((scaled.ci[0] + shift, scaled.ci[1] + shift))
    swapped = wilcoxon_rank_sum(y, x)
    assert swapped.estimate == pytest.approx(-base.estimate)
    assert swapped.ci == pytest.approx((-base.ci[1], -base.ci[0]))
    assert swapped.p == pytest.approx(base.p)
    assert base.ci[0] <= base.estimate <= base.ci[1]
