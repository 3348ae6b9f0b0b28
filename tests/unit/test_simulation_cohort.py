"""The vectorized visit loop of ``simulate_cohort`` against a patient-by-patient reading of the same visits.

The loop keeps a shrinking working set, in-place float32 arithmetic and 0/1 factors instead of
masks (it is most of a power run's time); here each patient's endpoints are recomputed plainly from
the visits it kept (``keep_visits=True``): time to negativity, censoring, and the decline line
(slope, samples, spread of days, residual sum of squares; a value below the LLOQ entering as the
protocol's fraction of it, as the analysis enters it).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cmvtrial.simulation.cohort import simulate_cohort
from simulation_support import design, scenario


def line(days: list[float], values: list[float]) -> tuple[float, int, float, float]:
    """(slope, samples, Σ(t − t̄)², residual sum of squares) by numpy.polyfit."""
    t, y = np.array(days), np.array(values)
    if len(set(days)) < 2:
        return np.nan, t.size, np.nan, np.nan
    fit = np.polyfit(t, y, 1)
    return fit[0], t.size, float(np.sum((t - t.mean()) ** 2)), float(np.sum((y - np.polyval(fit, t)) ** 2))


def reread(outcome, lloq: float, below: float, needed: int, patient: tuple[int, int]) -> tuple[bool, int, tuple]:
    """(event, time, line) of one patient from its kept visits."""
    days, values, seen = (getattr(outcome, name)[patient] for name in ("visit_days", "visit_log10", "visit_taken"))
    samples_t, samples_y = [0.0], [float(outcome.baseline_log10[patient])]
    run, run_start, last_seen = 0, 0, 0
    for day, value, taken in zip(days, values, seen, strict=True):
        if not taken:
            continue
        last_seen = int(day)
        samples_t.append(float(day))
        samples_y.append(below if value < lloq else float(value))
        if value < lloq:
            run_start = int(day) if run == 0 else run_start
            run += 1
            if run >= needed:
                return True, run_start, line(samples_t, samples_y)
        else:
            run = 0
    return False, last_seen, line(samples_t, samples_y)


@pytest.mark.parametrize("needed", [1, 2])
def test_endpoints_equal_a_patient_by_patient_reading_of_the_visits(needed):
    s = scenario("sle-cmv-il2")
    d = dataclasses.replace(design("sle-cmv-il2"), consecutive_negatives=needed)
    il2 = np.zeros((40, 30), dtype=bool)
    il2[:, ::2] = True
    outcome = simulate_cohort(np.random.default_rng(17), s, d, il2, keep_visits=True)
    lloq = float(np.float32(np.log10(d.lloq_copies_per_ml)))
    below = np.log10(d.below_lloq_fraction_of_lloq * d.lloq_copies_per_ml)
    assert outcome.event.any() and not outcome.event.all()
    for patient in np.ndindex(il2.shape):
        event, time, (slope, samples, day_ss, residual_ss) = reread(outcome, lloq, below, needed, patient)
        assert outcome.event[patient] == event, patient
        assert outcome.time[patient] == time, patient
        assert outcome.slope_samples[patient] == samples, patient
        if np.isnan(slope):
            assert np.isnan(outcome.slope_log10_per_day[patient])
        else:
            assert outcome.slope_log10_per_day[patient] == pytest.approx(slope, abs=2e-4), patient
            assert outcome.slope_day_ss[patient] == pytest.approx(day_ss, rel=1e-12), patient  # whole days
            # float32 running sums: Σy² loses ~1e-5 of a few hundred
            assert outcome.slope_residual_ss[patient] == pytest.approx(residual_ss, abs=3e-4), patient


def test_keeping_the_visits_changes_no_endpoint():
    """The power path (nothing kept) and the demo path (every visit kept) draw the same patients."""
    s, d = scenario("nct04225780"), design("nct04225780")
    il2 = np.zeros((64, 20), dtype=bool)
    il2[:, :10] = True
    plain = simulate_cohort(np.random.default_rng(3), s, d, il2)
    kept = simulate_cohort(np.random.default_rng(3), s, d, il2, keep_visits=True)
    for name in ("time", "event", "slope_log10_per_day", "slope_samples", "slope_day_ss", "slope_residual_ss",
                 "nk_week12", "week12_day", "end_of_treatment_day"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(kept, name))
