"""CMV viral load under ganciclovir, and the NK-cell response to low-dose IL-2 that speeds clearance.

The model (reference/domain.md §4.3, with the second phase §4.3's consistency check asks for):

    infected cells in two pools, fast (loss delta) and slow (loss delta2, a fraction s of the load);
    each pool grows at g off drug, so its replication is r = g + loss, of which ganciclovir leaves
    (1 - eps) r;
    NK-mediated killing scales each pool's loss:  delta(t) = delta * (1 + theta * (E(t) - 1))
    E(t) = NK count relative to baseline = 1 + (F - 1) * (1 - exp(-t / tau_rise)) while IL-2 is given

    V(t) / V0 = (1 - s) exp(-L_fast(t)) + s exp(-L_slow(t))
    L_pool(t) = loss * (t + theta (F - 1) G(t)) - (1 - eps)(g + loss) t,   G(t) = t - tau (1 - exp(-t/tau))

so without IL-2 each pool declines at eps * loss - (1 - eps) * g per day.

Why this shape:
- ``g`` (growth off drug, Lodding 2015) and ``delta`` (infected-cell loss, Rose 2017) give the
  replication rate; ganciclovir blocks a fraction ``eps`` of it (Emery & Griffiths 2000: 0.915
  against wild type, 0.62 against resistant virus). With resistant virus and fast growth the slow
  pool's residual replication can exceed its loss: the load falls, then rises again — the "hump"
  of Rose 2017 — and otherwise it clears too slowly to turn negative in follow-up: the
  non-responders the seed records mention.
- One fast phase alone clears 3.5–4 log10 in 5–13 days, shorter than the ~19 ± 13 days observed
  (domain.md §4.3 consistency check); the slow pool supplies the second phase, calibrated so the
  control arm's median time to negativity lands in the reference range (scenario ``calibration``).
- IL-2 acts only through NK cells (domain.md §5.4): their level rises gradually to a plateau ``F``
  that is smaller for every-other-day dosing, and NK killing is a share ``theta`` of infected-cell
  loss (Mayer 2016: immune killing shortens infected-cell half-life by 44%). ``theta = 0`` is the
  null scenario: NK cells still rise, the virus does not notice.

Everything is closed form, so a viral load at any day is a few array operations: the model runs
over ``(trials, patients)`` arrays, or ``(patients,)`` for one trial, without an ODE solver.
After treatment ends the virus is assumed to stay controlled (the load keeps following the
treated curve); relapse is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation.scenario import Kinetics

LN10 = np.log(10.0)


@dataclass(frozen=True)
class PatientKinetics:
    """Per-patient parameters, each an array of the cohort's shape (``theta`` and the time
    constants are shared)."""

    log10_v0: NDArray[np.float64]
    growth_rate: NDArray[np.float64]
    loss_fast: NDArray[np.float64]
    efficacy: NDArray[np.float64]
    resistant: NDArray[np.bool_]
    slow_fraction: NDArray[np.float64]
    loss_slow: NDArray[np.float64]
    nk_plateau: NDArray[np.float64]
    nk_share: float
    rise_days: float
    decay_days: float

    def residual_replication(self, loss: NDArray[np.float64]) -> NDArray[np.float64]:
        """(1 - eps)(g + loss): what ganciclovir leaves of a pool's replication (per day)."""
        return (1.0 - self.efficacy) * (self.growth_rate + loss)

    @property
    def first_phase_rate(self) -> NDArray[np.float64]:
        """Net decline rate of the fast pool without IL-2 (per day)."""
        return self.loss_fast - self.residual_replication(self.loss_fast)

    @property
    def second_phase_rate(self) -> NDArray[np.float64]:
        """Net decline rate of the slow pool without IL-2 (per day); negative means rebound."""
        return self.loss_slow - self.residual_replication(self.loss_slow)


