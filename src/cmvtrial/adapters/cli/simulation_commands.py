"""`cmvtrial simulate trial` and `cmvtrial simulate power`: the in-silico trial from the command line.

Thin by design: load the protocol and scenario, call :mod:`cmvtrial.simulation` (and, for
``simulate trial --db``, the demo loader of services/demo_trial.py), render. The clock is read here
(default start date and ``--as-of``, elapsed seconds), never in the simulation or the loader; the
process pool, Dask client or local cluster of ``simulate power`` is made here too. Only typer/stdlib at module
top: NumPy, SciPy, pydantic, Dask and the simulation load inside the commands so ``cmvtrial
--help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.output import handles_errors

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol
    from cmvtrial.simulation.power import Mapper, PowerReport
    from cmvtrial.simulation.scenario import Scenario

DEFAULT_SEED = 1
MAX_WORKERS = 64
#: The most local processes ``simulate power --processes`` accepts, unless this process may use more CPUs.
MAX_PROCESSES = 64
#: Seconds to wait for a Dask scheduler before giving up.
SCHEDULER_TIMEOUT_S = 10

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


def _complete_by(protocol: Protocol, scenario: Scenario, seed: int, n: int | None, as_of: date) -> date:
    """The first screening day that has the whole simulated trial over by ``as_of``: simulate once
    from ``as_of`` to learn how long it runs (the course does not depend on the start date)."""
    from cmvtrial.services.demo_trial import last_day
    from cmvtrial.simulation.virtual_trial import simulate_trial

    trial = simulate_trial(protocol, scenario, seed, as_of, n)
    return as_of - (last_day(trial) - as_of)


def _load_into_database(
    protocol: Protocol, scenario: Scenario, seed: int, n: int | None, db: str, start_date: str | None,
    as_of_text: str | None, if_empty: bool, sign: bool, as_user: str | None, as_json: bool, out: str | None,
) -> None:
    """`simulate trial --db`: the virtual trial entered through the services (services/demo_trial.py)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from cmvtrial.adapters.cli.admin_commands import _actor, _database
    from cmvtrial.services import demo_trial
    from cmvtrial.simulation.virtual_trial import simulate_trial

    as_of = _parse_date(as_of_text)  # the one clock read: "today" at the terminal
    with _database(db) as (_settings, database):
        if if_empty and (held := demo_trial.trial_subject_count(database.session_factory)):
            typer.echo(f"{database.url} already holds {held} subject(s); no demo data loaded (--if-empty).")
            return
        admin = _actor(database, as_user)
        start = _parse_date(start_date) if start_date else _complete_by(protocol, scenario, seed, n, as_of)
        trial = simulate_trial(protocol, scenario, seed, start, n)
        if out is not None:
            _write(out, json.dumps(trial.to_dict(), indent=1) + "\n")
        started = time.perf_counter()
        with Progress(TextColumn("loading subjects"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.description}"), console=Console(stderr=True), transient=True,
                      disable=as_json) as progress:
            task = progress.add_task("", total=len(trial.candidates))

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = demo_trial.load_virtual_trial(database.session_factory, admin, trial, as_of=as_of,
                                                   progress=advance, sign=sign)
        seconds = time.perf_counter() - started
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "start_date": start.isoformat(), "seconds": round(seconds, 1)},
                              indent=1))
        return
    _render_load(result, start, seconds)


