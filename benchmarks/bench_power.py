"""Benchmark of the power computation: trials per second, against a lifelines loop, and peak memory.

Measures, on this machine, for two-arm trials of 100 patients (50 per arm):

1. "power", the headline: the whole power computation (virtual patients with the kinetics model,
   weekly visits with jitter, dropout and assay noise, then every endpoint's test: log-rank, Cox,
   ANCOVA, the two-stage decline-rate test) as the plain ``cmvtrial simulate power`` runs it on this
   machine — a process pool over every CPU this process may use, started afresh each run and its
   start-up timed, as the command pays it each time;
2. the same in one process (``--processes 1``), through
   :func:`cmvtrial.simulation.power.estimate_power` with no mapper;
3. the whole power computation on a Dask ``LocalCluster`` of 1 and of 2 worker processes (one
   thread each; the cluster's start-up is not timed), for the speed-up per worker;
4. the batched log-rank + Cox kernels alone, on trials simulated once;
5. a lifelines loop (``logrank_test`` + ``CoxPHFitter``) on the same trials, for the ratio against
   the headline;
6. peak resident memory of a power run over ``--memory-trials`` trials in one fresh process.

Every run does what ``cmvtrial simulate power`` does (the pool is the command's own,
``simulation_commands._process_pool``), including :func:`keep_freed_memory` in each process that
runs blocks. Besides wall-clock rates it reports CPU time — trials per CPU-second for the local
runs (this process's ``getrusage`` plus the pool workers', reaped at the pool's shutdown), CPU
seconds per 10,000 trials on Dask (the workers' own ``getrusage``) — which other processes on a
shared machine disturb much less, and the load average during the run: write the rows to the docs
only from a run on an otherwise idle machine.

Usage::

    .venv/bin/python benchmarks/bench_power.py            # print the rows
    .venv/bin/python benchmarks/bench_power.py --write    # and replace them in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_power:start -->", "<!-- bench_power:end -->"
PROTOCOL, SCENARIO, PER_ARM = "sle-cmv-il2", "default", 50


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load():
    from cmvtrial.protocols import load_shipped_protocol
    from cmvtrial.simulation.design import design_from_protocol
    from cmvtrial.simulation.scenarios import load_shipped_scenario

    scenario = load_shipped_scenario(PROTOCOL, SCENARIO)
    protocol, _ = load_shipped_protocol(PROTOCOL)
    return scenario, design_from_protocol(protocol, scenario)


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (a pool's workers, once it
    is shut down)."""
    import resource

    return sum(usage.ru_utime + usage.ru_stime
               for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


def local_power(trials: int, processes: int, repeats: int = 3) -> tuple[float, float, int]:
    """(trials per second, trials per CPU-second, processes that ran blocks), best of ``repeats``, for
    ``cmvtrial simulate power --processes N``: a fresh pool each run (start-up timed), or this
    process for one."""
    import contextlib

    from cmvtrial.adapters.cli.simulation_commands import _process_pool
    from cmvtrial.simulation.power import block_count, estimate_power, keep_freed_memory

    scenario, design = load()
    keep_freed_memory()  # as the command does, before any pool is started
    estimate_power(scenario, design, [PER_ARM], 2000, seed=0)  # warm up
    blocks = block_count([PER_ARM], trials)
    best, best_cpu = np.inf, np.inf
    for repeat in range(repeats):
        started, cpu = time.perf_counter(), _cpu_seconds()
        with contextlib.ExitStack() as stack:
            mapper = _process_pool(stack, processes, blocks)
            estimate_power(scenario, design, [PER_ARM], trials, seed=repeat, mapper=mapper)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, _cpu_seconds() - cpu)
    return trials / best, trials / best_cpu, min(processes, blocks)