def il2_relative_effect(kinetics: Kinetics, interval_days: int) -> float:
    """How much of the daily-dosing NK rise the protocol's IL-2 interval gives (scenario value)."""
    entry = kinetics.nk.relative_effect_by_interval_days.get(interval_days)
    if entry is None:
        known = ", ".join(str(days) for days in sorted(kinetics.nk.relative_effect_by_interval_days))
        raise InvalidInput(
            f"the scenario gives no NK response for IL-2 every {interval_days} day(s) (it has: {known})",
            field="kinetics.nk.relative_effect_by_interval_days",
            value=interval_days,
        )
    return entry.value


def draw_patients(
    rng: np.random.Generator,
    kinetics: Kinetics,
    log10_v0: NDArray[np.float64],
    il2: NDArray[np.bool_],
    il2_interval_days: int,
) -> PatientKinetics:
    """Draw every patient's kinetic parameters; ``il2`` marks patients in the IL-2 arm.

    The draws happen in a fixed order for a given shape, so a seed always gives the same patients.
    """
    shape = np.shape(log10_v0)
    relative = il2_relative_effect(kinetics, il2_interval_days)
    resistant = rng.random(shape) < kinetics.resistant_fraction.value
    efficacy = kinetics.gcv_efficacy.sample(rng, shape)
    which = np.flatnonzero(resistant)
    efficacy.reshape(-1)[which] = kinetics.gcv_efficacy_resistant.sample(rng, which.size)
    daily_fold = kinetics.nk.fold_at_plateau_daily_dosing.sample(rng, shape)
    control_fold = kinetics.nk.control_fold.sample(rng, shape)
    # control_fold + (daily_fold - 1) * relative on IL-2, control_fold otherwise (a 0/1 factor: exact).
    nk_plateau = daily_fold
    nk_plateau -= 1.0
    nk_plateau *= relative
    nk_plateau *= np.asarray(il2, dtype=bool)
    nk_plateau += control_fold
    return PatientKinetics(
        log10_v0=np.asarray(log10_v0, dtype=np.float64),
        growth_rate=kinetics.growth_rate_per_day.sample(rng, shape),
        loss_fast=kinetics.infected_cell_loss_per_day.sample(rng, shape),
        efficacy=efficacy,
        resistant=resistant,
        slow_fraction=kinetics.slow_phase_fraction.sample(rng, shape),
        loss_slow=kinetics.slow_phase_loss_per_day.sample(rng, shape),
        nk_plateau=nk_plateau,
        nk_share=kinetics.nk.share_of_infected_cell_loss.value,
        rise_days=kinetics.nk.rise_time_constant_days.value,
        decay_days=kinetics.nk.decay_time_constant_days.value,
    )


def nk_exposure(days: ArrayLike, rise_days: float) -> NDArray[np.float64]:
    """G(t) = integral over [0, t] of (1 - exp(-u / rise)) du: the accumulated NK rise per unit of F - 1."""
    t = np.asarray(days, dtype=np.float64)
    return t - rise_days * (1.0 - np.exp(-t / rise_days))


def _log10_load(patients: PatientKinetics, t: NDArray[np.float64], per) -> NDArray[np.float64]:  # noqa: ANN001
    nk_time = t + patients.nk_share * (per(patients.nk_plateau) - 1.0) * nk_exposure(t, patients.rise_days)
    fast = per(patients.loss_fast) * nk_time - per(patients.residual_replication(patients.loss_fast)) * t
    slow = per(patients.loss_slow) * nk_time - per(patients.residual_replication(patients.loss_slow)) * t
    fraction = per(patients.slow_fraction)
    mixture = (1.0 - fraction) * np.exp(-fast) + fraction * np.exp(-slow)
    return per(patients.log10_v0) + np.log10(mixture)


def log10_viral_load(patients: PatientKinetics, days: ArrayLike) -> NDArray[np.float64]:
    """log10 CMV-DNA (copies/mL) on treatment, one day per patient (``days`` has the cohort's shape)."""
    return _log10_load(patients, np.asarray(days, dtype=np.float64), np.asarray)


