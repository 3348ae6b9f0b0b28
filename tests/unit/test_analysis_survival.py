"""Kaplan–Meier, median, survival at times, RMST and log-rank against R's survival package.

Reference: ``Rscript tests/reference/survival/make_reference.R`` (R 4.2.2, survival 3.5-3) on
R's lung, veteran and ovarian data and a synthetic two-arm trial; every value asserted to 1e-6.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r_reference import assert_close, load, table

from cmvtrial.analysis.logrank import logrank_test
from cmvtrial.analysis.survival import kaplan_meier, kaplan_meier_by_group, rmst_comparison
from cmvtrial.errors import InvalidInput

DATASETS = ["lung", "veteran", "ovarian", "trial"]
CONF_TYPES = ["log", "log-log", "plain"]
CURVE_FIELDS = ["time", "n_risk", "n_event", "n_censor", "surv", "std_err", "lower", "upper"]


def reference(name):
    return load("survival")[name]


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("name", DATASETS)
def test_kaplan_meier_equals_survfit(name, conf_type):
    """R: survfit(Surv(time, event) ~ 1, conf.type = <type>) per arm; the whole curve, the median
    and its CI (print(fit)), the restricted mean and its SE (print(fit, rmean = tau))."""
    data, ref = table("survival", f"{name}.csv"), reference(name)
    curves = kaplan_meier_by_group(data.time, data.event, data.arm, reference=ref["reference"], conf_type=conf_type)
    assert list(curves) == ref["arms"]
    for arm, curve in curves.items():
        expected = ref["km"][conf_type][arm]
        assert (curve.n, curve.events) == (expected["n"], expected["events"])
        for name_ in CURVE_FIELDS:
            assert_close(getattr(curve, name_), expected["curve"][name_], what=f"{arm} {name_}")
        median = curve.median
        assert_close([median.estimate, median.lower, median.upper], [expected["median"], expected["lcl"], expected["ucl"]], what=f"{arm} median")
        rmst = curve.restricted_mean(ref["tau"])
        assert_close([rmst.estimate, rmst.std_err], [expected["rmean"], expected["se_rmean"]], what=f"{arm} rmean")


@pytest.mark.parametrize("conf_type", CONF_TYPES)
@pytest.mark.parametrize("name", DATASETS)
def test_survival_at_times_equals_summary(name, conf_type):
    """R: summary(fit, times = <times>): n.risk, n.event, surv, std.err, lower, upper; times after the
    last observation are dropped by R and reported here as not estimable."""
    data, ref = table("survival", f"{name}.csv"), reference(name)
    curves = kaplan_meier_by_group(data.time, data.event, data.arm, reference=ref["reference"], conf_type=conf_type)
    for arm, curve in curves.items():
        rows = curve.survival_at(ref["times"])
        estimable = [row for row in rows if row.surv is not None]
        expected = ref["km"][conf_type][arm]["at"]
        for field in ["time", "n_risk", "n_event", "surv", "std_err", "lower", "upper"]:
            assert_close([getattr(row, field) for row in estimable], expected[field], what=f"{arm} {field}")
        beyond = [row for row in rows if row.surv is None]
        assert all(row.time > curve.time[-1] and row.n_risk == 0 for row in beyond)


@pytest.mark.parametrize("name", DATASETS)
def test_rmst_difference_and_ratio(name):
    """R: per-arm rmean and se from print(fit, rmean = tau), combined in make_reference.R with the
    survRM2 formulas (difference: se = sqrt(se1^2 + se0^2); ratio: delta method on the log)."""
    data, ref = table("survival", f"{name}.csv"), reference(name)
    curves = kaplan_meier_by_group(data.time, data.event, data.arm, reference=ref["reference"])
    control, treated = (curves[arm] for arm in ref["arms"])
    result = rmst_comparison(treated, control, ref["tau"])
    expected = ref["rmst"]
    assert_close(
        [result.difference, result.difference_se, *result.difference_ci, result.difference_p],
        [expected[k] for k in ["difference", "difference_se", "difference_lower", "difference_upper", "difference_p"]],
        what="difference",
    )
    assert_close(
        [result.ratio, *result.ratio_ci, result.ratio_p],
        [expected[k] for k in ["ratio", "ratio_lower", "ratio_upper", "ratio_p"]],
        what="ratio",
    )


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize("name", DATASETS)
def test_logrank_equals_survdiff(name, stratified):
    """R: survdiff(Surv(time, event) ~ arm) and survdiff(Surv(time, event) ~ arm + strata(strata))."""
    data, ref = table("survival", f"{name}.csv"), reference(name)
    expected = ref["logrank_stratified" if stratified else "logrank"]
    result = logrank_test(
        data.time, data.event, data.arm, data.strata if stratified else None, reference=ref["reference"]
    )
    assert list(result.groups) == expected["groups"]
    assert result.stratified is stratified
    assert_close([result.chisq, result.p], [expected["chisq"], expected["p"]], what="chisq, p")
    assert_close(result.observed, expected["observed"], what="observed")
    assert_close(result.expected, expected["expected"], what="expected")


def test_kaplan_meier_equals_lifelines():
    """lifelines' KaplanMeierFitter gives the same estimate and the same log-log band (statistics.md)."""
    from lifelines import KaplanMeierFitter

    data = table("survival", "veteran.csv")
    curve = kaplan_meier(data.time, data.event, conf_type="log-log")
    fitter = KaplanMeierFitter().fit(data.time, data.event)
    lifelines_surv = fitter.survival_function_.iloc[1:, 0].to_numpy()
    np.testing.assert_allclose(curve.surv, lifelines_surv, rtol=1e-12)
    band = fitter.confidence_interval_.iloc[1:].to_numpy()
    interior = (curve.surv > 0) & (curve.surv < 1)
    np.testing.assert_allclose(curve.lower[interior], band[interior, 0], rtol=1e-10)


