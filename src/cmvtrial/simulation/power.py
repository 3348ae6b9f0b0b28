"""Monte-Carlo power and sample size for the protocol's endpoints, with the analytic cross-check.

For each sample size, thousands of virtual trials are simulated (:mod:`cohort`) and each endpoint's
primary test is run on every one of them at once (:mod:`batched_survival`, :mod:`batched_tests`,
:mod:`batched_decline`):

=================  =====================  =========================================================
endpoint           test                   what is compared
=================  =====================  =========================================================
viremia_duration   logrank                time to CMV-DNA negativity (R ``survdiff``)
viremia_duration   cox                    Wald test of the IL-2 hazard ratio, Efron ties (R ``coxph``)
nk_change          ancova                 NK count change to week 12 ~ arm + baseline (R ``lm``)
cmv_decline        mixed_model_two_stage  log10 CMV-DNA decline rates: per-patient slopes weighed
                                          as the analysis's mixed model weighs them (R ``nlme::lme``)
=================  =====================  =========================================================

Power is the share of trials with p below the scenario's alpha; its Monte-Carlo standard error is
``sqrt(p (1 - p) / trials)``. For an endpoint the scenario lists under ``null_endpoints`` (IL-2
has no effect on it), the same number is the test's type-I error.

Reproducibility: trials are simulated in blocks of :data:`BLOCK_TRIALS`, each with its own random
stream derived from ``(seed, patients per arm, block index)`` — so a seed gives the same answer
however the blocks are spread over workers or chunks (in-process, a process pool, or a Dask cluster
through :func:`dask_mapper`), and the answer for one size does not depend on which other sizes were
asked for. :mod:`power_curve` draws the power curve.

The analytic cross-check uses Schoenfeld's and Freedman's formulas (reference/domain.md §11.1)
with the mean number of events the simulation produced and the model's hazard ratio (a Cox fit on
one large simulated trial), so the two can be compared row by row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation import batched_decline, batched_survival, batched_tests
from cmvtrial.simulation.cohort import simulate_cohort
from cmvtrial.simulation.design import TrialDesign
from cmvtrial.simulation.scenario import Scenario

#: Trials per random stream and per unit of work (a mechanism constant, not a trial number).
BLOCK_TRIALS = 1024
#: Patients per arm of the one large trial whose Cox fit gives the model's hazard ratio.
MODEL_HR_PATIENTS_PER_ARM = 20000
MAX_TRIALS = 10_000_000
MAX_PATIENTS_PER_ARM = 100_000

TESTS: tuple[tuple[str, str], ...] = (
    ("viremia_duration", "logrank"),
    ("viremia_duration", "cox"),
    ("nk_change", "ancova"),
    ("cmv_decline", "mixed_model_two_stage"),
)


@dataclass(frozen=True)
class PowerRow:
    n_per_arm: int
    endpoint: str
    test: str
    power: float
    mc_se: float
    rejections: int
    trials: int
    type_i_error: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "n_per_arm": self.n_per_arm,
            "endpoint": self.endpoint,
            "test": self.test,
            "power": self.power,
            "mc_se": self.mc_se,
            "rejections": self.rejections,
            "trials": self.trials,
            "type_i_error": self.type_i_error,
        }


@dataclass(frozen=True)
class AnalyticRow:
    """Schoenfeld and Freedman power for the mean events the simulation gave at this size."""

    n_per_arm: int
    mean_events: float
    hazard_ratio: float
    schoenfeld_power: float
    freedman_power: float

    def to_dict(self) -> dict[str, object]:
        return {
            "n_per_arm": self.n_per_arm,
            "mean_events": self.mean_events,
            "hazard_ratio": self.hazard_ratio,
            "schoenfeld_power": self.schoenfeld_power,
            "freedman_power": self.freedman_power,
        }


@dataclass(frozen=True)
class PowerReport:
    protocol: str
    scenario: str
    trials: int
    seed: int
    alpha: float
    target_power: float
    results: tuple[PowerRow, ...]
    analytic: tuple[AnalyticRow, ...]
    model_hazard_ratio: float
    event_probability: float
    schoenfeld_events_needed: float | None
    required_n_per_arm: dict[str, int | None] = field(default_factory=dict)

    @property
    def schoenfeld_n_per_arm(self) -> int | None:
        """Patients per arm the formula asks for: events needed / P(event) / 2 (1:1)."""
        if self.schoenfeld_events_needed is None or self.event_probability <= 0:
            return None
        return int(np.ceil(self.schoenfeld_events_needed / self.event_probability / 2))

    def to_dict(self) -> dict[str, object]:
        return {
            "protocol": self.protocol,
            "scenario": self.scenario,
            "trials": self.trials,
            "seed": self.seed,
            "alpha": self.alpha,
            "target_power": self.target_power,
            "results": [row.to_dict() for row in self.results],
            "analytic": {
                "model_hazard_ratio": self.model_hazard_ratio,
                "event_probability": self.event_probability,
                "schoenfeld_events_needed": self.schoenfeld_events_needed,
                "schoenfeld_n_per_arm": self.schoenfeld_n_per_arm,
                "rows": [row.to_dict() for row in self.analytic],
            },
            "required_n_per_arm": self.required_n_per_arm,
        }


# ------------------------------------------------------------------------------------------------
# Formulas (reference/domain.md §11.1)


def _z(p: float) -> float:
    return float(special.ndtri(p))


def schoenfeld_power(events: float, hazard_ratio: float, alpha: float, allocation: float = 0.5) -> float:
    """Power of the two-sided log-rank test with ``events`` events: Φ(√(D p1 p2)·|ln HR| − z_{1−α/2})."""
    share = allocation * (1 - allocation)
    return float(special.ndtr(np.sqrt(events * share) * abs(np.log(hazard_ratio)) - _z(1 - alpha / 2)))


def freedman_power(events: float, hazard_ratio: float, alpha: float) -> float:
    """Freedman (1:1): Φ(√D·|HR − 1|/(HR + 1) − z_{1−α/2})."""
    return float(special.ndtr(np.sqrt(events) * abs(hazard_ratio - 1) / (hazard_ratio + 1) - _z(1 - alpha / 2)))


def schoenfeld_events(hazard_ratio: float, alpha: float, power: float, allocation: float = 0.5) -> float:
    """Events needed: (z_{1−α/2} + z_{1−β})² / (p1 p2 (ln HR)²)."""
    return (_z(1 - alpha / 2) + _z(power)) ** 2 / (allocation * (1 - allocation) * np.log(hazard_ratio) ** 2)


def freedman_events(hazard_ratio: float, alpha: float, power: float) -> float:
    """Events needed (1:1): (z_{1−α/2} + z_{1−β})² (HR + 1)² / (HR − 1)²."""
    return (_z(1 - alpha / 2) + _z(power)) ** 2 * (hazard_ratio + 1) ** 2 / (hazard_ratio - 1) ** 2


# ------------------------------------------------------------------------------------------------
# Simulation


def block_rng(seed: int, n_per_arm: int, block_index: int) -> np.random.Generator:
    """The random stream of one block of trials: independent of how blocks are scheduled.
    (Key ``(0, 0)`` is the model's large reference trial; sizes start at 2.)"""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n_per_arm, block_index)))


def arm_sizes(design: TrialDesign, n_per_arm: int) -> tuple[int, int]:
    """(IL-2, control) patients for a size: ``n_per_arm`` controls, IL-2 by the protocol's ratio."""
    il2, control = design.ratio[design.il2_arm], design.ratio[design.control_arm]
    return max(1, round(n_per_arm * il2 / control)), n_per_arm


def _check(sizes: Sequence[int], n_trials: int) -> None:
    if not sizes:
        raise InvalidInput("give at least one sample size", field="sizes")
    bad = [n for n in sizes if not 2 <= n <= MAX_PATIENTS_PER_ARM]
    if bad:
        raise InvalidInput(
            f"sample sizes per arm must be between 2 and {MAX_PATIENTS_PER_ARM}; got {bad}",
            field="sizes",
            value=bad,
        )
    if len(set(sizes)) != len(sizes):
        raise InvalidInput(f"a sample size is listed twice: {list(sizes)}", field="sizes", value=list(sizes))
    if not 1 <= n_trials <= MAX_TRIALS:
        raise InvalidInput(f"the number of trials must be between 1 and {MAX_TRIALS}", field="n_trials", value=n_trials)


@dataclass(frozen=True)
class BlockTask:
    """One unit of work: ``trials`` trials of ``n_per_arm`` patients per arm, with its own stream."""

    n_per_arm: int
    block_index: int
    trials: int
    seed: int


@dataclass(frozen=True)
class BlockTally:
    """What one block contributes: rejections per (endpoint, test), events and patients."""

    n_per_arm: int
    trials: int
    rejections: dict[tuple[str, str], int]
    events: float
    patients: float


def block_count(sizes: Sequence[int], n_trials: int) -> int:
    """How many blocks a run of ``n_trials`` per size has: more processes than this would idle."""
    return len(sizes) * -(-max(n_trials, 0) // BLOCK_TRIALS)


def block_tasks(sizes: Sequence[int], n_trials: int, seed: int) -> list[BlockTask]:
    """The blocks of a power run, in a fixed order (sizes, then blocks)."""
    return [
        BlockTask(n_per_arm, block_index, min(BLOCK_TRIALS, n_trials - start), seed)
        for n_per_arm in sizes
        for block_index, start in enumerate(range(0, n_trials, BLOCK_TRIALS))
    ]


def run_block(task: BlockTask, scenario: Scenario, design: TrialDesign) -> BlockTally:
    """Simulate one block of trials and count, per test, the trials with p < alpha.

    A module-level function of picklable arguments, so a process pool or a Dask cluster can run it.
    """
    rng = block_rng(task.seed, task.n_per_arm, task.block_index)
    n_il2, n_control = arm_sizes(design, task.n_per_arm)
    il2 = np.zeros((task.trials, n_il2 + n_control), dtype=bool)
    il2[:, :n_il2] = True
    outcome = simulate_cohort(rng, scenario, design, il2)
    sets = batched_survival.risk_sets(outcome.time, outcome.event, il2)
    p_values = {
        ("viremia_duration", "logrank"): batched_survival.logrank(None, None, None, sets=sets).p_value,
        ("viremia_duration", "cox"): batched_survival.cox_binary(None, None, None, sets=sets).p_value,
        ("nk_change", "ancova"): batched_tests.ancova(
            outcome.nk_week12 - outcome.nk_baseline, il2, outcome.nk_baseline
        ).p_value,
        ("cmv_decline", "mixed_model_two_stage"): batched_decline.two_stage_decline(
            outcome.slope_log10_per_day, outcome.slope_day_ss, outcome.slope_residual_ss, outcome.slope_samples, il2
        ).p_value,
    }
    alpha = scenario.power.alpha.value
    return BlockTally(
        n_per_arm=task.n_per_arm,
        trials=task.trials,
        rejections={key: int(np.count_nonzero(p < alpha)) for key, p in p_values.items()},
        events=float(outcome.event.sum()),
        patients=float(outcome.event.size),
    )


def model_hazard_ratio(scenario: Scenario, design: TrialDesign, seed: int) -> float:
    """The hazard ratio of the model: a Cox fit on one very large simulated trial."""
    n_il2, n_control = arm_sizes(design, MODEL_HR_PATIENTS_PER_ARM)
    il2 = np.zeros((1, n_il2 + n_control), dtype=bool)
    il2[:, :n_il2] = True
    outcome = simulate_cohort(block_rng(seed, 0, 0), scenario, design, il2)
    return float(batched_survival.cox_binary(outcome.time, outcome.event, il2).hazard_ratio[0])


Mapper = Callable[[Callable[[BlockTask], BlockTally], Iterable[BlockTask]], Iterable[BlockTally]]


def estimate_power(
    scenario: Scenario,
    design: TrialDesign,
    sizes: Sequence[int],
    n_trials: int,
    seed: int,
    *,
    progress: Callable[[int], None] | None = None,
    mapper: Mapper | None = None,
) -> PowerReport:
    """Simulate ``n_trials`` trials per size in ``sizes`` (patients per arm) and test each endpoint.

    ``mapper(function, tasks)`` runs the blocks — the built-in ``map`` by default (in-process); a
    process pool's or a Dask client's map spreads them, with the same answer since every block has
    its own random stream (:func:`dask_mapper` wraps a Dask client). ``progress(k)`` is called as
    each block's ``k`` trials finish. A process that runs many blocks should call
    :func:`keep_freed_memory` once (the command line and the Dask mapper do).
    """
    _check(sizes, n_trials)
    alpha = scenario.power.alpha.value
    totals = {n: {"rejections": dict.fromkeys(TESTS, 0), "events": 0.0, "patients": 0.0} for n in sizes}
    work = functools.partial(run_block, scenario=scenario, design=design)
    # A mapper that submits at once (a cluster) works on the blocks while this process fits the
    # model's hazard ratio, so that serial step does not hold the workers up.
    tallies = (mapper or map)(work, block_tasks(sizes, n_trials, seed))
    hazard_ratio = model_hazard_ratio(scenario, design, seed)
    for tally in tallies:
        total = totals[tally.n_per_arm]
        for key, count in tally.rejections.items():
            total["rejections"][key] += count
        total["events"] += tally.events
        total["patients"] += tally.patients
        if progress is not None:
            progress(tally.trials)

    rows: list[PowerRow] = []
    analytic: list[AnalyticRow] = []
    for n_per_arm in sizes:
        total = totals[n_per_arm]
        for endpoint, test in TESTS:
            rejections = total["rejections"][(endpoint, test)]
            power = rejections / n_trials
            rows.append(
                PowerRow(
                    n_per_arm=n_per_arm,
                    endpoint=endpoint,
                    test=test,
                    power=power,
                    mc_se=float(np.sqrt(power * (1 - power) / n_trials)),
                    rejections=rejections,
                    trials=n_trials,
                    type_i_error=scenario.is_null_for(endpoint),
                )
            )
        n_il2, n_control = arm_sizes(design, n_per_arm)
        mean_events = total["events"] / n_trials
        analytic.append(
            AnalyticRow(
                n_per_arm=n_per_arm,
                mean_events=mean_events,
                hazard_ratio=hazard_ratio,
                schoenfeld_power=schoenfeld_power(mean_events, hazard_ratio, alpha, n_il2 / (n_il2 + n_control)),
                freedman_power=freedman_power(mean_events, hazard_ratio, alpha),
            )
        )
    target = scenario.power.target_power.value
    required: dict[str, int | None] = {}
    for endpoint, test in TESTS:
        reached = [row.n_per_arm for row in rows if (row.endpoint, row.test) == (endpoint, test) and row.power >= target]
        required[f"{endpoint}:{test}"] = min(reached) if reached else None
    all_events = sum(total["events"] for total in totals.values())
    all_patients = sum(total["patients"] for total in totals.values())
    events_needed = schoenfeld_events(hazard_ratio, alpha, target) if abs(np.log(hazard_ratio)) > 1e-9 else None
    return PowerReport(
        protocol=design.protocol_id,
        scenario=scenario.name,
        trials=n_trials,
        seed=seed,
        alpha=alpha,
        target_power=target,
        results=tuple(rows),
        analytic=tuple(analytic),
        model_hazard_ratio=hazard_ratio,
        event_probability=all_events / max(all_patients, 1.0),
        schoenfeld_events_needed=events_needed,
        required_n_per_arm=required,
    )


# ------------------------------------------------------------------------------------------------
# Running the blocks on a Dask cluster


#: ``dashboard_address`` of a local Dask cluster: its scheduler's HTTP server (status routes; no
#: dashboard without bokeh) on a free loopback port, never the fixed 8787 a second cluster would
#: find taken (a warning) nor every interface.
LOCAL_CLUSTER_HTTP = "127.0.0.1:0"


#: glibc ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Keep up to this much freed memory at the top of the heap instead of returning it to the system.
KEEP_FREED_BYTES = 256 * 2**20
#: Serve allocations up to this size from the heap (glibc's largest), not from fresh mappings.
HEAP_ALLOCATIONS_UP_TO_BYTES = 32 * 2**20


def keep_freed_memory() -> bool:
    """Ask the C allocator (glibc) to keep freed memory for reuse instead of returning it at once.

    Why: a block allocates and frees NumPy arrays of a few hundred kB to a few MB many times over.
    Memory handed back to the system returns as fresh pages that the kernel must fault in and zero
    — measured, a power run spent a fifth of its CPU time there, and a Dask worker (started with
    ``MALLOC_TRIM_THRESHOLD_=65536``, dask's default, which returns nearly every free) 40%. Kept
    memory is bounded by :data:`KEEP_FREED_BYTES`. A process-wide setting, so callers at the edge
    (the command, a worker) make it; it changes no result. Returns False where there is no glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): their allocators differ
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_ALLOCATIONS_UP_TO_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )


def _run_chunk(function: Callable[[BlockTask], BlockTally], chunk: list[BlockTask]) -> list[BlockTally]:
    return [function(task) for task in chunk]


def dask_mapper(client: Any, *, blocks_per_task: int = 1) -> Mapper:
    """A ``mapper`` for :func:`estimate_power` that runs the blocks on ``client``'s Dask cluster.

    The work function (holding the scenario and the design) is scattered to every worker once;
    blocks go out ``blocks_per_task`` at a time, all submitted when the mapper is called, and their
    tallies (a few numbers each) come back as tasks finish. The order of arrival does not matter:
    every block has its own random stream and the tallies are whole-number sums, so the answer is
    the same for any number of workers or tasks. Each run first makes the workers keep freed memory
    (:func:`keep_freed_memory`), which nearly halves a worker's CPU time per block.
    """
    if blocks_per_task < 1:
        raise InvalidInput("blocks per task must be 1 or more", field="blocks_per_task", value=blocks_per_task)

    def mapper(function: Callable[[BlockTask], BlockTally], tasks: Iterable[BlockTask]) -> Iterator[BlockTally]:
        from distributed import as_completed

        client.run(keep_freed_memory)
        listed = list(tasks)
        chunks = [listed[i : i + blocks_per_task] for i in range(0, len(listed), blocks_per_task)]
        shared = client.scatter(function, broadcast=True, hash=False)
        futures = client.map(_run_chunk, [shared] * len(chunks), chunks, pure=False)

        def arrivals() -> Iterator[BlockTally]:
            try:
                for future in as_completed(futures):
                    yield from future.result()
            finally:
                client.cancel(futures)

        return arrivals()

    return mapper


def exponential_logrank_power(
    rng: np.random.Generator,
    n_per_arm: int,
    n_trials: int,
    control_median: float,
    hazard_ratio: float,
    alpha: float,
    followup: float = np.inf,
) -> tuple[float, float]:
    """Simulated log-rank power for exponential times (the setting Schoenfeld's formula assumes),
    with administrative censoring at ``followup``; returns (power, mean events)."""
    rate = np.log(2) / control_median
    arms = np.zeros((n_trials, 2 * n_per_arm), dtype=bool)
    arms[:, :n_per_arm] = True
    times = rng.exponential(1.0, arms.shape) / np.where(arms, rate * hazard_ratio, rate)
    event = times <= followup
    result = batched_survival.logrank(np.minimum(times, followup), event, arms)
    return float(np.mean(result.p_value < alpha)), float(event.sum(axis=1).mean())
