"""The report's figures: drawn from the results, text kept as text, reproducible, and no warning on
degenerate data (an empty arm, no week-12 value, no marker analysed)."""

from __future__ import annotations

import pandas as pd
import pytest
from report_support import make_trial_data

from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.analysis.figures import before_after_figure, forest_figure, km_figure, report_figures, trajectories_figure
from cmvtrial.analysis.report_results import build_results

LABELS = {"il2_gcv": "Low-dose IL-2 + ganciclovir", "gcv": "Ganciclovir alone"}


@pytest.fixture(scope="module")
def drawn():
    data = make_trial_data(n=24)
    datasets = derive_datasets(data)
    results = build_results(data, datasets=datasets)
    return results, datasets, report_figures(results, datasets)


def test_every_figure_of_the_report_is_drawn(drawn):
    _, _, figures = drawn
    assert set(figures) == {"consort", "km_duration_viremia", "trajectories_cmv_titer_change", "change_nk_change",
                            "change_immune_responses", "change_complement_levels", "forest"}
    for svg in figures.values():
        assert svg.startswith(b"<?xml") and b"<svg" in svg


def test_text_stays_text_in_the_svg(drawn):
    results, _, figures = drawn
    consort = figures["consort"].decode()
    assert f"Assessed for eligibility (n={results['consort']['assessed']})" in consort
    assert "Number at risk" in figures["km_duration_viremia"].decode()
    assert LABELS["gcv"] in figures["trajectories_cmv_titer_change"].decode()
    assert "Treg CD4+CD25+FOXP3+" in figures["forest"].decode()


def test_the_same_results_give_the_same_bytes(drawn):
    results, datasets, figures = drawn
    assert report_figures(results, datasets) == figures


def test_png_on_request(drawn):
    results, datasets, _ = drawn
    png = report_figures(results, datasets, fmt="png")
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in png.values())


def test_degenerate_inputs_draw_without_warnings():
    empty = pd.DataFrame({"USUBJID": [], "ARM": [], "ADY": [], "AVAL": [], "BASE": [], "CHG": []})
    assert b"<svg" in before_after_figure([("NK", empty)], ["il2_gcv", "gcv"], LABELS, visit="W12")
    assert b"<svg" in trajectories_figure(empty, [], ["il2_gcv", "gcv"], LABELS, lloq_log10=2.18, ylabel="log10")
    assert b"No marker could be analysed" in forest_figure([{"label": "NK", "ancova": {"error": "too few"}}],
                                                           treated="A", reference="B")
    one_point = {"n": 1, "events": 0, "curve": {"time": [5.0], "n_risk": [1], "n_event": [0], "n_censor": [1],
                                                "surv": [1.0], "std_err": [0.0], "lower": [None], "upper": [None]}}
    assert b"<svg" in km_figure({"gcv": one_point}, LABELS, xlabel="days", ylabel="S")