def test_unstratified_logrank_equals_lifelines():
    from lifelines.statistics import logrank_test as lifelines_logrank

    data = table("survival", "lung.csv")
    male = data.arm == "male"
    theirs = lifelines_logrank(data.time[male], data.time[~male], data.event[male], data.event[~male])
    ours = logrank_test(data.time, data.event, data.arm)
    assert ours.chisq == pytest.approx(theirs.test_statistic, rel=1e-12)


def test_median_takes_the_midpoint_where_the_curve_sits_at_one_half():
    """statistics.md item 2: S = 0.5 on [2, 3) gives the median (2 + 3) / 2, as R; lifelines says 2."""
    curve = kaplan_meier([1, 2, 3, 4], [1, 1, 1, 1])
    assert curve.median.estimate == 2.5
    assert reference("veteran")["km"]["log"]["test"]["median"] == 52.5


def test_median_not_reached_is_none_not_an_error():
    curve = kaplan_meier([5, 6, 7, 8, 9, 10], [1, 0, 0, 0, 0, 0])
    assert curve.median.estimate is None
    assert curve.to_dict()["median_ci"][1] is None


def test_curve_serialises_not_estimable_values_as_none():
    curve = kaplan_meier([1, 2, 3], [1, 1, 1])
    serialised = curve.to_dict(curve=True)
    assert serialised["curve"]["surv"][-1] == 0.0
    assert serialised["curve"]["lower"][-1] is None  # log CI of S = 0 is undefined, as R's NA
    assert serialised["r_equivalent"].startswith("survfit(")


