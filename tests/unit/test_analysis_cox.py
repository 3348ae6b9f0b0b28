"""Cox regression (Efron and Breslow, stratified or not), its three tests and cox.zph, against R.

Reference: ``Rscript tests/reference/survival/make_reference.R`` (R 4.2.2, survival 3.5-3):
``coxph(Surv(time, event) ~ arm [+ x] [+ strata(strata)], ties = <ties>)`` with R's default
convergence, and ``cox.zph(fit, transform = "km")``; asserted to 1e-6 relative.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r_reference import assert_close, load, table

from cmvtrial.analysis.cox import TIES, cox_hazard_ratio, cox_regression
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
    """R warns "coefficient may be infinite" and prints wherever its iterations stopped; here the
    hazard ratio is not estimable (NaN, ``None`` in JSON) and the note says it tends to zero."""
    time = [1, 2, 3, 4, 5, 6, 7, 8]
    event = [1, 1, 1, 1, 0, 0, 0, 0]
    arm = ["a"] * 4 + ["b"] * 4
    for ties in ["efron", "breslow"]:
        model = cox_hazard_ratio(time, event, arm, ties=ties)
        assert len(model.notes) == 1 and "armb tends to zero" in model.notes[0], ties
        assert math.isnan(model.terms[0].coef) and model.to_dict()["terms"][0]["hr"] is None
        assert model.score.df == 1 and model.score.statistic > 0


NOT_ESTIMABLE = ["coef", "se", "hr", "hr_lower", "hr_upper", "z", "p"]


@pytest.mark.parametrize(("ties", "loglik"), [("efron", -2.4849066497880004), ("breslow", -2.890371757896165)])
def test_an_arm_alone_in_every_stratum_is_not_estimable_as_r_says_na(ties, loglik):
    """Regression: the demo trial's random allocation put each site's subjects in one arm; the
    stratified fit then has zero information and lifelines returned a negative variance ("invalid
    value encountered in sqrt") or failed to invert it. These five rows warned before (Efron; the
    Breslow fit returned a meaningless coefficient of 1 with SE 9e7 and no note).

    R: fit <- coxph(Surv(t, e) ~ a + strata(s), ties = ...) gives coef NA ("X matrix deemed to be
    singular"), fit$loglik both as below, "Likelihood ratio test = 0 on 0 df, p = 1", "Wald test =
    NA on 0 df", "Score (logrank) test = 0 on 0 df, p = 1"; cox.zph(fit) fails."""
    model = cox_hazard_ratio([1, 2, 3, 3, 4], [1, 1, 1, 1, 1], ["a", "a", "b", "b", "b"], reference="a",
                             strata=["s1", "s1", "s2", "s2", "s2"], ties=ties)
    term = model.terms[0]
    assert term.name == "armb" and all(math.isnan(getattr(term, name)) for name in NOT_ESTIMABLE)
    assert_close([model.loglik_null, model.loglik], [loglik, loglik], what="loglik")
    assert (model.likelihood_ratio.statistic, model.likelihood_ratio.df, model.likelihood_ratio.p) == (0.0, 0, 1.0)
    assert (model.score.statistic, model.score.df, model.score.p) == (0.0, 0, 1.0)
    assert math.isnan(model.wald.statistic) and model.wald.df == 0
    assert math.isnan(model.proportional_hazards.global_test.statistic)
    assert model.notes == ("armb takes one value among the subjects at risk at every event time within each stratum "
                           "(e.g. each stratum's subjects all in one arm): its coefficient is not estimable (R: NA)",)
    serialised = model.to_dict()
    assert serialised["terms"][0]["hr"] is None and serialised["wald"]["statistic"] is None
    assert json.loads(json.dumps(serialised, allow_nan=False)) == serialised


def test_a_covariate_flat_within_the_strata_is_na_and_the_others_are_fitted_as_r():
    """R: coxph(Surv(t, e) ~ a + x + strata(s)) — a is NA, x is fitted as without it; the three tests
    are on 1 df; cox.zph(fit, "km") tests x only (chisq 1.581528)."""
    arm = np.array([0.0] * 4 + [1.0] * 4)
    x = [0.5, 1.2, 0.3, 2.0, 1.1, 0.4, 1.7, 0.9]
    time, event, strata = [2, 5, 3, 8, 4, 6, 1, 7], [1, 1, 0, 1, 1, 0, 1, 1], ["s1"] * 4 + ["s2"] * 4
    model = cox_regression(time, event, {"armb": arm, "x": x}, strata=strata)
    flat, fitted = model.terms
    assert flat.name == "armb" and math.isnan(flat.coef) and "armb takes one value" in model.notes[0]
    assert_close([fitted.coef, fitted.se], [0.082076059870676191, 1.0433748459622094], what="x")
    assert_close([model.loglik_null, model.loglik], [-4.5643481914678361, -4.5612646992625603], what="loglik")
    assert_close([model.score.statistic, model.wald.statistic], [0.0061912405411602561, 0.0061880280607164431],
                 what="tests")
    assert model.score.df == model.wald.df == model.likelihood_ratio.df == 1
    zph = dict(model.proportional_hazards.terms)
    assert math.isnan(zph["armb"].statistic)
    assert_close([zph["x"].statistic, model.proportional_hazards.global_test.statistic], [1.581528] * 2, rel=1e-6,
                 abs_=5e-7, what="zph")
    without = cox_regression(time, event, {"x": x}, strata=strata)
    assert without.terms[0] == fitted


def test_a_separated_stratified_sample_is_not_estimable():
    """Regression: three rows that warned ("invalid value encountered in sqrt"): in stratum s2 the one
    event is in arm b while a is at risk, so the likelihood rises for ever in the b coefficient.
    R: coxph(Surv(t, e) ~ a + strata(s)) warns "Ran out of iterations and did not converge" and
    prints coef 21.2 (se 4e4); fit$loglik[1] = -0.69314718055994529, fit$score = 1 (1 df)."""
    model = cox_hazard_ratio([1, 11, 2], [1, 0, 0], ["b", "a", "b"], reference="a", strata=["s2", "s2", "s1"])
    assert all(math.isnan(getattr(model.terms[0], name)) for name in NOT_ESTIMABLE)
    assert "no maximum: the hazard ratio of armb tends to infinity" in model.notes[0]
    assert_close([model.loglik_null, model.score.statistic], [-0.69314718055994529, 1.0], what="score")
    assert model.score.df == 1 and math.isnan(model.likelihood_ratio.statistic) and math.isnan(model.wald.statistic)


def test_separation_along_a_combination_of_covariates_is_found():
    """Neither x nor y alone orders the events, x + y does: each event has the largest x + y at risk."""
    model = cox_regression([1, 2, 3, 4], [1, 1, 1, 1], {"x": [1.0, 3, 0, 2], "y": [3.0, 0, 2, -1]})
    assert all(math.isnan(term.coef) for term in model.terms)
    assert "coefficients of x, y diverge" in model.notes[0]
    estimable = cox_regression([1, 2, 3, 4], [1, 1, 1, 1], {"x": [1.0, 3, 0, 2], "y": [3.0, 0, 2, 5]})
    assert estimable.notes == () and all(math.isfinite(term.se) for term in estimable.terms)


def test_covariates_collinear_within_the_strata_are_refused():
    """y = x + 1 in one stratum and x + 3 in the other: not collinear overall, but the stratified
    likelihood cannot tell x from y."""
    with pytest.raises(InvalidInput, match="collinear within the strata"):
        cox_regression([1, 2, 3, 1, 2, 3], [1, 1, 0, 1, 0, 1], {"x": [1.0, 2, 3, 1, 2, 3], "y": [2.0, 3, 4, 4, 5, 6]},
                       strata=["s1"] * 3 + ["s2"] * 3)


small_stratified_trials = st.lists(
    st.tuples(st.integers(1, 12), st.integers(0, 1), st.sampled_from(["a", "b"]), st.sampled_from(["s1", "s2", "s3"])),
    min_size=3, max_size=12,
).filter(lambda rows: {r[2] for r in rows} == {"a", "b"} and any(r[1] for r in rows))


@settings(max_examples=60, deadline=None)
@given(small_stratified_trials, st.sampled_from(TIES))
def test_any_small_stratified_trial_gives_a_model_without_warnings(rows, ties):
    """Law (pytest turns warnings into errors): on any data with both arms and an event the model
    returns — a finite hazard ratio with a positive SE, or NaN with a note saying why."""
    time, event, arm, strata = (list(column) for column in zip(*rows, strict=True))
    model = cox_hazard_ratio(time, event, arm, reference="a", strata=strata, ties=ties)
    term = model.terms[0]
    if math.isnan(term.coef):
        assert model.notes and ("not estimable" in model.notes[-1] or "no maximum" in model.notes[-1])
    else:
        assert term.se > 0 and math.isfinite(term.hr) and model.wald.df == 1


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
    # Newton-Raphson stops when the log-likelihood ℓ stops rising, which it does only to within
    # rounding (~1e-13 of ℓ): that pins β down to about se·sqrt(2e-13·|ℓ|), a few 1e-6 when the
    # likelihood is flat (Hypothesis found 2.4e-8 apart at se 0.92, where 1e-7 relative was asked).
    accuracy = one.terms[0].se * math.sqrt(2e-13 * abs(one.loglik))
    assert math.isclose(one.terms[0].coef, -other.terms[0].coef, rel_tol=1e-7, abs_tol=max(accuracy, 1e-9))
    assert math.isclose(one.score.statistic, other.score.statistic, rel_tol=1e-9, abs_tol=1e-12)
    assert one.likelihood_ratio.statistic >= -1e-9
    np.testing.assert_allclose(one.loglik, other.loglik, rtol=1e-12)
