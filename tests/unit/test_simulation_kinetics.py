"""The viral-load model: the closed form solves its ODEs, and IL-2 acts only through NK cells."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation import kinetics
from simulation_support import scenario


@pytest.fixture
def sle_scenario():
    return scenario("sle-cmv-il2")


def one_patient(**overrides) -> kinetics.PatientKinetics:
    values = {
        "log10_v0": np.array([4.2]),
        "growth_rate": np.array([0.2]),
        "loss_fast": np.array([1.1]),
        "efficacy": np.array([0.9]),
        "resistant": np.array([False]),
        "slow_fraction": np.array([0.08]),
        "loss_slow": np.array([0.2]),
        "nk_plateau": np.array([1.8]),
        "nk_share": 0.4,
        "rise_days": 12.0,
        "decay_days": 10.0,
    }
    values.update({k: (np.array([v]) if k not in ("nk_share", "rise_days", "decay_days") else v) for k, v in overrides.items()})
    return kinetics.PatientKinetics(**values)


def ode_log10_load(patient: kinetics.PatientKinetics, days: np.ndarray) -> np.ndarray:
    """Integrate the two infected-cell pools numerically (the model written as ODEs)."""
    eps, g = patient.efficacy[0], patient.growth_rate[0]
    losses = np.array([patient.loss_fast[0], patient.loss_slow[0]])

    def derivative(t, pools):
        nk = 1 + (patient.nk_plateau[0] - 1) * (1 - np.exp(-t / patient.rise_days))
        rates = losses * (1 + patient.nk_share * (nk - 1)) - (1 - eps) * (g + losses)
        return -rates * pools

    start = 10 ** patient.log10_v0[0] * np.array([1 - patient.slow_fraction[0], patient.slow_fraction[0]])
    solution = solve_ivp(derivative, (0, days.max()), start, t_eval=days, rtol=1e-11, atol=1e-12, method="LSODA")
    return np.log10(solution.y.sum(axis=0))


def test_closed_form_solves_the_odes():
    patient = one_patient()
    days = np.arange(0.0, 60.0, 3.0)
    closed = kinetics.log10_viral_load_curve(patient, days)[0]
    assert closed == pytest.approx(ode_log10_load(patient, days), abs=1e-6)


def test_fast_curve_matches_the_exact_formula():
    patient = one_patient()
    days = np.arange(0, 50)
    curve = kinetics.prepare_curve(patient, 60)
    fast = curve.at(days.astype(np.int32))
    exact = kinetics.log10_viral_load_curve(patient, days)[0]
    assert fast == pytest.approx(exact, abs=1e-4)  # float32


def test_without_nk_share_il2_changes_nothing():
    boosted, plain = one_patient(nk_share=0.0, nk_plateau=2.5), one_patient(nk_share=0.0, nk_plateau=1.0)
    days = np.arange(0, 40)
    assert kinetics.log10_viral_load_curve(boosted, days) == pytest.approx(kinetics.log10_viral_load_curve(plain, days))


@settings(max_examples=50, deadline=None)
@given(plateau=st.floats(1.0, 4.0), share=st.floats(0.0, 1.0), efficacy=st.floats(0.5, 0.99))
def test_more_nk_never_raises_the_load(plateau, share, efficacy):
    days = np.arange(0, 85, 7)
    more = kinetics.log10_viral_load_curve(one_patient(nk_plateau=plateau, nk_share=share, efficacy=efficacy), days)
    baseline = kinetics.log10_viral_load_curve(one_patient(nk_plateau=1.0, nk_share=share, efficacy=efficacy), days)
    assert np.all(more <= baseline + 1e-9)


def test_resistant_virus_can_rebound():
    """Low efficacy and fast growth: the slow pool's residual replication beats its loss (the 'hump')."""
    patient = one_patient(efficacy=0.5, growth_rate=0.6, nk_plateau=1.0)
    assert patient.second_phase_rate[0] < 0 < patient.first_phase_rate[0]
    load = kinetics.log10_viral_load_curve(patient, np.arange(0, 60))[0]
    assert load.argmin() not in (0, len(load) - 1)


def test_nk_rises_while_il2_is_given_and_wanes_after():
    patient = one_patient(nk_plateau=2.0)
    days = np.array([[0.0, 14.0, 28.0, 56.0]])
    continuing = kinetics.nk_fold(patient, days[0])
    stopped = kinetics.nk_fold(patient, days[0], il2_stop_day=np.array([14.0]))
    assert continuing[0] == 1 and np.all(np.diff(continuing) > 0) and continuing[-1] < 2.0
    assert stopped[1] == pytest.approx(continuing[1])
    assert stopped[3] < stopped[2] < stopped[1]


def test_every_other_day_dosing_gives_a_smaller_nk_plateau(sle_scenario):
    shape = (1, 2000)
    daily = kinetics.draw_patients(np.random.default_rng(0), sle_scenario.kinetics, np.full(shape, 4.0), np.ones(shape, bool), 1)
    alternate = kinetics.draw_patients(np.random.default_rng(0), sle_scenario.kinetics, np.full(shape, 4.0), np.ones(shape, bool), 2)
    assert np.all(alternate.nk_plateau <= daily.nk_plateau)
    assert np.median(alternate.nk_plateau) < np.median(daily.nk_plateau)


def test_unknown_dosing_interval_is_refused(sle_scenario):
    shape = (1, 3)
    with pytest.raises(InvalidInput) as raised:
        kinetics.draw_patients(np.random.default_rng(0), sle_scenario.kinetics, np.full(shape, 4.0), np.ones(shape, bool), 3)
    assert "every 3 day" in raised.value.message
