"""Calibration: the model reproduces the reference numbers its scenario names as targets.

- control-arm median time to CMV-DNA negativity within the range of reference/domain.md §4.3;
- IL-2 adverse-event rates near the 2020 randomized trial's (domain.md §5.2);
- ganciclovir cytopenias near the label's (domain.md §1.5).
The targets (low, high, source) are in each scenario file's ``calibration`` section.
"""

from __future__ import annotations

import numpy as np
import pytest
from lifelines import KaplanMeierFitter

from cmvtrial.simulation import adverse_events
from cmvtrial.simulation.cohort import simulate_cohort
from simulation_support import PROTOCOLS, design, scenario

PATIENTS_PER_ARM = 4000


@pytest.fixture(scope="module", params=[(p, n) for p in PROTOCOLS for n in ("default", "null")], ids=lambda x: "/".join(x))
def cohorts(request):
    protocol_id, name = request.param
    s, d = scenario(protocol_id, name), design(protocol_id, name)
    il2 = np.zeros((1, 2 * PATIENTS_PER_ARM), dtype=bool)
    il2[0, :PATIENTS_PER_ARM] = True
    outcome = simulate_cohort(np.random.default_rng(2024), s, d, il2)
    return s, d, outcome


def test_control_median_time_to_negativity_is_in_the_reference_range(cohorts):
    s, _d, outcome = cohorts
    control = ~outcome.il2[0]
    median = KaplanMeierFitter().fit(outcome.time[0][control], outcome.event[0][control]).median_survival_time_
    target = s.calibration.control_median_days_to_negativity
    assert target.low <= median <= target.high


def test_adverse_event_rates_are_near_their_sources(cohorts):
    s, d, outcome = cohorts
    rng = np.random.default_rng(7)
    population = s.population
    shape = outcome.il2.shape
    crcl = d.creatinine_clearance.ml_min(
        population.age_years.sample(rng, shape), population.weight_kg.sample(rng, shape),
        population.serum_creatinine_umol_per_l.sample(rng, shape), rng.random(shape) < population.female.value,
    )
    occurred = {
        name: adverse_events.gcv_cytopenia(rng, toxicity, crcl, outcome.end_of_treatment_day).occurred
        for name, toxicity in s.gcv_toxicity.items()
    }
    occurred |= {
        name: adverse_events.il2_reaction(rng, event, outcome.il2, outcome.end_of_treatment_day).occurred
        for name, event in s.il2_adverse_events.items()
    }
    assert s.calibration.event_rates
    for target in s.calibration.event_rates:
        arm = {"il2": outcome.il2, "control": ~outcome.il2, "both": np.ones(shape, bool)}[target.arm]
        rate = occurred[target.event][arm].mean()
        assert target.low <= rate <= target.high, (target.event, target.arm, rate)


def test_il2_reactions_do_not_happen_without_il2(cohorts):
    s, _d, outcome = cohorts
    rng = np.random.default_rng(8)
    for event in s.il2_adverse_events.values():
        if event.probability_control.value == 0:
            draws = adverse_events.il2_reaction(rng, event, outcome.il2, outcome.end_of_treatment_day)
            assert not draws.occurred[~outcome.il2].any()


def test_renal_impairment_raises_cytopenia_risk():
    toxicity = scenario("sle-cmv-il2").gcv_toxicity["neutropenia"]
    shape = (1, 20000)
    long_treatment = np.full(shape, 60)
    threshold = toxicity.renal_crcl_below_ml_min.value
    normal = adverse_events.gcv_cytopenia(np.random.default_rng(1), toxicity, np.full(shape, threshold + 40), long_treatment)
    impaired = adverse_events.gcv_cytopenia(np.random.default_rng(1), toxicity, np.full(shape, threshold - 10), long_treatment)
    assert impaired.occurred.mean() > normal.occurred.mean() + 0.03