def _render_load(result: Any, start: date, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    counts = result.counts
    arms = ", ".join(f"{arm} {count}" for arm, count in result.arms.items())
    console.print(
        f"Loaded the virtual trial of {result.protocol} (scenario {result.scenario}, seed {result.seed}), "
        f"screening from {start} and entered up to {result.as_of}, in {seconds:.0f} s: "
        f"{counts.get('screened', 0)} screened, {counts.get('randomized', 0)} randomized ({arms or 'none'})."
    )
    table = Table(title="Entered through the services", title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    for name, count in sorted(counts.items()):
        table.add_row(name.replace("_", " "), str(count))
    console.print(table)
    if result.accounts:
        accounts = Table(title="Site staff created — keep these passwords", title_justify="left")
        for column in ("user", "role", "site", "password"):
            accounts.add_column(column)
        for account in result.accounts:
            accounts.add_row(account.username, account.role, account.site_code or "all", account.password)
        console.print(accounts)
    for note in result.skipped:
        console.print(f"not entered: {note}")


def _plot_format(path: str | None) -> str:
    """The figure format named by the --plot file's extension (checked before any simulation runs)."""
    from cmvtrial.errors import InvalidInput
    from cmvtrial.simulation.power_curve import FIGURE_FORMATS

    if path is None:
        return ""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise InvalidInput(f"--plot must name a .png, .svg or .pdf file, not '{path}'", field="plot", value=path)
    return suffix


def _write_bytes(path: str, data: bytes) -> None:
    from cmvtrial.errors import InvalidInput

    try:
        Path(path).write_bytes(data)
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror}", field="plot", value=path) from None


def _dask(stack: contextlib.ExitStack, scheduler: str | None, workers: int) -> Any:
    """The Dask mapper: a client of the scheduler at ``scheduler``, or of a local cluster of
    ``workers`` processes; None (in-process) for one local worker."""
    if scheduler is None and workers == 1:
        return None
    import logging

    from cmvtrial.errors import ClusterUnavailable
    from cmvtrial.simulation.power import LOCAL_CLUSTER_HTTP, dask_mapper

    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=LOCAL_CLUSTER_HTTP, silence_logs=logging.ERROR))
        client = stack.enter_context(Client(cluster))
    else:
        try:
            client = stack.enter_context(Client(scheduler, timeout=SCHEDULER_TIMEOUT_S))
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler at {scheduler}: {error}",
                                     scheduler=scheduler) from None
    return dask_mapper(client)


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS keeps one (Linux; a container
    or ``taskset`` may allow fewer than the machine has), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1


def _check_processes(processes: int | None, workers: int | None, scheduler: str | None) -> int:
    """The local processes to run the blocks in: ``--processes``, default every CPU this process may
    use; refused with ``--workers``/``--scheduler`` (the blocks then run on Dask) and outside
    1..max(MAX_PROCESSES, CPUs) — more than the CPUs cannot run faster, and each costs memory."""
    from cmvtrial.errors import InvalidInput

    if processes is None:
        return available_cpus()
    if workers is not None or scheduler is not None:
        raise InvalidInput("give --processes (local processes) or --workers/--scheduler (Dask), not both",
                           field="processes", value=processes)
    limit = max(MAX_PROCESSES, available_cpus())
    if not 1 <= processes <= limit:
        raise InvalidInput(f"--processes must be between 1 and {limit}", field="processes", value=processes)
    return processes