def log10_viral_load_curve(patients: PatientKinetics, days: ArrayLike) -> NDArray[np.float64]:
    """log10 CMV-DNA at several days per patient: ``days`` has shape ``cohort + (k,)`` or ``(k,)``;
    the result has shape ``cohort + (k,)``."""
    return _log10_load(patients, np.asarray(days, dtype=np.float64), lambda a: np.asarray(a)[..., None])


@dataclass(frozen=True)
class LoadCurve:
    """A cohort's viral-load curves prepared for fast evaluation at whole days.

    The same formula as :func:`log10_viral_load`, with per-patient coefficients folded once and the
    NK exposure G(t) tabulated by day, so each visit costs a handful of float32 operations.
    """

    log10_v0: NDArray[np.float32]
    fast_per_day: NDArray[np.float32]
    fast_per_exposure: NDArray[np.float32]
    slow_per_day: NDArray[np.float32]
    slow_per_exposure: NDArray[np.float32]
    fast_weight: NDArray[np.float32]
    slow_weight: NDArray[np.float32]
    exposure_by_day: NDArray[np.float32]

    #: The per-patient fields, in order.
    PER_PATIENT = (
        "log10_v0", "fast_per_day", "fast_per_exposure", "slow_per_day", "slow_per_exposure", "fast_weight",
        "slow_weight",
    )

    def at(self, day: NDArray[np.integer], day_f: NDArray[np.float32] | None = None) -> NDArray[np.float32]:
        """log10 CMV-DNA (copies/mL) at whole ``day`` (one per patient, 0 <= day < table size);
        ``day_f`` is the same days as float32, if the caller has them already."""
        t = day.astype(np.float32) if day_f is None else day_f
        exposure = self.exposure_by_day[day]
        # Exponents are bounded so float32 cannot overflow (e^80 is far beyond any real load).
        fast = np.maximum(self.fast_per_day * t + self.fast_per_exposure * exposure, np.float32(-80))
        slow = np.maximum(self.slow_per_day * t + self.slow_per_exposure * exposure, np.float32(-80))
        return self.log10_v0 + np.log10(self.fast_weight * np.exp(-fast) + self.slow_weight * np.exp(-slow))


def prepare_curve(patients: PatientKinetics, max_day: int) -> LoadCurve:
    """Fold the parameters of :func:`log10_viral_load` for evaluation at days ``0..max_day``
    (patients flattened to one axis)."""
    nk_gain = patients.nk_share * (patients.nk_plateau - 1.0)
    f32 = lambda a: np.asarray(a, dtype=np.float32).reshape(-1)  # noqa: E731 - flat, one entry per patient
    return LoadCurve(
        log10_v0=f32(patients.log10_v0),
        fast_per_day=f32(patients.first_phase_rate),
        fast_per_exposure=f32(patients.loss_fast * nk_gain),
        slow_per_day=f32(patients.second_phase_rate),
        slow_per_exposure=f32(patients.loss_slow * nk_gain),
        fast_weight=f32(1.0 - patients.slow_fraction),
        slow_weight=f32(patients.slow_fraction),
        exposure_by_day=np.asarray(nk_exposure(np.arange(max_day + 1), patients.rise_days), dtype=np.float32),
    )


def nk_fold(
    patients: PatientKinetics, days: ArrayLike, il2_stop_day: ArrayLike | None = None
) -> NDArray[np.float64]:
    """NK count relative to baseline at ``days``: rising while IL-2 is given, decaying back after
    ``il2_stop_day`` (per patient; None means IL-2 was never stopped)."""
    t = np.asarray(days, dtype=np.float64)
    rise = lambda u: 1.0 + (patients.nk_plateau - 1.0) * (1.0 - np.exp(-u / patients.rise_days))  # noqa: E731
    if il2_stop_day is None:
        return rise(t)
    stop = np.asarray(il2_stop_day, dtype=np.float64)
    at_stop = rise(np.minimum(t, stop))
    after = np.maximum(t - stop, 0.0)
    return 1.0 + (at_stop - 1.0) * np.exp(-after / patients.decay_days)
