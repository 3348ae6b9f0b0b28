"""Cox regression (Efron and Breslow, stratified or not), its three tests and cox.zph, against R.

Reference: ``Rscript tests/reference/survival/make_reference.R`` (R 4.2.2, survival 3.5-3):
``coxph(Surv(time, event) ~ arm [+ x] [+ strata(strata)], ties = <ties>)`` with R's default
convergence, and ``cox.zph(fit, transform = "km")``; asserted to 1e-6 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r_reference import assert_close, load, table

from cmvtrial.analysis.cox import cox_hazard_ratio, cox_regression
from cmvtrial.errors import InvalidInput

DATASETS = ["lung", "veteran", "ovarian", "trial"]
VARIANTS = {
    "efron": ("efron", False, False),
    "breslow": ("breslow", False, False),
    "efron_stratified": ("efron", True, False),
    "breslow_stratified": ("breslow", True, False),
    "efron_covariate": ("efron", False, True),
    "breslow_covariate_stratified": ("breslow", True, True),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("name", DATASETS)
def test_cox_equals_coxph(name, variant):
    """R: fit <- coxph(Surv(time, event) ~ arm (+ x) (+ strata(strata)), ties = ...); coef, se,
    exp(coef) and its 95% CI, z, p, fit$loglik, fit$wald.test, 2 * diff(fit$loglik), fit$score,
    and cox.zph(fit, transform = "km")$table."""
    ties, stratified, with_covariate = VARIANTS[variant]
    data = table("survival", f"{name}.csv")
    ref = load("survival")[name]
    expected = ref["cox"][variant]
    treated = [arm for arm in ref["arms"] if arm != ref["reference"]][0]
    covariates = {f"arm{treated}": (data.arm == treated).astype(float)}
    if with_covariate:
        covariates["x"] = data.x
    model = cox_regression(
        data.time, data.event, covariates, strata=data.strata if stratified else None, ties=ties
    )
    assert model.notes == ()
    for field in ["coef", "se", "hr", "hr_lower", "hr_upper", "z", "p"]:
        assert_close([getattr(term, field) for term in model.terms], expected[field], what=field)
    assert_close([model.loglik_null, model.loglik], expected["loglik"], what="loglik")
    for ours, theirs in [(model.wald, "wald"), (model.likelihood_ratio, "lr"), (model.score, "score")]:
        assert ours.df == expected[theirs]["df"]
        assert_close([ours.statistic, ours.p], [expected[theirs]["chisq"], expected[theirs]["p"]], what=theirs)
    zph = model.proportional_hazards
    assert_close(
        [test.statistic for _, test in zph.terms] + [zph.global_test.statistic], expected["zph"]["chisq"], what="zph"
    )
    assert_close([test.p for _, test in zph.terms] + [zph.global_test.p], expected["zph"]["p"], what="zph p")


def test_hazard_ratio_names_the_arm_and_describes_itself():
    data = table("survival", "trial.csv")
    model = cox_hazard_ratio(data.time, data.event, data.arm, reference="control", strata=data.strata)
    assert [term.name for term in model.terms] == ["armil2"]
    assert model.r_equivalent == 'coxph(Surv(time, event) ~ armil2 + strata(strata), ties = "efron")'
    assert "stratified" in model.method and model.strata == ("SLE", "other")
    serialised = model.to_dict()
    assert serialised["terms"][0]["hr"] == pytest.approx(load("survival")["trial"]["cox"]["efron_stratified"]["hr"][0], rel=1e-6)
    assert set(serialised["proportional_hazards"]["terms"]) == {"armil2"}


def test_an_arm_without_events_gives_a_note_not_a_crash():
    """R warns "coefficient may be infinite"; here the model still returns, with a note."""
    time = [1, 2, 3, 4, 5, 6, 7, 8]
    event = [1, 1, 1, 1, 0, 0, 0, 0]
    arm = ["a"] * 4 + ["b"] * 4
    for ties in ["efron", "breslow"]:
        model = cox_hazard_ratio(time, event, arm, ties=ties)
        assert model.notes, ties
        assert model.terms[0].coef < -5


def test_bad_cox_input_is_refused():
    with pytest.raises(InvalidInput, match="no events"):
        cox_hazard_ratio([1, 2, 3, 4], [0, 0, 0, 0], ["a", "b", "a", "b"])
    with pytest.raises(InvalidInput, match="compares two arms"):
        cox_hazard_ratio([1, 2, 3], [1, 1, 1], ["a", "b", "c"])
    with pytest.raises(InvalidInput, match="single value"):
        cox_hazard_ratio([1, 2, 3], [1, 1, 1], ["a", "a", "a"])
    with pytest.raises(InvalidInput, match="ties method"):
        cox_hazard_ratio([1, 2, 3, 4], [1, 1, 1, 0], ["a", "b", "a", "b"], ties="exact")
    with pytest.raises(InvalidInput, match="takes a single value"):
        cox_regression([1, 2, 3], [1, 1, 1], {"x": [2.0, 2.0, 2.0]})
    with pytest.raises(InvalidInput, match="at least one covariate"):
        cox_regression([1, 2, 3], [1, 1, 1], {})
    with pytest.raises(InvalidInput, match="collinear"):
        cox_regression([1, 2, 3, 4], [1, 1, 1, 0], {"x": [1.0, 2, 3, 4], "y": [2.0, 4, 6, 8]})
    with pytest.raises(InvalidInput, match="x must be numeric"):
        cox_regression([1, 2, 3], [1, 1, 1], {"x": [1, "two", 3]})


trials = st.lists(
    st.tuples(st.integers(1, 30), st.integers(0, 1), st.sampled_from(["a", "b"])), min_size=6, max_size=40
).filter(lambda rows: all(any(r[2] == arm and r[1] == 1 for r in rows) for arm in "ab"))


@settings(max_examples=40, deadline=None)
@given(trials)
def test_swapping_the_reference_inverts_the_hazard_ratio(rows):
    """Law: HR(b vs a) = 1 / HR(a vs b), and the three tests do not change."""
    time, event, arm = (list(column) for column in zip(*rows, strict=True))
    one = cox_hazard_ratio(time, event, arm, reference="a", ties="breslow")
    other = cox_hazard_ratio(time, event, arm, reference="b", ties="breslow")
    if one.notes or other.notes:
        return  # a separated sample: the coefficient is not finite
    assert math.isclose(one.terms[0].coef, -other.terms[0].coef, rel_tol=1e-7, abs_tol=1e-9)
    assert math.isclose(one.score.statistic, other.score.statistic, rel_tol=1e-9, abs_tol=1e-12)
    assert one.likelihood_ratio.statistic >= -1e-9
    np.testing.assert_allclose(one.loglik, other.loglik, rtol=1e-12)
