"""Power by simulation: type-I error near alpha under the null scenario, agreement with
Schoenfeld's formula where it applies, and seeded, schedule-independent answers."""

from __future__ import annotations

import numpy as np
import pytest

from cmvtrial.errors import InvalidInput
from cmvtrial.simulation import power, power_curve
from simulation_support import design, scenario

ALPHA = 0.05


@pytest.fixture(scope="module")
def null_report():
    return power.estimate_power(scenario("sle-cmv-il2", "null"), design("sle-cmv-il2", "null"), [40], 4000, seed=3)


@pytest.mark.parametrize(
    ("endpoint", "test"),
    [("viremia_duration", "logrank"), ("viremia_duration", "cox"), ("cmv_decline", "mixed_model_two_stage")],
)
def test_type_i_error_is_near_alpha_under_the_null(null_report, endpoint, test):
    row = next(r for r in null_report.results if (r.endpoint, r.test) == (endpoint, test))
    assert row.type_i_error
    assert abs(row.power - null_report.alpha) < 4 * np.sqrt(ALPHA * (1 - ALPHA) / row.trials)


def test_nk_change_is_not_a_null_endpoint_there(null_report):
    row = next(r for r in null_report.results if r.endpoint == "nk_change")
    assert not row.type_i_error and row.mc_se > 0


def test_simulated_power_agrees_with_schoenfeld_for_exponential_times():
    """Exponential times, proportional hazards, administrative censoring: the formula's setting."""
    trials = 5000
    simulated, events = power.exponential_logrank_power(
        np.random.default_rng(11), 100, trials, control_median=14.0, hazard_ratio=1.5, alpha=ALPHA, followup=21.0
    )
    formula = power.schoenfeld_power(events, 1.5, ALPHA)
    assert abs(simulated - formula) < 3 * np.sqrt(formula * (1 - formula) / trials)


def test_formulas_reproduce_the_reference_table():
    """reference/domain.md §11.2 (DERIVED there; alpha 0.05 two-sided, power 80%)."""
    assert round(power.schoenfeld_events(1.5, ALPHA, 0.8)) == 191
    assert round(power.freedman_events(1.5, ALPHA, 0.8)) == 196
    assert round(power.schoenfeld_events(2.0, ALPHA, 0.8)) == 65
    assert power.schoenfeld_power(100, 1.75, ALPHA) == pytest.approx(0.80, abs=0.005)
    assert power.schoenfeld_power(80, 2.0, ALPHA) == pytest.approx(0.87, abs=0.005)


def test_same_seed_same_answer_whatever_else_is_asked():
    s, d = scenario("nct04225780"), design("nct04225780")
    alone = power.estimate_power(s, d, [30], 300, seed=9)
    together = power.estimate_power(s, d, [10, 30], 300, seed=9)
    again = power.estimate_power(s, d, [30], 300, seed=9)
    rows = lambda report: [r for r in report.results if r.n_per_arm == 30]  # noqa: E731
    assert rows(alone) == rows(together) == rows(again)
    assert power.estimate_power(s, d, [30], 300, seed=10).results != alone.results


def test_power_grows_with_size_under_the_default_scenario():
    report = power.estimate_power(scenario("nct04225780"), design("nct04225780"), [20, 200], 1500, seed=4)
    logrank = {r.n_per_arm: r.power for r in report.results if r.test == "logrank"}
    assert logrank[200] > logrank[20] + 0.2
    assert report.model_hazard_ratio > 1
    analytic = {row.n_per_arm: row for row in report.analytic}
    assert analytic[200].mean_events > analytic[20].mean_events


def test_progress_is_reported_for_every_trial():
    seen = []
    power.estimate_power(scenario("nct04225780"), design("nct04225780"), [5, 6], power.BLOCK_TRIALS + 10, 1, progress=seen.append)
    assert sum(seen) == 2 * (power.BLOCK_TRIALS + 10)


@pytest.mark.parametrize(("sizes", "trials"), [([], 10), ([1], 10), ([10], 0), ([10**7], 10)])
def test_bad_requests_are_refused(sizes, trials):
    with pytest.raises(InvalidInput):
        power.estimate_power(scenario("nct04225780"), design("nct04225780"), sizes, trials, 1)


def test_worker_processes_give_the_same_answer():
    """Blocks are picklable and carry their own random streams: a process pool changes nothing."""
    from concurrent.futures import ProcessPoolExecutor

    s, d = scenario("nct04225780"), design("nct04225780")
    trials = 2 * power.BLOCK_TRIALS + 5
    local = power.estimate_power(s, d, [8, 12], trials, seed=21)
    with ProcessPoolExecutor(max_workers=2) as pool:
        pooled = power.estimate_power(s, d, [8, 12], trials, seed=21, mapper=lambda f, tasks: pool.map(f, tasks))
    assert pooled.results == local.results and pooled.analytic == local.analytic


def test_schoenfeld_sample_size_gives_about_the_target_power_in_the_model():
    """The model is close to proportional hazards: at the formula's size, simulation gives ~80%."""
    s, d = scenario("nct04225780"), design("nct04225780")
    planning = power.estimate_power(s, d, [100], 400, seed=5)
    n = planning.schoenfeld_n_per_arm
    assert n is not None and n > 100
    check = power.estimate_power(s, d, [n], 1000, seed=6)
    logrank = next(r for r in check.results if r.test == "logrank")
    assert abs(logrank.power - s.power.target_power.value) < 0.06


@pytest.fixture(scope="module")
def dask_client():
    """A local Dask cluster of two in-process workers (threads: fast to start, same scheduling)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=power.LOCAL_CLUSTER_HTTP) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.mark.parametrize("blocks_per_task", [1, 3])
def test_a_dask_cluster_gives_the_same_answer_whatever_the_chunks(dask_client, blocks_per_task):
    """Blocks arrive in any order from any worker; tallies are whole numbers, so the sums agree."""
    s, d = scenario("nct04225780"), design("nct04225780")
    trials = 3 * power.BLOCK_TRIALS + 7
    local = power.estimate_power(s, d, [8, 12], trials, seed=21)
    seen = []
    spread = power.estimate_power(s, d, [8, 12], trials, seed=21, progress=seen.append,
                                  mapper=power.dask_mapper(dask_client, blocks_per_task=blocks_per_task))
    assert spread.results == local.results and spread.analytic == local.analytic
    assert sum(seen) == 2 * trials


def test_a_dask_mapper_needs_whole_tasks(dask_client):
    with pytest.raises(InvalidInput, match="blocks per task"):
        power.dask_mapper(dask_client, blocks_per_task=0)


@pytest.mark.parametrize("fmt", power_curve.FIGURE_FORMATS)
def test_the_power_curve_is_drawn_in_each_format(fmt):
    report = power.estimate_power(scenario("nct04225780"), design("nct04225780"), [5, 10], 200, seed=1)
    figure = power_curve.power_figure(report, fmt)
    magic = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}[fmt]
    assert figure.startswith(magic)
    if fmt == "svg":
        assert b"viremia_duration (logrank)" in figure and b"patients per arm" in figure


def test_the_power_curve_refuses_an_unknown_format():
    report = power.estimate_power(scenario("nct04225780"), design("nct04225780"), [5], 50, seed=1)
    with pytest.raises(InvalidInput, match="plot format"):
        power_curve.power_figure(report, "gif")


def test_freed_memory_is_kept_under_glibc():
    """The allocator setting the command and the Dask workers make (a no-op without glibc)."""
    import platform

    assert power.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