def _process_cpu_seconds() -> float:
    """CPU seconds of the calling process (run on each Dask worker through ``client.run``)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def dask_power(trials: int, sizes: tuple[int, ...] = (1, 2), repeats: int = 4) -> dict[int, tuple[float, float]]:
    """(trials per second, the workers' CPU seconds per 10,000 trials) on local Dask clusters of each
    size in ``sizes`` (worker processes, one thread each; start-up not timed). The clusters are
    measured in turns, best of ``repeats`` each, so that load from other processes on a shared
    machine hits them alike."""
    import contextlib
    import logging

    from distributed import Client, LocalCluster

    from cmvtrial.simulation.power import LOCAL_CLUSTER_HTTP, dask_mapper, estimate_power

    scenario, design = load()
    best, best_cpu = dict.fromkeys(sizes, np.inf), dict.fromkeys(sizes, np.inf)
    with contextlib.ExitStack() as stack:
        clients = {}
        for workers in sizes:
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=LOCAL_CLUSTER_HTTP, silence_logs=logging.ERROR))
            clients[workers] = stack.enter_context(Client(cluster))
            estimate_power(scenario, design, [PER_ARM], 2000, seed=0, mapper=dask_mapper(clients[workers]))  # warm up
        for repeat in range(repeats):
            for workers, client in clients.items():
                before = client.run(_process_cpu_seconds)
                started = time.perf_counter()
                estimate_power(scenario, design, [PER_ARM], trials, seed=repeat, mapper=dask_mapper(client))
                best[workers] = min(best[workers], time.perf_counter() - started)
                after = client.run(_process_cpu_seconds)
                cpu = sum(after[worker] - before[worker] for worker in after)
                best_cpu[workers] = min(best_cpu[workers], cpu * 10_000 / trials)
    return {workers: (trials / best[workers], best_cpu[workers]) for workers in sizes}


def simulated_trials(trials: int):
    from cmvtrial.simulation.cohort import simulate_cohort

    scenario, design = load()
    il2 = np.zeros((trials, 2 * PER_ARM), dtype=bool)
    il2[:, :PER_ARM] = True
    outcome = simulate_cohort(np.random.default_rng(1), scenario, design, il2)
    return outcome.time, outcome.event, il2


def batched_survival(trials: int, repeats: int = 5) -> float:
    from cmvtrial.simulation import batched_survival as bs

    time_, event, group = simulated_trials(trials)
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        sets = bs.risk_sets(time_, event, group)
        bs.logrank(None, None, None, sets=sets)
        bs.cox_binary(None, None, None, sets=sets)
        best = min(best, time.perf_counter() - started)
    return trials / best


def lifelines_loop(trials: int) -> float:
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.statistics import logrank_test

    time_, event, group = simulated_trials(trials)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(trials):
            t, e, g = time_[i], event[i], group[i]
            logrank_test(t[g], t[~g], e[g], e[~g])
            CoxPHFitter().fit(pd.DataFrame({"T": t, "E": e.astype(int), "x": g.astype(float)}), "T", "E")
    return trials / (time.perf_counter() - started)


def peak_memory_mb(trials: int) -> float:
    """Peak RSS of a fresh process running a power computation over ``trials`` trials.

    Read from /proc/self/status (VmHWM), which starts afresh at exec; ``ru_maxrss`` would carry
    over the parent's peak at fork time."""
    code = (
        "import sys; sys.path.insert(0, %r); import bench_power as b; "
        "from cmvtrial.simulation.power import estimate_power, keep_freed_memory; s, d = b.load(); "
        "keep_freed_memory(); estimate_power(s, d, [%d], %d, seed=0); "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
    ) % (str(Path(__file__).parent), PER_ARM, trials)
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def rows(trials: int, lifelines_trials: int, memory_trials: int) -> list[str]:
    today = datetime.date.today().isoformat()
    load_before = os.getloadavg()[0]
    from cmvtrial.adapters.cli.simulation_commands import available_cpus

    memory = peak_memory_mb(memory_trials)
    whole, whole_per_cpu, processes = local_power(trials, available_cpus())
    single, single_per_cpu, _ = local_power(trials, 1)
    dask = dask_power(trials)
    (dask_one, cpu_one), (dask_two, cpu_two) = dask[1], dask[2]
    kernels = batched_survival(trials)
    loop = lifelines_loop(lifelines_trials)
    load = max(load_before, os.getloadavg()[0])
    machine = f"{os.cpu_count()} CPUs, {cpu_model()}, load ≤ {load:.1f}"
    return [
        f"| {today} | {machine} | power: simulate + log-rank, Cox, ANCOVA, two-stage decline "
        f"({trials} trials × 100 patients), as the plain command runs it: {processes} local processes, start-up "
        f"included | {whole:,.0f} trials/s ({whole / loop:,.0f}× the lifelines loop); "
        f"{whole_per_cpu:,.0f} trials per CPU-second |",
        f"| {today} | {machine} | the same in one process (`--processes 1`) "
        f"| {single:,.0f} trials/s; {single_per_cpu:,.0f} trials per CPU-second |",
        f"| {today} | {machine} | the same on a Dask LocalCluster, 1 / 2 worker processes (`--workers 2`) "
        f"| {dask_one:,.0f} / {dask_two:,.0f} trials/s (speed-up {dask_two / dask_one:.2f}× with 2 workers); "
        f"workers' CPU s per 10,000 trials {cpu_one:.2f} / {cpu_two:.2f} |",
        f"| {today} | {machine} | batched log-rank + Cox only ({trials} trials × 100 patients) | {kernels:,.0f} trials/s |",
        f"| {today} | {machine} | lifelines loop, log-rank + CoxPHFitter ({lifelines_trials} trials × 100 patients) "
        f"| {loop:,.1f} trials/s |",
        f"| {today} | {machine} | peak memory, power over {memory_trials:,} trials in one process (whole process RSS) | {memory:,.0f} MB |",
    ]


def write(new_rows: list[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no {START} … {END} section to update")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + START + "\n" + "\n".join(new_rows) + "\n" + END + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000, help="trials for the batched measurements")
    parser.add_argument("--lifelines-trials", type=int, default=100, help="trials for the lifelines loop")
    parser.add_argument("--memory-trials", type=int, default=100_000, help="trials for the peak-memory run")
    parser.add_argument("--write", action="store_true", help="replace the rows in docs/benchmarks.md")
    args = parser.parse_args()
    result = rows(args.trials, args.lifelines_trials, args.memory_trials)
    print("\n".join(result))
    if args.write:
        write(result)


if __name__ == "__main__":
    main()
