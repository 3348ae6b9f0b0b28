"""The power's decline-rate test against the analysis's mixed model, on the same simulated trials.

The analysis compares CMV-DNA decline rates with a linear mixed model (random intercept and slope,
REML; ``analysis/mixed_model.py``, R ``nlme::lme``). The power cannot fit that on hundreds of
thousands of trials (about 50 ms a trial here), so it runs a two-stage stand-in, batched: each
patient's least-squares slope of log10 CMV-DNA, then Welch's t-test between the arms. Here the
mixed model is fitted, trial by trial, by the analysis code to the rows the analysis would use
(baseline and every sample up to the end of treatment, a result below the LLOQ entered as the
protocol's fraction of it) and its rejections are compared with the stand-in's.

What this shows (docs/simulation.md, "The decline-rate test"): under the ``null`` scenario both
reject at alpha, and the same trials; under ``default`` the mixed model rejects more often (about
0.36 against 0.20 at 50 per arm for nct04225780), so the power reported for ``cmv_decline`` is a
lower bound for the analysis's test. The below-LLOQ entry does not explain the gap (slopes with
half the LLOQ give the same Welch power); the weighting of patients does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cmvtrial.analysis.mixed_model import fit_decline_model
from cmvtrial.simulation import batched_tests
from cmvtrial.simulation.cohort import simulate_cohort
from simulation_support import design, protocol, scenario

PROTOCOL, PER_ARM, TRIALS = "nct04225780", 50, 120


def rejections(scenario_name: str, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(stand-in rejects, mixed model rejects) per trial, and alpha."""
    s, d = scenario(PROTOCOL, scenario_name), design(PROTOCOL, scenario_name)
    alpha = s.power.alpha.value
    il2 = np.zeros((TRIALS, 2 * PER_ARM), dtype=bool)
    il2[:, :PER_ARM] = True
    outcome = simulate_cohort(np.random.default_rng(seed), s, d, il2, keep_visits=True)
    stand_in = batched_tests.welch(outcome.slope_log10_per_day, il2).p_value < alpha

    lloq = np.log10(d.lloq_copies_per_ml)
    below = np.log10(protocol(PROTOCOL).analysis.below_lloq_fraction_of_lloq * d.lloq_copies_per_ml)
    patients = np.arange(2 * PER_ARM)
    mixed = np.zeros(TRIALS, dtype=bool)
    for trial in range(TRIALS):
        days = outcome.visit_days[trial]
        in_period = outcome.visit_taken[trial] & (days <= outcome.end_of_treatment_day[trial][:, None])
        who, visit = np.nonzero(in_period)
        measured = outcome.visit_log10[trial][who, visit]
        subject = np.concatenate([patients, who])
        rows = pd.DataFrame({
            "subject": subject,
            "day": np.concatenate([np.zeros(patients.size), days[who, visit]]),
            "value": np.concatenate([outcome.baseline_log10[trial], np.where(measured < lloq, below, measured)]),
            "arm": np.where(il2[trial][subject], "il2", "control"),
        })
        model = fit_decline_model(rows, value="value", day="day", arm="arm", subject="subject", reference="control")
        mixed[trial] = model.slope_difference.p < alpha
    return stand_in, mixed, alpha


def paired_se(a: np.ndarray, b: np.ndarray) -> float:
    """Monte-Carlo standard error of the difference of two rejection rates on the same trials."""
    difference = a.astype(float) - b.astype(float)
    return float(difference.std(ddof=1) / np.sqrt(difference.size)) if difference.any() else 0.0


def test_under_the_null_both_tests_reject_at_alpha_and_agree():
    stand_in, mixed, alpha = rejections("null", seed=31)
    se_alpha = np.sqrt(alpha * (1 - alpha) / TRIALS)
    assert abs(stand_in.mean() - alpha) < 3.5 * se_alpha
    assert abs(mixed.mean() - alpha) < 3.5 * se_alpha
    assert abs(stand_in.mean() - mixed.mean()) <= 3 * paired_se(stand_in, mixed) + 1 / TRIALS


def test_under_the_default_scenario_the_stand_in_understates_the_mixed_model():
    """A known gap, not agreement: the reported cmv_decline power is a lower bound (docs/simulation.md)."""
    stand_in, mixed, _ = rejections("default", seed=32)
    assert mixed.mean() - stand_in.mean() > 2 * paired_se(stand_in, mixed)
    assert mixed.mean() == pytest.approx(0.36, abs=0.15) and stand_in.mean() == pytest.approx(0.2, abs=0.12)
