"""The two-arm time-to-event analysis behind ``cmvtrial analyze tte``: JSON shape, R values, refusals.

Reference: ``Rscript tests/reference/survival/make_reference.R`` (survfit / survdiff / coxph with
R's defaults, Efron ties); the same CSV files are read here. Asserted to 1e-6 relative.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from r_reference import assert_close, load, table

from cmvtrial.analysis.time_to_event import analyze_time_to_event
from cmvtrial.errors import InvalidInput


@pytest.mark.parametrize(("name", "stratified", "km_ci"), [("trial", True, "log"), ("lung", False, "log-log"), ("ovarian", True, "plain")])
def test_analysis_equals_r_in_the_documented_json_shape(name, stratified, km_ci):
    """R: survfit(..., conf.type = km_ci) medians, survdiff(... [+ strata(strata)]),
    coxph(Surv(time, event) ~ arm [+ strata(strata)]) — arm releveled to the reference."""
    ref = load("survival")[name]
    result = analyze_time_to_event(
        table("survival", f"{name}.csv"),
        time="time",
        event="event",
        arm="arm",
        strata="strata" if stratified else None,
        reference=ref["reference"],
        km_ci=km_ci,
    )
    out = json.loads(json.dumps(result.to_json()))
    assert set(out) == {"km", "logrank", "cox"}
    assert list(out["km"]) == ref["arms"]
    for arm, summary in out["km"].items():
        expected = ref["km"][km_ci][arm]
        assert (summary["n"], summary["events"]) == (expected["n"], expected["events"])
        assert_close([summary["median"], *summary["median_ci"]], [expected["median"], expected["lcl"], expected["ucl"]], what=arm)
    logrank = ref["logrank_stratified" if stratified else "logrank"]
    assert_close([out["logrank"]["chisq"], out["logrank"]["p"]], [logrank["chisq"], logrank["p"]], what="logrank")
    cox = ref["cox"]["efron_stratified" if stratified else "efron"]
    assert_close(
        [out["cox"]["coef"], out["cox"]["se"], out["cox"]["hr"], *out["cox"]["hr_ci"], out["cox"]["p"]],
        [cox["coef"], cox["se"], cox["hr"], cox["hr_lower"], cox["hr_upper"], cox["p"]],
        what="cox",
    )


def test_median_not_reached_is_null_in_json():
    out = analyze_time_to_event(
        table("survival", "ovarian.csv"), time="time", event="event", arm="arm", reference="A"
    ).to_json()
    assert out["km"]["B"]["median"] is None and out["km"]["A"]["median_ci"][1] is None


def test_default_reference_is_the_first_label_in_sorted_order():
    result = analyze_time_to_event(table("survival", "trial.csv"), time="time", event="event", arm="arm")
    assert (result.reference, result.treated) == ("control", "il2")


GOOD = pd.DataFrame({"t": [3, 5, 8, 2, 9, 4], "e": [1, 0, 1, 1, 1, 0], "arm": list("aabbab"), "s": list("xyxyxy")})


@pytest.mark.parametrize(
    ("change", "options", "message"),
    [
        ({}, {"time": "days"}, "column 'days' is not in the table"),
        ({"t": [3, "x", 8, 2, 9, 4]}, {}, "t must be numeric; row 2"),
        ({"t": [3, -5, 8, 2, 9, 4]}, {}, "t must not be negative; row 2"),
        ({"e": [1, 2, 1, 1, 1, 0]}, {}, r"e must be 0 \(censored\) or 1 \(event\); row 2"),
        ({"arm": list("aaaaaa")}, {}, "single value"),
        ({"arm": list("abcabc")}, {}, "3 values"),
        ({}, {"km_ci": "arcsin"}, "unknown --km-ci"),
        ({}, {"reference": "z"}, "reference 'z'"),
        ({}, {"strata": "site"}, "column 'site'"),
    ],
)
def test_bad_input_is_refused_with_its_reason(change, options, message):
    frame = GOOD.assign(**change)
    arguments = {"time": "t", "event": "e", "arm": "arm", **options}
    with pytest.raises(InvalidInput, match=message) as raised:
        analyze_time_to_event(frame, **arguments)
    assert raised.value.exit_code == 2
