"""ANCOVA of change at week 12 per marker, adjusted means and the family's Holm adjustment, against R.

Reference: ``Rscript tests/reference/ancova/make_reference.R`` (R 4.2.2, emmeans 1.8.4):
``lm(change ~ arm + baseline + strata)`` with arm releveled to "control", ``emmeans(fit, ~ arm)``,
``p.adjust(p, method)``. Asserted to 1e-6 relative (observed: 1e-11).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from r_reference import assert_close, load, table

from cmvtrial.analysis.ancova import Marker, adjust_p_values, ancova, ancova_family
from cmvtrial.errors import InvalidInput

REFERENCE = load("ancova")
MARKERS = REFERENCE["markers"]


def markers_with_change() -> pd.DataFrame:
    frame = table("ancova", "markers.csv")
    for marker in MARKERS:
        frame[f"change_{marker}"] = frame[f"week12_{marker}"] - frame[f"baseline_{marker}"]
    return frame


@pytest.fixture(scope="module")
def family():
    return ancova_family(
        markers_with_change(),
        {marker: (f"change_{marker}", f"baseline_{marker}") for marker in MARKERS},
        arm="arm",
        strata="strata",
        reference="control",
    )


def check_against_r(result, expected):
    assert_close(
        [result.estimate, result.se, result.t, result.p, result.df, result.lower, result.upper, result.sigma],
        [expected[k] for k in ["estimate", "se", "t", "p", "df", "lower", "upper", "sigma"]],
        what="arm effect",
    )
    assert_close([result.baseline_coef, result.baseline_se], [expected["baseline_coef"], expected["baseline_se"]], what="baseline")
    assert [mean.arm for mean in result.adjusted_means] == expected["emmean_arm"]
    for field, theirs in [("estimate", "emmean"), ("se", "emmean_se"), ("lower", "emmean_lower"), ("upper", "emmean_upper")]:
        assert_close([getattr(mean, field) for mean in result.adjusted_means], expected[theirs], what=field)
    assert list(result.n_used.values()) == expected["n_used"]


@pytest.mark.parametrize("marker", MARKERS)
def test_ancova_equals_lm_and_emmeans(family, marker):
    """R: fit <- lm(change ~ arm + baseline + strata, data); summary(fit); confint(fit);
    emmeans(fit, ~ arm)."""
    check_against_r(family[marker], REFERENCE["with_strata"][marker])
    assert sum(family[marker].n_missing.values()) == 4  # the script blanks 4 week-12 values


def test_ancova_without_strata_equals_lm():
    """R: lm(change ~ arm + baseline, data); emmeans(fit, ~ arm)."""
    result = ancova(
        markers_with_change(), outcome="change_nk_count", arm="arm", baseline="baseline_nk_count", reference="control"
    )
    check_against_r(result, REFERENCE["without_strata"]["nk_count"])
    assert result.r_equivalent == "lm(change ~ arm + baseline_nk_count); emmeans(fit, ~ arm)"


def test_holm_across_the_family_equals_p_adjust(family):
    """R: p.adjust(p, "holm") over the seven markers' arm p-values."""
    assert_close([result.p_adjusted for result in family.results], REFERENCE["holm"], what="holm")
    assert all(result.adjustment == "holm" for result in family.results)


@pytest.mark.parametrize("method", ["bonferroni", "hochberg", "BH"])
def test_other_adjustments_equal_p_adjust(family, method):
    """R: p.adjust(p, method)."""
    assert_close(adjust_p_values([result.p for result in family.results], method), REFERENCE[method], what=method)


def test_reference_level_is_explicit_whatever_the_label_order():
    """statistics.md item 6: "SLE" sorts before "other" in patsy but not in R; the arm effect and
    adjusted means do not depend on it, and the reference arm is the one named."""
    frame = markers_with_change()
    renamed = frame.assign(strata=frame.strata.map({"SLE": "zz-SLE", "other": "aa-other"}))
    one = ancova(frame, outcome="change_nk_pct", arm="arm", baseline="baseline_nk_pct", strata="strata", reference="control")
    two = ancova(renamed, outcome="change_nk_pct", arm="arm", baseline="baseline_nk_pct", strata="strata", reference="control")
    assert one.estimate == pytest.approx(two.estimate, rel=1e-12)
    assert [m.estimate for m in one.adjusted_means] == pytest.approx([m.estimate for m in two.adjusted_means], rel=1e-12)
    flipped = ancova(frame, outcome="change_nk_pct", arm="arm", baseline="baseline_nk_pct", reference="il2")
    plain = ancova(frame, outcome="change_nk_pct", arm="arm", baseline="baseline_nk_pct", reference="control")
    assert flipped.estimate == pytest.approx(-plain.estimate, rel=1e-12)


def test_family_accepts_marker_objects_and_serialises():
    frame = markers_with_change()
    result = ancova_family(
        frame, [Marker("NK cells", "change_nk_count", "baseline_nk_count")], arm="arm", reference="control"
    )
    out = result.to_dict()
    assert out["results"][0]["outcome"] == "NK cells"
    assert out["results"][0]["p_adjusted"] == pytest.approx(out["results"][0]["p"])  # a family of one


def test_bad_input_is_refused():
    frame = markers_with_change()
    with pytest.raises(InvalidInput, match="column 'change_x'"):
        ancova(frame, outcome="change_x", arm="arm")
    with pytest.raises(InvalidInput, match="single value"):
        ancova(frame.assign(arm="il2"), outcome="change_nk_count", arm="arm")
    with pytest.raises(InvalidInput, match="no complete values"):
        blank = frame.assign(change_nk_count=np.where(frame.arm == "il2", np.nan, frame.change_nk_count))
        ancova(blank, outcome="change_nk_count", arm="arm", reference="control")
    with pytest.raises(InvalidInput, match="too few complete values"):
        ancova(frame.head(3).assign(arm=["a", "b", "a"]), outcome="change_nk_count", arm="arm", baseline="baseline_nk_count", strata="strata")
    with pytest.raises(InvalidInput, match="must be numeric"):
        ancova(frame.assign(change_nk_count="high"), outcome="change_nk_count", arm="arm")
    with pytest.raises(InvalidInput, match="unknown adjustment"):
        adjust_p_values([0.1, 0.2], "sidak")
    with pytest.raises(InvalidInput, match="between 0 and 1"):
        adjust_p_values([0.1, 1.2])
    with pytest.raises(InvalidInput, match="no markers"):
        ancova_family(frame, [], arm="arm")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from(["holm", "bonferroni", "hochberg", "BH"]))
def test_adjusted_p_values_are_p_values_no_smaller_than_raw(p, method):
    adjusted = adjust_p_values(p, method)
    assert all(raw - 1e-15 <= adj <= 1.0 for raw, adj in zip(p, adjusted, strict=True))


def test_adjustments_agree_with_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.04, 0.2, 0.003, 0.7]
    for ours, theirs in [("holm", "holm"), ("hochberg", "simes-hochberg"), ("BH", "fdr_bh"), ("bonferroni", "bonferroni")]:
        np.testing.assert_allclose(adjust_p_values(p, ours), multipletests(p, method=theirs)[1], rtol=1e-12)