@pytest.mark.parametrize(
    ("time", "event", "message"),
    [
        ([1, -2, 3], [1, 0, 1], "must not be negative"),
        ([1, 2, 3], [1, 2, 1], "must be 0 (censored) or 1"),
        ([1, float("nan"), 3], [1, 0, 1], "missing in row 2"),
        ([1, "soon", 3], [1, 0, 1], "must be numeric"),
        ([1, 2, float("inf")], [1, 0, 1], "infinite"),
        ([1, 2], [1, 0, 1], "differ in length"),
        ([], [], "no rows"),
    ],
)
def test_bad_survival_input_is_refused_by_name(time, event, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        kaplan_meier(time, event)


def test_other_bad_arguments_are_refused():
    with pytest.raises(InvalidInput, match="confidence-interval type"):
        kaplan_meier([1, 2], [1, 1], conf_type="logit")
    with pytest.raises(InvalidInput, match="confidence level"):
        kaplan_meier([1, 2], [1, 1], conf_level=95)
    with pytest.raises(InvalidInput, match="single value"):
        logrank_test([1, 2, 3], [1, 1, 0], ["a", "a", "a"])
    with pytest.raises(InvalidInput, match="reference 'c'"):
        logrank_test([1, 2, 3], [1, 1, 0], ["a", "b", "a"], reference="c")
    with pytest.raises(InvalidInput, match="tau must be positive"):
        kaplan_meier([1, 2], [1, 1]).restricted_mean(0)
    with pytest.raises(InvalidInput, match="must not be negative"):
        kaplan_meier([1, 2], [1, 1]).survival_at([-1])
    with pytest.raises(InvalidInput, match="arm is missing in row 2"):
        kaplan_meier_by_group([1, 2], [1, 1], ["a", None])


samples = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 1), st.sampled_from(["a", "b"]), st.sampled_from(["s", "t"])),
    min_size=4,
    max_size=40,
).filter(lambda rows: {row[2] for row in rows} == {"a", "b"})


@settings(max_examples=60, deadline=None)
@given(samples)
def test_kaplan_meier_laws(rows):
    """S(t) starts at most 1, never rises, stays in [0, 1], and the log band contains it."""
    time, event = [r[0] for r in rows], [r[1] for r in rows]
    curve = kaplan_meier(time, event)
    assert np.all(np.diff(curve.surv) <= 0) and np.all((curve.surv >= 0) & (curve.surv <= 1))
    defined = ~np.isnan(curve.lower)
    assert np.all(curve.lower[defined] <= curve.surv[defined] + 1e-12)
    assert np.all(curve.upper[defined] >= curve.surv[defined] - 1e-12)
    tau = max(time) + 1.0
    rmst = curve.restricted_mean(tau)
    assert 0 <= rmst.estimate <= tau and rmst.std_err >= 0
    assert curve.restricted_mean(tau + 5).estimate >= rmst.estimate


@settings(max_examples=60, deadline=None)
@given(samples)
def test_logrank_laws(rows):
    """The log-rank statistic does not depend on the order of rows or on which arm is the reference,
    and one stratum is the unstratified test."""
    time, event, arm, strata = (list(column) for column in zip(*rows, strict=True))
    base = logrank_test(time, event, arm)
    flipped = logrank_test(time[::-1], event[::-1], arm[::-1], reference="b")
    one_stratum = logrank_test(time, event, arm, ["only"] * len(time))
    assert math.isclose(base.chisq, flipped.chisq, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(base.chisq, one_stratum.chisq, rel_tol=1e-12, abs_tol=1e-12)
    stratified = logrank_test(time, event, arm, strata)
    assert stratified.chisq >= 0 and 0 <= stratified.p <= 1
    assert sum(stratified.observed) == pytest.approx(sum(stratified.expected))


def test_rmst_ratio_is_undefined_when_an_arm_fails_at_time_zero():
    zero = kaplan_meier([0, 0, 0], [1, 1, 1], label="b")
    other = kaplan_meier([2, 4, 6], [1, 0, 1], label="a")
    result = rmst_comparison(zero, other, 5)
    assert result.difference == pytest.approx(-other.restricted_mean(5).estimate)
    assert result.to_dict()["ratio"] is None and result.to_dict()["ratio_ci"] == [None, None]