def _process_pool(stack: contextlib.ExitStack, processes: int, blocks: int) -> Mapper | None:
    """The mapper of a pool of ``min(processes, blocks)`` local processes; None (in-process) when
    that is one, where a pool would only add its start-up.

    Each worker keeps freed memory as this process does (:func:`keep_freed_memory`, the pool's
    initializer). Spawn-safe: the work function and the initializer are module-level and picklable,
    so the platform's start method serves (fork on Linux, spawn or forkserver elsewhere). Leaving
    the stack — at the end, or on Ctrl-C or an error — cancels the blocks not yet started and waits
    for the running ones (well under a second), so no worker outlives the command.
    """
    size = min(processes, blocks)
    if size <= 1:
        return None
    from concurrent.futures import ProcessPoolExecutor

    from cmvtrial.simulation.power import keep_freed_memory

    pool = stack.enter_context(ProcessPoolExecutor(max_workers=size, initializer=keep_freed_memory))
    stack.callback(pool.shutdown, wait=True, cancel_futures=True)
    return pool.map


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
            str | None,
            typer.Option("--start-date", help="First screening day (YYYY-MM-DD); default today, or with --db the "
                         "day that lets the whole trial be over by --as-of."),
        ] = None,
        n: Annotated[
            int | None, typer.Option("--n", help="Patients to randomize; default the protocol's planned size.")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the whole trial (with --db: what was loaded) as JSON.")] = False,
        out: Annotated[str | None, typer.Option("--out", help="Write the whole trial as JSON to this file.")] = None,
        db: Annotated[
            str | None,
            typer.Option("--db", help="Load the trial into this initialised, empty trial database through the "
                         "services a site uses (see docs/simulation.md).", show_default=False),
        ] = None,
        as_of: Annotated[
            str | None, typer.Option("--as-of", help="With --db: enter what happened up to this date (default today).")
        ] = None,
        if_empty: Annotated[
            bool, typer.Option("--if-empty", help="With --db: do nothing when the trial already holds subjects.")
        ] = False,
        sign: Annotated[
            bool, typer.Option("--sign/--no-sign", help="With --db: the investigators sign every visit (slow: each "
                               "signature re-checks a password).")
        ] = True,
        as_user: Annotated[
            str | None,
            typer.Option("--as", help="With --db: the administrator who adds sites and staff; default the one init created.",
                         show_default=False),
        ] = None,
    ) -> None:
        """Simulate one trial patient by patient: screening, randomization, visits, doses, adverse events."""
        from cmvtrial.simulation.virtual_trial import simulate_trial

        loaded_protocol, loaded_scenario = _load(protocol, scenario)
        if db is not None:
            _load_into_database(loaded_protocol, loaded_scenario, seed, n, db, start_date, as_of, if_empty, sign,
                                as_user, as_json, out)
            return
        for name, given in (("--as-of", as_of), ("--if-empty", if_empty or None), ("--as", as_user),
                            ("--no-sign", None if sign else True)):
            if given is not None:
                from cmvtrial.errors import InvalidInput

                raise InvalidInput(f"{name} goes with --db", field=name.lstrip("-"))
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
        processes: Annotated[
            int | None,
            typer.Option("--processes", help="Spread the trials over this many local processes (default: every CPU "
                         "this process may use; 1: all in this process). The answer does not depend on it.",
                         show_default=False),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option("--workers", help="Instead, start a local Dask cluster of this many worker processes "
                         "(1: run in this process); the answer does not depend on it.", show_default=False),
        ] = None,
        scheduler: Annotated[
            str | None,
            typer.Option("--scheduler", help="Run on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786).",
                         show_default=False),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        plot: Annotated[
            str | None,
            typer.Option("--plot", help="Draw the power curve into this file (.png, .svg or .pdf).", show_default=False),
        ] = None,
    ) -> None:
        """Power of each endpoint's test for each sample size, by Monte-Carlo simulation."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from cmvtrial.errors import InvalidInput
        from cmvtrial.simulation.design import design_from_protocol
        from cmvtrial.simulation.power import block_count, estimate_power, keep_freed_memory
        from cmvtrial.simulation.power_curve import power_figure

        if workers is not None and not 1 <= workers <= MAX_WORKERS:
            raise InvalidInput(f"--workers must be between 1 and {MAX_WORKERS}", field="workers", value=workers)
        if scheduler is not None and workers is not None and workers > 1:
            raise InvalidInput("give --workers (a local cluster) or --scheduler (a running one), not both",
                               field="workers")
        local_processes = _check_processes(processes, workers, scheduler)
        plot_format = _plot_format(plot)
        loaded_protocol, loaded_scenario = _load(protocol, scenario)
        design = design_from_protocol(loaded_protocol, loaded_scenario)
        chosen = _parse_sizes(sizes) or [design.planned_per_arm()[design.control_arm]]
        keep_freed_memory()  # blocks may run here: reuse freed memory rather than fault in new pages
        started = time.perf_counter()
        with contextlib.ExitStack() as stack:
            if workers is None and scheduler is None:
                mapper = _process_pool(stack, local_processes, block_count(chosen, n_trials))
            else:
                mapper = _dask(stack, scheduler, workers or 1)
            # No refresh thread (auto_refresh off; redrawn as each block lands): the pool's workers
            # may be forked while the bar is shown, and a fork must not copy a thread holding a lock.
            progress = stack.enter_context(
                Progress(
                    TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=True, disable=as_json, auto_refresh=False,
                )
            )
            task = progress.add_task("trials", total=n_trials * len(chosen))

            def advance(done: int) -> None:
                progress.advance(task, done)
                progress.refresh()

            report = estimate_power(
                loaded_scenario, design, chosen, n_trials, seed, progress=advance, mapper=mapper,
            )
        seconds = time.perf_counter() - started
        if plot is not None:
            _write_bytes(plot, power_figure(report, plot_format))
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
            if plot is not None:
                typer.echo(f"Wrote the power curve to {plot}.")
