"""Simulated cohorts, vectorized over ``(trials, patients)``: what each patient's endpoints come out as.

One call draws, for every patient of every trial, the baseline load and kinetics, samples the
weekly treatment visits (visit-window jitter, missed visits, dropout), adds assay noise and applies
the assay's limit, and derives what the analysis needs:

- ``viremia_duration``: day of the first CMV-DNA below the LLOQ (confirmed by the protocol's
  number of consecutive negative samples), or censoring at the last sample seen;
- ``cmv_decline``: each patient's least-squares slope of measured log10 CMV-DNA over days, from
  baseline to the first negative sample (a value below the LLOQ enters as the analysis enters it,
  the protocol's fraction of the LLOQ), with what the power's two-stage test weighs it by: the
  number of samples, the spread of their days and the line's residual sum of squares;
- ``nk_change``: NK count at baseline and at the week-12 visit (missing after dropout).

The same function serves the power calculation (thousands of trials, ``keep_visits=False``) and the
single demo trial (``keep_visits=True`` keeps every visit's day and measurement). Visits are
processed one at a time on ``(trials, patients)`` arrays so memory stays proportional to the cohort,
not to cohort × visits, unless the visits are kept.

Random numbers are drawn in a fixed order from the ``rng`` passed in; the arm mask does not change
which numbers are drawn, so calling twice with the same seed and opposite arms gives the same
patients under the other treatment (the demo uses this to let the real randomization choose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cmvtrial.core import units
from cmvtrial.simulation import kinetics
from cmvtrial.simulation.design import TrialDesign
from cmvtrial.simulation.scenario import Scenario

DAYS_PER_WEEK = 7
#: Lymphocyte counts come in 10^9/L (hematology form), NK counts in cells/µL (lymphocyte subsets).
CELLS_PER_UL_PER_10E9_PER_L = units.convert(1.0, "10*9/L", "/uL")


@dataclass(frozen=True)
class CohortOutcomes:
    """Per-patient outcomes, arrays of shape ``(trials, patients)`` unless noted."""

    il2: NDArray[np.bool_]
    patients: kinetics.PatientKinetics
    time: NDArray[np.int32]
    event: NDArray[np.bool_]
    end_of_treatment_day: NDArray[np.int32]
    dropout_day: NDArray[np.float64]
    baseline_log10: NDArray[np.float64]
    slope_log10_per_day: NDArray[np.float64]
    #: The decline regression's samples, Σ(day − mean day)² and residual sum of squares (log10²).
    slope_samples: NDArray[np.int32]
    slope_day_ss: NDArray[np.float64]
    slope_residual_ss: NDArray[np.float64]
    nk_baseline: NDArray[np.float64]
    nk_week12: NDArray[np.float64]
    week12_day: NDArray[np.int32]
    lymphocytes: NDArray[np.float64]
    #: Kept only with ``keep_visits``: shape ``(trials, patients, visits)``.
    visit_days: NDArray[np.int32] | None = None
    visit_log10: NDArray[np.float64] | None = None
    visit_taken: NDArray[np.bool_] | None = None


def treatment_visit_count(design: TrialDesign, horizon_days: float) -> int:
    """How many repeating treatment visits fit in the follow-up horizon (and the protocol's cap)."""
    count = int((horizon_days - design.treatment_first_day) // design.treatment_every_days) + 1
    if design.treatment_max_count is not None:
        count = min(count, design.treatment_max_count)
    return max(count, 0)


def jitter_probabilities(sd_days: float, before: int, after: int) -> tuple[NDArray[np.int32], NDArray[np.float64]]:
    """Visit-day deviations ``-before..after`` and their probabilities: a normal deviation rounded
    to whole days, with the mass beyond the window put on its edges (visits happen inside it)."""
    from scipy import special

    offsets = np.arange(-before, after + 1, dtype=np.int32)
    if sd_days <= 0 or offsets.size == 1:
        probabilities = (offsets == 0).astype(np.float64)
        return offsets, probabilities / probabilities.sum()
    upper = special.ndtr((offsets + 0.5) / sd_days)
    lower = special.ndtr((offsets - 0.5) / sd_days)
    lower[0], upper[-1] = 0.0, 1.0
    return offsets, upper - lower


def _jittered(
    rng: np.random.Generator, shape: tuple[int, ...], probabilities: NDArray[np.float64], missed: float,
) -> tuple[NDArray[np.int8], NDArray[np.bool_]]:
    """One uniform draw per visit decides both whether it is missed and its day's deviation.

    Returns the deviation as the number of steps above the window's first day (``0 ..
    len(probabilities) - 1``, one byte each) and whether the visit took place. The steps are sums of
    a handful of one-byte comparisons, cheaper than a binary search or a gather for a window of a
    few days.
    """
    u = rng.random(shape, dtype=np.float32)
    taken = u >= np.float32(missed)
    within = np.subtract(u, np.float32(missed), out=u)
    within *= np.float32(1.0 / max(1.0 - missed, 1e-12))
    steps = np.zeros(shape, dtype=np.int8)
    for threshold in np.cumsum(probabilities)[:-1].astype(np.float32):
        steps += (within >= threshold).view(np.int8)
    return steps, taken


@dataclass
class _VisitSummary:
    """What the treatment visits gave, per (flattened) patient."""

    time: NDArray[np.int32]
    done: NDArray[np.bool_]
    sums: NDArray[np.float32]
    days: NDArray[np.int32] | None
    values: NDArray[np.float64] | None
    taken: NDArray[np.bool_] | None


#: Shrink the working set once this share of it has finished (negative or dropped out).
_COMPACT_WHEN_FINISHED = 0.25

# Rows of the working set (float32: days are whole numbers, exact in float32). The curve's two
# exponents are stored negated so a load costs no negation: e^(-max(x, -80)) = e^(min(-x, 80)).
_V0, _FAST_T, _FAST_E, _SLOW_T, _SLOW_E, _FAST_W, _SLOW_W = range(7)
#: Regression sums n, Σt, Σy, Σt², Σty, Σy² (baseline sample included).
_N, _ST, _SY, _STT, _STY, _SYY = range(7, 13)
#: Last day seen, last day alive (dropout); with confirmation by several negatives: the current run
#: of negative samples and the day it started.
_LAST_SEEN, _LAST_ALIVE, _RUN, _RUN_START = range(13, 17)
_EXPONENT_CAP = np.float32(80)  # e^80 is far beyond any real load: float32 cannot overflow


def _treatment_visits(
    rng: np.random.Generator,
    curve: kinetics.LoadCurve,
    last_day_alive: NDArray[np.int32],
    baseline: NDArray[np.float64],
    design: TrialDesign,
    count: int,
    jitter: tuple[NDArray[np.int32], NDArray[np.float64], float],
    lloq: float,
    below_lloq: float,
    noise_sd: float,
    keep_visits: bool,
) -> _VisitSummary:
    """Weekly visits until CMV-DNA is negative, dropout or the horizon.

    Works on a shrinking set of patients still being followed: once a quarter of the set has
    finished, their results are written out and the rest carried on, so late visits (few patients
    left) cost little. Every draw depends only on the seed and the data, never on timing.

    Why it is written this way (it is most of a power run's time): each visit is a fixed sequence of
    in-place float32 operations on preallocated buffers — no temporaries of the cohort's size, no
    masked copies or ``np.where`` on random masks (a select runs element by element, ~10× slower
    than arithmetic); a flag enters a sum as a 0/1 factor, which is exact. The numbers are those of
    :meth:`kinetics.LoadCurve.at` bit for bit (tests/unit/test_simulation_cohort.py).
    """
    total = baseline.size
    offsets, probabilities, missed = jitter
    lloq32, noise32 = np.float32(lloq), np.float32(noise_sd)
    below_gap32 = np.float32(lloq - below_lloq)  # what a negative sample's value falls below the LLOQ
    needed = design.consecutive_negatives
    state = np.zeros((_RUN_START + 1 if needed > 1 else _RUN, total), dtype=np.float32)
    state[_V0] = curve.log10_v0
    np.negative(curve.fast_per_day, out=state[_FAST_T])
    np.negative(curve.fast_per_exposure, out=state[_FAST_E])
    np.negative(curve.slow_per_day, out=state[_SLOW_T])
    np.negative(curve.slow_per_exposure, out=state[_SLOW_E])
    state[_FAST_W] = curve.fast_weight
    state[_SLOW_W] = curve.slow_weight
    state[_N] = 1.0
    state[_SY] = baseline
    state[_SYY] = np.square(baseline)
    state[_LAST_ALIVE] = last_day_alive
    done = np.zeros(total, dtype=bool)
    live = np.ones(total, dtype=bool)
    index = np.arange(total)
    buffers = np.empty((5, total), dtype=np.float32)

    # What leaves the working set (its patients' indexes, result rows and whether negative), put
    # back in patient order once at the end: one gather then, instead of a scatter at every exit.
    results = slice(_N, _RUN_START + 1 if needed > 1 else _LAST_SEEN + 1)
    leavers: list[tuple[NDArray[np.intp], NDArray[np.float32], NDArray[np.bool_]]] = []
    kept_days = np.full((total, count), -1, dtype=np.int32) if keep_visits else None
    kept_values = np.full((total, count), np.nan) if keep_visits else None
    kept_taken = np.zeros((total, count), dtype=bool) if keep_visits else None

    for k in range(count):
        n = index.size
        if n == 0:
            break
        steps, seen = _jittered(rng, (n,), probabilities, missed)
        noise = rng.standard_normal(n, dtype=np.float32)
        first = design.treatment_first_day + k * design.treatment_every_days + int(offsets[0])
        a, b, c, t, w = (row[:n] for row in buffers)
        day_f = np.add(steps, np.float32(first), out=t)
        exposure = np.take(curve.exposure_by_day[np.arange(first, first + offsets.size)], steps.astype(np.intp),
                           out=c, mode="clip")
        alive = day_f <= state[_LAST_ALIVE]
        seen &= alive
        if keep_visits:
            shown = live & alive
        seen &= live
        # log10 load = v0 + log10(w_f e^(-fast) + w_s e^(-slow)), then assay noise.
        fast = np.multiply(state[_FAST_T], day_f, out=a)
        fast += np.multiply(state[_FAST_E], exposure, out=b)
        np.minimum(fast, _EXPONENT_CAP, out=fast)
        np.exp(fast, out=fast)
        fast *= state[_FAST_W]
        slow = np.multiply(state[_SLOW_T], day_f, out=b)
        slow += np.multiply(state[_SLOW_E], exposure, out=c)
        np.minimum(slow, _EXPONENT_CAP, out=slow)
        np.exp(slow, out=slow)
        slow *= state[_SLOW_W]
        fast += slow
        measured = np.log10(fast, out=a)
        measured += state[_V0]
        noise *= noise32
        measured += noise
        negative = measured < lloq32
        if keep_visits:
            kept_days[index, k] = np.where(shown, day_f.astype(np.int32), -1)
            kept_values[index, k] = measured
            kept_taken[index, k] = seen
        # Decline regression: every sample up to and including the first negative one, a value
        # below the LLOQ entering as the analysis's fraction of it (the LLOQ less a 0/1 factor
        # times the gap).
        y = np.maximum(measured, lloq32, out=measured)
        y -= np.multiply(negative, below_gap32, out=c)
        np.copyto(w, seen)
        state[_N] += w
        wt = np.multiply(w, day_f, out=b)
        state[_ST] += wt
        wy = np.multiply(w, y, out=c)
        state[_SY] += wy
        state[_SYY] += np.multiply(wy, y, out=c)
        state[_STT] += np.multiply(wt, day_f, out=c)
        state[_STY] += np.multiply(wt, y, out=c)
        last = state[_LAST_SEEN]
        last += np.multiply(np.subtract(day_f, last, out=c), w, out=c)
        if needed == 1:
            confirmed = negative
            confirmed &= seen
        else:
            # The first of ``needed`` consecutive negative samples (among those taken).
            run, start = state[_RUN], state[_RUN_START]
            negative &= seen
            start += np.multiply(np.subtract(day_f, start, out=c), negative & (run == 0), out=c)
            # run + 1 after a negative sample, 0 after a positive one, unchanged when none was taken
            np.add(np.multiply(run, ~seen, out=b), np.multiply(np.add(run, 1, out=c), negative, out=c), out=run)
            confirmed = run >= needed
            confirmed &= seen
        done |= confirmed
        # Visit days only grow, so a patient past the dropout day is never seen again.
        live &= alive
        live &= ~confirmed
        remaining = np.count_nonzero(live)
        if n - remaining >= _COMPACT_WHEN_FINISHED * n:
            gone = np.flatnonzero(~live)
            leavers.append((index[gone], np.take(state[results], gone, axis=1), done[gone]))
            keep = np.flatnonzero(live)
            index, state = index[keep], np.take(state, keep, axis=1)
            done = np.zeros(keep.size, dtype=bool)  # a finished patient is never kept
            live = np.ones(keep.size, dtype=bool)
    leavers.append((index, state[results], done))
    position = np.empty(total, dtype=np.intp)
    position[np.concatenate([patients for patients, _, _ in leavers])] = np.arange(total)
    rows = np.take(np.concatenate([rows for _, rows, _ in leavers], axis=1), position, axis=1)
    negative_at_end = np.concatenate([negative for _, _, negative in leavers])[position]
    seen_last = rows[_LAST_SEEN - _N]
    if needed > 1:
        time = np.where(negative_at_end, rows[_RUN_START - _N], seen_last).astype(np.int32)
    else:  # the confirming sample is the last one seen
        time = seen_last.astype(np.int32)
    return _VisitSummary(time, negative_at_end, rows[: _SYY - _N + 1], kept_days, kept_values, kept_taken)


def simulate_cohort(
    rng: np.random.Generator,
    scenario: Scenario,
    design: TrialDesign,
    il2: NDArray[np.bool_],
    *,
    keep_visits: bool = False,
    log10_v0: NDArray[np.float64] | None = None,
) -> CohortOutcomes:
    """Simulate every patient of ``il2``'s shape (True = IL-2 arm) through the treatment phase.

    ``log10_v0`` gives the patients' true baseline loads when they are already known (the demo
    trial's screened candidates); otherwise they are drawn from the scenario's population.
    """
    shape = np.shape(il2)
    population, visits = scenario.population, scenario.visits
    if log10_v0 is None:
        log10_v0 = population.cmv_dna_log10_copies_per_ml.sample(rng, shape)
    patients = kinetics.draw_patients(rng, scenario.kinetics, log10_v0, il2, design.il2_interval_days)
    lymphocytes = population.lymphocytes_10e9_per_l.sample(rng, shape)
    nk_fraction = population.nk_fraction_of_lymphocytes.sample(rng, shape)
    hazard = scenario.dropout.weekly_hazard.value
    rate = -np.log1p(-hazard) / DAYS_PER_WEEK if hazard < 1 else np.inf
    dropout_day = rng.exponential(1.0 / rate, shape) if 0 < rate < np.inf else np.full(shape, np.inf if rate == 0 else 0.0)

    noise_sd = scenario.assay.noise_sd_log10.value
    lloq = np.log10(design.lloq_copies_per_ml)
    count = treatment_visit_count(design, visits.horizon_days.value)
    offsets, probabilities = jitter_probabilities(
        visits.jitter_sd_days.value, design.treatment_window.before, design.treatment_window.after
    )

    # Baseline sample (day 0) starts each patient's decline regression.
    baseline = log10_v0 + noise_sd * rng.standard_normal(shape, dtype=np.float32)
    last_day = design.treatment_first_day + max(count - 1, 0) * design.treatment_every_days + int(offsets[-1])
    last_day_alive = np.minimum(np.floor(dropout_day), np.iinfo(np.int32).max).astype(np.int32)
    seen = _treatment_visits(
        rng,
        kinetics.prepare_curve(patients, last_day),
        last_day_alive.reshape(-1),
        baseline.reshape(-1),
        design,
        count,
        (offsets, probabilities, visits.missed_visit.value),
        lloq,
        np.log10(design.below_lloq_fraction_of_lloq * design.lloq_copies_per_ml),
        noise_sd,
        keep_visits,
    )
    time = seen.time.reshape(shape)
    done = seen.done.reshape(shape)
    s1, st, sy, stt, sty, syy = (a.reshape(shape).astype(np.float64) for a in seen.sums)

    horizon = np.int32(visits.horizon_days.value)
    end_of_treatment = np.where(done, time, np.minimum(np.floor(dropout_day), horizon)).astype(np.int32)
    # The line from the running sums: Σ(t − t̄)² = Σt² − (Σt)²/n, and so on. The float32 sums of
    # squares leave the residual sum of squares within about 1e-4 (log10²) of the exact one.
    day_ss = stt - st * st / s1
    with np.errstate(invalid="ignore", divide="ignore"):
        fitted = (s1 >= 2) & (day_ss > 0)
        slope = np.where(fitted, (sty - st * sy / s1) / day_ss, np.nan)
        residual_ss = np.where(fitted, np.maximum(syy - sy * sy / s1 - slope * slope * day_ss, 0.0), np.nan)

    nk_cv = scenario.kinetics.nk.measurement_cv.value
    nk_true = lymphocytes * nk_fraction * CELLS_PER_UL_PER_10E9_PER_L
    nk_baseline = nk_true * np.exp(nk_cv * rng.standard_normal(shape))
    week12_offsets, week12_p = jitter_probabilities(visits.jitter_sd_days.value, design.week12.before, design.week12.after)
    week12_steps, week12_taken = _jittered(rng, shape, week12_p, visits.missed_visit.value)
    week12_day = week12_steps.astype(np.int32)
    week12_day += np.int32(design.week12.day + int(week12_offsets[0]))
    fold = kinetics.nk_fold(patients, week12_day, il2_stop_day=np.where(il2, end_of_treatment, np.inf))
    nk_week12 = nk_true * fold * np.exp(nk_cv * rng.standard_normal(shape))
    nk_week12 = np.where(week12_taken & (week12_day <= dropout_day), nk_week12, np.nan)

    return CohortOutcomes(
        il2=np.asarray(il2, dtype=bool),
        patients=patients,
        time=time,
        event=done,
        end_of_treatment_day=end_of_treatment,
        dropout_day=dropout_day,
        baseline_log10=baseline.astype(np.float64),
        slope_log10_per_day=slope,
        slope_samples=s1.astype(np.int32),
        slope_day_ss=day_ss,
        slope_residual_ss=residual_ss,
        nk_baseline=nk_baseline,
        nk_week12=nk_week12,
        week12_day=week12_day,
        lymphocytes=lymphocytes,
        visit_days=None if seen.days is None else seen.days.reshape(*shape, count),
        visit_log10=None if seen.values is None else seen.values.reshape(*shape, count),
        visit_taken=None if seen.taken is None else seen.taken.reshape(*shape, count),
    )
