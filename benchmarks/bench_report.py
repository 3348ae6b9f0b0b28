"""Benchmark of the trial report: seconds to build it for 100 and for 10,000 subjects.

Issue 6: the report for 100 subjects builds in under 5 s and for 10,000 in under 60 s on this
machine. Measured, for protocol sle-cmv-il2 and its ``default`` scenario:

1. **build** — from a ``TrialData`` snapshot to the HTML and JSON: derivations (ADSL, ADTTE,
   ADLB), every endpoint's analysis, the safety tables, every figure, the page; libraries already
   imported, best of ``--repeats`` runs (what a long-running server pays per report);
2. **command** — ``cmvtrial report --simulate default --n 100`` as a fresh process, wall clock:
   interpreter start, imports, the simulation, the report (what a user at a terminal waits);
3. **snapshot** — simulating the trial and turning it into a ``TrialData`` (not part of the report;
   a database snapshot will have its own cost), shown for context.

The simulator randomizes at most 5,000 patients per trial, so the 10,000-subject snapshot joins two
simulated trials of 5,000 (seeds 1 and 2, subject ids prefixed).

Usage::

    .venv/bin/python benchmarks/bench_report.py            # print the rows
    .venv/bin/python benchmarks/bench_report.py --write    # and replace them in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench_report:start -->", "<!-- bench_report:end -->"
PROTOCOL, SCENARIO = "sle-cmv-il2", "default"
SIMULATION_START = datetime.date(2025, 1, 1)
LARGEST_SIMULATION = 5000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def snapshot(n: int):
    """A TrialData of ``n`` simulated subjects (joined from several trials above 5,000)."""
    from cmvtrial.analysis.from_simulation import trial_data_from_simulation
    from cmvtrial.analysis.trial_data import TrialData
    from cmvtrial.protocols import load_shipped_protocol
    from cmvtrial.simulation.scenarios import load_shipped_scenario
    from cmvtrial.simulation.virtual_trial import simulate_trial

    protocol, _ = load_shipped_protocol(PROTOCOL)
    scenario = load_shipped_scenario(PROTOCOL, SCENARIO)
    parts, left, seed = [], n, 1
    while left > 0:
        size = min(left, LARGEST_SIMULATION)
        trial = simulate_trial(protocol, scenario, seed, SIMULATION_START, size)
        parts.append(trial_data_from_simulation(protocol, trial, id_prefix=f"T{seed}-" if n > LARGEST_SIMULATION else ""))
        left, seed = left - size, seed + 1
    if len(parts) == 1:
        return parts[0]
    return TrialData.create(
        protocol=protocol,
        data_cutoff=max(part.data_cutoff for part in parts),
        subjects=[s for part in parts for s in part.subjects],
        observations=pd.concat([part.observations for part in parts], ignore_index=True),
        doses=pd.concat([part.doses for part in parts], ignore_index=True),
        adverse_events=[e for part in parts for e in part.adverse_events],
        screening=[c for part in parts for c in part.screening],
        source=f"{len(parts)} simulated trials joined",
    )


def build_seconds(data, repeats: int) -> tuple[float, int]:
    from cmvtrial.adapters.reports.report_html import build_report

    build_report(data)  # imports and caches warm
    best, size = float("inf"), 0
    for _ in range(repeats):
        started = time.perf_counter()
        report = build_report(data)
        best = min(best, time.perf_counter() - started)
        size = len(report.html.encode("utf-8"))
    return best, size


def command_seconds(n: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [str(Path(sys.executable).parent / "cmvtrial"), "report", "--simulate", SCENARIO, "--protocol", PROTOCOL,
             "--n", str(n), "--out", str(Path(folder) / "report.html")],
            check=True, capture_output=True,
        )
        return time.perf_counter() - started


def rows(repeats: int) -> list[str]:
    today = datetime.date.today().isoformat()
    machine = f"{os.cpu_count()} CPUs, {cpu_model()}"
    out = []
    for n in (100, 10_000):
        started = time.perf_counter()
        data = snapshot(n)
        setup = time.perf_counter() - started
        seconds, size = build_seconds(data, repeats if n <= 1000 else 1)
        budget = 5 if n <= 100 else 60
        out.append(f"| {today} | {machine} | report build, {n:,} subjects ({len(data.observations):,} values): "
                   f"derivations, analyses, figures, HTML | {seconds:.1f} s (budget {budget} s; page {size / 1e6:.1f} MB) |")
        out.append(f"| {today} | {machine} | snapshot of {n:,} simulated subjects (simulation + TrialData, not the report) "
                   f"| {setup:.1f} s |")
    out.insert(1, f"| {today} | {machine} | `cmvtrial report --simulate default --n 100` end to end (new process, "
                  f"imports, simulation, report) | {command_seconds(100):.1f} s |")
    return out


def write(new_rows: list[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no {START} … {END} section to update")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(head + START + "\n" + "\n".join(new_rows) + "\n" + END + tail, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="builds of the 100-subject report (best is kept)")
    parser.add_argument("--write", action="store_true", help="replace the rows in docs/benchmarks.md")
    args = parser.parse_args()
    result = rows(args.repeats)
    print("\n".join(result))
    if args.write:
        write(result)


if __name__ == "__main__":
    main()
