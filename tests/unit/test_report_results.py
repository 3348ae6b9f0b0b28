"""The report's numbers: every statistic of the results dict against R on the same datasets.

Reference: ``tests/reference/report/`` — the fixture trial of ``report_support.py`` exported as
ADSL/ADTTE/ADLB CSV (``make_datasets.py``) and analysed by R (``make_reference.R``):
``survfit``/``survdiff``/``coxph``/``cox.zph`` (survival), ``lme`` (nlme), ``lm``, ``p.adjust``,
``wilcox.test``. Asserted to 1e-6 relative.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from r_reference import REFERENCE, assert_close, load
from report_support import make_trial_data

from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.analysis.report_results import RESULTS_SCHEMA, build_results, report_steps
from cmvtrial.errors import InvalidInput

TOP_KEYS = {"schema", "trial", "arms", "reference_arm", "treated_arm", "plan", "populations", "consort", "baseline",
            "endpoints", "other_parameters", "safety", "data_quality", "methods"}


@pytest.fixture(scope="module")
def data():
    return make_trial_data()


@pytest.fixture(scope="module")
def datasets(data):
    return derive_datasets(data)


@pytest.fixture(scope="module")
def results(data, datasets):
    return build_results(data, datasets=datasets)


def endpoint(results, endpoint_id):
    return next(e for e in results["endpoints"] if e["id"] == endpoint_id)["result"]


def test_the_fixture_datasets_are_what_the_derivations_give(datasets):
    """The CSV files R analysed are exactly today's derivations of the fixture trial."""
    for name, frame in (("ADSL", datasets.adsl), ("ADTTE", datasets.adtte), ("ADLB", datasets.adlb)):
        committed = pd.read_csv(REFERENCE / "report" / f"{name}.csv", keep_default_na=False, dtype=str)
        ours = pd.read_csv(
            __import__("io").StringIO(frame.to_csv(index=False, date_format="%Y-%m-%d")), keep_default_na=False, dtype=str
        )
        pd.testing.assert_frame_equal(ours, committed, obj=name)


def test_results_are_plain_json_with_the_documented_keys(results):
    assert set(results) == TOP_KEYS
    assert results["schema"] == RESULTS_SCHEMA
    assert json.loads(json.dumps(results, allow_nan=False)) == results
    assert [e["id"] for e in results["endpoints"]] == [
        "duration_viremia", "nk_change", "cmv_titer_change", "immune_responses", "complement_levels", "adverse_events"]
    assert all("error" not in e["result"] for e in results["endpoints"])


def test_duration_of_viremia_equals_r(results):
    """R: survfit(Surv(AVAL, EVENT) ~ 1, conf.type = "log") per arm, summary(fit, times), survmean;
    survdiff(... ~ arm + strata(STRATUM)); coxph(... ~ arm + strata(STRATUM)); cox.zph(fit, "km")."""
    ref = load("report")["tte"]
    result = endpoint(results, "duration_viremia")
    assert result["stratified"] and result["strata"] == ["site=PKUPH", "site=SITE02", "site=SITE03"]
    for arm, expected in ref["km"].items():
        km = result["summary"]["km"][arm]
        assert (km["n"], km["events"]) == (expected["n"], expected["events"])
        assert_close([km["median"], *km["median_ci"]], [expected["median"], expected["lcl"], expected["ucl"]], what=arm)
        rows = result["survival_at"][arm]
        assert [row["time"] for row in rows] == [14, 28, 56, 84]
        assert_close([row["surv"] for row in rows], expected["at_surv"], what=f"{arm} S(t)")
        assert_close([row["n_risk"] for row in rows], expected["at_n_risk"], what=f"{arm} at risk")
        assert_close([row["lower"] for row in rows], expected["at_lower"], what=f"{arm} lower")
        assert_close([row["upper"] for row in rows], expected["at_upper"], what=f"{arm} upper")
    rmst = result["rmst"]
    assert_close([rmst["treated_rmst"]["estimate"], rmst["reference_rmst"]["estimate"]],
                 [ref["km"]["il2_gcv"]["rmean"], ref["km"]["gcv"]["rmean"]], what="rmean")
    assert_close([rmst["difference"], rmst["difference_se"], rmst["difference_p"]],
                 [ref["rmst"]["difference"], ref["rmst"]["difference_se"], ref["rmst"]["difference_p"]], what="rmst")
    assert_close([result["logrank"]["chisq"], result["logrank"]["p"]], [ref["logrank"]["chisq"], ref["logrank"]["p"]])
    term = result["cox"]["terms"][0]
    cox = ref["cox"]
    assert_close([term["coef"], term["se"], term["hr"], term["hr_lower"], term["hr_upper"], term["p"]],
                 [cox["coef"], cox["se"], cox["hr"], cox["lower"], cox["upper"], cox["p"]], what="cox")
    ph = result["cox"]["proportional_hazards"]["global"]
    assert_close([ph["statistic"], ph["p"]], [cox["zph_chisq"], cox["zph_p"]], what="cox.zph")


def test_decline_of_cmv_titers_equals_nlme(results):
    """R: lme(AVAL ~ ADY * arm, random = ~ ADY | USUBJID, method = "REML") on baseline..end of treatment."""
    ref = load("report")["decline"]
    model = endpoint(results, "cmv_titer_change")["model"]
    assert model["n_obs"] == ref["n_obs"]
    fixed = model["fixed"]
    for ours, theirs in (("estimate", "coef"), ("se", "se"), ("df", "df"), ("p", "p"), ("lower", "lower"), ("upper", "upper")):
        assert_close([effect[ours] for effect in fixed], ref[theirs], what=theirs)
    assert model["slope_difference"]["estimate"] == pytest.approx(ref["coef"][3], rel=1e-6)


