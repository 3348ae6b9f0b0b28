"""`cmvtrial simulate trial` and `cmvtrial simulate power`: the in-silico trial from the command line.

Thin by design: load the protocol and scenario, call :mod:`cmvtrial.simulation`, render. The clock
is read here (default start date, elapsed seconds), never in the simulation. Only typer/stdlib at
module top: NumPy, SciPy, pydantic and the simulation load inside the commands so ``cmvtrial
--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.output import handles_errors

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol
    from cmvtrial.simulation.power import PowerReport
    from cmvtrial.simulation.scenario import Scenario

DEFAULT_SEED = 1
MAX_WORKERS = 64

ProtocolOption = Annotated[
    str,
    typer.Option("--protocol", help="A shipped protocol id (see `cmvtrial protocol list`).", show_default=False),
]
ScenarioOption = Annotated[
    str,
    typer.Option("--scenario", help="A scenario shipped for the protocol: default, null, ..."),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same result.")]


def _load(protocol_id: str, scenario_name: str) -> tuple[Protocol, Scenario]:
    from cmvtrial.protocols import load_shipped_protocol
    from cmvtrial.simulation.scenarios import load_shipped_scenario

    protocol, _text = load_shipped_protocol(protocol_id)
    return protocol, load_shipped_scenario(protocol_id, scenario_name)


def _parse_sizes(text: str | None) -> list[int] | None:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return None
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise InvalidInput(
                f"--sizes must be whole numbers separated by commas (e.g. 40,60,100), not '{text}'",
                field="sizes",
                value=text,
            )
        sizes.append(int(part))
    if len(set(sizes)) != len(sizes):
        raise InvalidInput(f"--sizes lists a size twice: '{text}'", field="sizes", value=text)
    return sizes


def _parse_date(text: str | None) -> date:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"--start-date must be an ISO date YYYY-MM-DD, not '{text}'", field="start_date", value=text) from None


def _write(path: str, text: str) -> None:
    from cmvtrial.errors import InvalidInput

    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror}", field="out", value=path) from None


def _render_trial(summary: dict[str, Any], protocol_id: str, scenario: str, seed: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(
        f"Virtual trial of {protocol_id} (scenario {scenario}, seed {seed}): {summary['screened']} screened, "
        f"{summary['not_eligible']} not eligible, {summary['declined_consent']} declined consent, "
        f"{summary['randomized']} randomized."
    )
    failures = Table(title="Screen failures by criterion")
    failures.add_column("criterion")
    failures.add_column("candidates", justify="right")
    for criterion, count in summary["screen_failures_by_criterion"].items():
        failures.add_row(criterion, str(count))
    console.print(failures)
    arms = Table(title="Arms (simulated randomization)")
    for column in ("arm", "randomized", "CMV negative", "median days (negative)", "adverse events (patients)"):
        arms.add_column(column)
    for arm, entry in summary["arms"].items():
        median = entry["median_days_to_negativity_among_negative"]
        events = ", ".join(f"{name} {count}" for name, count in entry["patients_with_adverse_event"].items())
        arms.add_row(arm, str(entry["randomized"]), str(entry["cmv_negative"]),
                     "-" if median is None else f"{median:g}", events or "-")
    console.print(arms)


def _render_power(report: PowerReport, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(
        title=f"Power by simulation: {report.protocol}, scenario {report.scenario}, {report.trials} trials per size, "
        f"alpha {report.alpha:g}"
    )
    for column in ("n per arm", "endpoint", "test", "power", "MC s.e."):
        table.add_column(column, justify="right" if column in ("n per arm", "power", "MC s.e.") else "left")
    for row in report.results:
        label = f"{row.power:.3f}" + (" (type I)" if row.type_i_error else "")
        table.add_row(str(row.n_per_arm), row.endpoint, row.test, label, f"{row.mc_se:.3f}")
    console.print(table)
    analytic = Table(title=f"Analytic cross-check (model hazard ratio {report.model_hazard_ratio:.3f})")
    for column in ("n per arm", "mean events", "Schoenfeld", "Freedman"):
        analytic.add_column(column, justify="right")
    for row in report.analytic:
        analytic.add_row(str(row.n_per_arm), f"{row.mean_events:.1f}", f"{row.schoenfeld_power:.3f}", f"{row.freedman_power:.3f}")
    console.print(analytic)
    reached = ", ".join(
        f"{name} {'n=' + str(n) if n is not None else 'not reached'}" for name, n in report.required_n_per_arm.items()
    )
    console.print(f"Smallest size per arm with power >= {report.target_power:g}: {reached}.")
    if report.schoenfeld_n_per_arm is not None:
        console.print(
            f"Schoenfeld at the model's hazard ratio: {report.schoenfeld_events_needed:.0f} events, "
            f"about {report.schoenfeld_n_per_arm} patients per arm at {report.event_probability:.0%} with an event."
        )
    console.print(f"{report.trials * len(report.analytic)} trials in {seconds:.1f} s.")


def register(app: typer.Typer) -> None:
    simulate_app = typer.Typer(
        help="The in-silico trial: simulate one trial, or power and sample size by simulation.",
        no_args_is_help=True,
    )
    app.add_typer(simulate_app, name="simulate")

    @simulate_app.command("trial")
    @handles_errors
    def trial(
        protocol: ProtocolOption,
        scenario: ScenarioOption = "default",
        seed: SeedOption = DEFAULT_SEED,
        start_date: Annotated[
            str | None, typer.Option("--start-date", help="First screening day (YYYY-MM-DD); default today.")
        ] = None,
        n: Annotated[
            int | None, typer.Option("--n", help="Patients to randomize; default the protocol's planned size.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the whole trial as JSON.")] = False,
        out: Annotated[str | None, typer.Option("--out", help="Write the whole trial as JSON to this file.")] = None,
    ) -> None:
        """Simulate one trial patient by patient: screening, randomization, visits, doses, adverse events."""
        from cmvtrial.simulation.virtual_trial import simulate_trial

        loaded_protocol, loaded_scenario = _load(protocol, scenario)
        result = simulate_trial(loaded_protocol, loaded_scenario, seed, _parse_date(start_date), n)
        document = result.to_dict()
        if out is not None:
            _write(out, json.dumps(document, indent=1) + "\n")
        if as_json:
            typer.echo(json.dumps(document, indent=1))
        else:
            _render_trial(document["summary"], loaded_protocol.id, loaded_scenario.name, seed)
            if out is not None:
                typer.echo(f"Wrote {out}.")

    @simulate_app.command("power")
    @handles_errors
    def power(
        protocol: ProtocolOption,
        scenario: ScenarioOption = "default",
        n_trials: Annotated[
            int, typer.Option("--n-trials", "--trials", help="Simulated trials per sample size.")
        ] = 1000,
        sizes: Annotated[
            str | None,
            typer.Option("--sizes", "--n-per-arm", help="Patients per arm, comma-separated; default the protocol's plan."),
        ] = None,
        seed: SeedOption = DEFAULT_SEED,
        workers: Annotated[
            int, typer.Option("--workers", help="Local worker processes; the answer does not depend on it.")
        ] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Power of each endpoint's test for each sample size, by Monte-Carlo simulation."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from concurrent.futures import ProcessPoolExecutor

        from cmvtrial.errors import InvalidInput
        from cmvtrial.simulation.design import design_from_protocol
        from cmvtrial.simulation.power import estimate_power

        loaded_protocol, loaded_scenario = _load(protocol, scenario)
        design = design_from_protocol(loaded_protocol, loaded_scenario)
        chosen = _parse_sizes(sizes) or [design.planned_per_arm()[design.control_arm]]
        if not 1 <= workers <= MAX_WORKERS:
            raise InvalidInput(f"--workers must be between 1 and {MAX_WORKERS}", field="workers", value=workers)
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            mapper = None
            if workers > 1:
                pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
                mapper = lambda function, tasks: pool.map(function, tasks)  # noqa: E731
            progress = stack.enter_context(
                Progress(
                    TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True, disable=as_json,
                )
            )
            task = progress.add_task("trials", total=n_trials * len(chosen))
            report = estimate_power(
                loaded_scenario, design, chosen, n_trials, seed,
                progress=lambda done: progress.advance(task, done), mapper=mapper,
            )
        seconds = time.perf_counter() - started
        if as_json:
            document = {
                "protocol": report.protocol,
                "scenario": report.scenario,
                "trials": report.trials,
                "seed": report.seed,
                "seconds": round(seconds, 3),
                **{key: value for key, value in report.to_dict().items() if key not in {"protocol", "scenario", "trials", "seed"}},
            }
            typer.echo(json.dumps(document, indent=1))
        else:
            _render_power(report, seconds)