@pytest.mark.parametrize("family", ["nk_change", "immune_responses", "complement_levels"])
def test_change_from_baseline_equals_r(results, family):
    """R: lm(CHG ~ arm + BASE + STRATUM) per marker, p.adjust(p, "holm") across the family,
    wilcox.test(x, y, conf.int = TRUE) on the change."""
    ref = load("report")["change"][family]
    markers = endpoint(results, family)["markers"]
    assert [m["paramcd"] for m in markers] == list(ref)
    for marker in markers:
        expected = ref[marker["paramcd"]]
        fit = marker["ancova"]
        assert_close([fit["estimate"], fit["se"], fit["p"], fit["lower"], fit["upper"], fit["p_adjusted"]],
                     [expected[k] for k in ("estimate", "se", "p", "lower", "upper", "p_adjusted")], what=marker["paramcd"])
        assert sum(fit["n_used"].values()) == expected["n_used"]
        assert_close([marker["wilcoxon"]["p"], marker["wilcoxon"]["estimate"]],
                     [expected["wilcoxon_p"], expected["wilcoxon_estimate"]], what=f"{marker['paramcd']} wilcoxon")


def test_baseline_table_equals_r_summaries(results):
    """R: mean, sd, quantile(type 7) of AGE by arm."""
    ref = load("report")["age"]
    row = next(r for r in results["baseline"]["rows"] if r["variable"] == "AGE")
    for arm, expected in ref.items():
        stats = row["values"][arm]
        assert_close([stats[k] for k in ("mean", "sd", "q1", "median", "q3")],
                     [expected[k] for k in ("mean", "sd", "q1", "median", "q3")], what=arm)


def test_consort_counts_add_up(results):
    consort = results["consort"]
    assert consort["assessed"] == 80 and consort["randomized"] == 60
    assert consort["excluded"] == consort["not_eligible"] + consort["declined_consent"] + consort["other_reasons"] == 20
    assert consort["not_eligible_by_criterion"]["INC2"]["n"] == 10
    assert consort["not_eligible_by_criterion"]["EXC4b"]["text"].startswith("Renal insufficiency")
    assert sum(a["allocated"] for a in consort["allocation"].values()) == 60
    assert consort["allocation"]["gcv"]["did_not_receive"] == 1  # S008 was never dosed
    follow = consort["follow_up"]
    assert sum(f["discontinued"] + f["completed"] + f["ongoing"] for f in follow.values()) == 60


def test_populations_and_the_safety_tables(results):
    populations = results["populations"]
    assert populations["itt"]["total"] == 60
    assert populations["safety"]["n"] == {"il2_gcv": 30, "gcv": 29}
    assert populations["pp_exclusions"] == {"PP1": 1, "PP2": 1, "PP3": 2}
    safety = results["safety"]
    assert safety["n"] == {"il2_gcv": 30, "gcv": 29}
    overview = {row["category"]: row for row in safety["overview"]}
    assert overview["Serious"]["gcv"]["subjects"] == 1
    assert len(safety["serious"]) == 1 and len(safety["dose_action"]) == 1
    assert safety["dose_action"][0]["action_taken"] == {"ganciclovir": "DRUG INTERRUPTED"}
    neutrophils = next(lab for lab in safety["lab_shifts"] if lab["term"] == "Neutrophil count decreased")
    counted = sum(n for arm in neutrophils["shift"].values() for row in arm.values() for n in row.values())
    assert counted == 59  # every subject of the safety population, once
    assert results["data_quality"] == {"data_cutoff": results["trial"]["data_cutoff"], "open_queries": 3,
                                       "answered_queries": 1, "unsigned_visits": 2, "notes": []}


def test_other_populations_change_the_analysed_subjects(data, datasets):
    pp = build_results(data, population="pp", datasets=datasets)
    safety = build_results(data, population="safety", datasets=datasets)
    assert sum(pp["baseline"]["n"][arm] for arm in ("il2_gcv", "gcv")) == 57
    assert endpoint(safety, "duration_viremia")["summary"]["km"]["gcv"]["n"] == 29
    assert pp["trial"]["population_label"].startswith("Per-protocol")


def test_progress_is_reported_step_by_step(data, datasets):
    seen = []
    build_results(data, datasets=datasets, progress=seen.append)
    assert seen == report_steps(data)


def test_an_analysis_that_cannot_be_done_is_reported_not_raised(data):
    """A population with one arm empty: each endpoint says why, the report still builds."""
    one_arm = type(data).create(
        protocol=data.protocol, data_cutoff=data.data_cutoff,
        subjects=[s for s in data.subjects if s.arm_randomized == "gcv"],
        observations=data.observations[data.observations["subject_id"].isin(
            [s.subject_id for s in data.subjects if s.arm_randomized == "gcv"])],
        source="one arm",
    )
    results = build_results(one_arm)
    assert "single value" in endpoint(results, "duration_viremia")["error"]
    assert "error" in endpoint(results, "nk_change")["markers"][0]["ancova"]


def test_unknown_population_is_refused(data):
    with pytest.raises(InvalidInput, match="unknown population 'all'"):
        build_results(data, population="all")
