"""`cmvtrial analyze tte`, `cmvtrial report` and `cmvtrial export adam`: the analyses from the command line.

Thin by design: read the input (a CSV, a simulated trial, or the database through the analysis
snapshot service), call :mod:`cmvtrial.analysis` / :mod:`cmvtrial.adapters.reports`, write the
output. The clock is read here (the report's date, the default simulation start), never in the
analyses. Only typer/stdlib at module top: pandas, matplotlib, lifelines and the rest load inside
the commands so that ``cmvtrial --help`` stays fast.

Where the trial comes from (``report`` and ``export adam``):

- ``--simulate SCENARIO --protocol ID [--seed S] [--n N]``: a virtual trial from the simulator
  (:mod:`cmvtrial.simulation`), no database needed;
- otherwise the database (``--db`` or ``CMVTRIAL_DATABASE_URL``) read, as the ``--as`` user, by
  ``cmvtrial.services.analysis_data.build_trial_data(uow, actor, data_cutoff=...)``; should that
  service be missing the command says so (exit 1) and suggests ``--simulate``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption
from cmvtrial.adapters.cli.output import DbOption, handles_errors

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from cmvtrial.analysis.trial_data import TrialData

SIMULATION_START = date(2025, 1, 1)  # fixed, so that --seed alone reproduces a simulated report
SNAPSHOT_SERVICE = "cmvtrial.services.analysis_data"

SimulateOption = Annotated[
    str | None,
    typer.Option("--simulate", help="Report on a simulated trial of this scenario (default, null, ...) instead of a database.",
                 show_default=False),
]
ProtocolOption = Annotated[
    str | None, typer.Option("--protocol", help="Protocol id of the simulated trial (with --simulate).", show_default=False)
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the simulated trial: the same seed gives the same report.")]
SizeOption = Annotated[
    int | None, typer.Option("--n", help="Patients to randomize in the simulated trial; default the protocol's size.",
                             show_default=False)
]
CutoffOption = Annotated[
    str | None, typer.Option("--cutoff", help="Data cut-off date (YYYY-MM-DD); default: all data.", show_default=False)
]


def register(app: typer.Typer) -> None:
    analyze_app = typer.Typer(help="Statistics on any table: time-to-event analysis of a CSV file.", no_args_is_help=True)
    analyze_app.command("tte")(analyze_tte)
    app.add_typer(analyze_app, name="analyze")
    app.command("report")(report)
    export_app = typer.Typer(help="Export the trial's data for other tools.", no_args_is_help=True)
    export_app.command("adam")(export_adam)
    app.add_typer(export_app, name="export")


# --- analyze tte ---------------------------------------------------------------------------


def _read_csv(path: str) -> pd.DataFrame:
    import pandas as pd

    from cmvtrial.errors import InvalidInput

    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise InvalidInput(f"cannot read {path}: no such file", field="file", value=path) from None
    except IsADirectoryError:
        raise InvalidInput(f"cannot read {path}: it is a directory", field="file", value=path) from None
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{path} is empty", field="file", value=path) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as error:
        raise InvalidInput(f"cannot read {path} as CSV: {str(error).splitlines()[0]}", field="file", value=path) from None


@handles_errors
def analyze_tte(
    file: Annotated[str, typer.Argument(help="A CSV file with one row per subject.", show_default=False)],
    time: Annotated[str, typer.Option("--time", help="Column of follow-up times (numbers, not negative).")],
    event: Annotated[str, typer.Option("--event", help="Column of event indicators: 1 event, 0 censored.")],
    arm: Annotated[str, typer.Option("--arm", help="Column of the two arms compared.")],
    strata: Annotated[
        str | None, typer.Option("--strata", help="Column of strata: stratified log-rank and Cox.", show_default=False)
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="The reference arm (default: first in sorted order).", show_default=False),
    ] = None,
    km_ci: Annotated[
        str, typer.Option("--km-ci", help="Kaplan-Meier CI transform: log (R's default), log-log or plain.")
    ] = "log",
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"km", "logrank", "cox"} as JSON (null for "not reached").')
    ] = False,
) -> None:
    """Kaplan-Meier medians per arm, log-rank test and Cox hazard ratio, as R's survival; bad input exits 2."""
    from cmvtrial.analysis.report_tables import jsonable
    from cmvtrial.analysis.time_to_event import analyze_time_to_event

    frame = _read_csv(file)
    result = analyze_time_to_event(frame, time=time, event=event, arm=arm, strata=strata, reference=reference, km_ci=km_ci)
    document = jsonable(result.to_json())
    if as_json:
        typer.echo(json.dumps(document, indent=1))
        return
    _render_tte(document, result.reference, result.treated, stratified=strata is not None, km_ci=km_ci)


def _show(value: float | None, digits: int = 4) -> str:
    return "NR" if value is None else f"{value:.{digits}g}"


def _render_tte(document: dict[str, Any], reference: str, treated: str, *, stratified: bool, km_ci: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    km = Table(title=f"Kaplan-Meier median (95% CI, {km_ci} transform; NR = not reached)", title_justify="left")
    for column in ("arm", "n", "events", "median", "95% CI"):
        km.add_column(column, justify="left" if column == "arm" else "right")
    for name, row in document["km"].items():
        lower, upper = row["median_ci"]
        km.add_row(name, str(row["n"]), str(row["events"]), _show(row["median"]), f"{_show(lower)} to {_show(upper)}")
    console.print(km)
    kind = "stratified " if stratified else ""
    logrank, cox = document["logrank"], document["cox"]
    console.print(f"{kind.capitalize()}log-rank test: chi-square {_show(logrank['chisq'], 6)}, p {_show(logrank['p'], 4)}")
    console.print(
        f"{kind.capitalize()}Cox model (Efron ties), {treated} vs {reference}: coef {_show(cox['coef'], 6)} "
        f"(SE {_show(cox['se'], 4)}), hazard ratio {_show(cox['hr'], 4)} "
        f"(95% CI {_show(cox['hr_ci'][0])} to {_show(cox['hr_ci'][1])}), Wald p {_show(cox['p'], 4)}"
    )


# --- where the trial comes from ------------------------------------------------------------


def _parse_date(text: str | None, option: str) -> date | None:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{option} must be a date YYYY-MM-DD, not '{text}'", field=option, value=text) from None


def _trial_data(
    simulate: str | None, protocol: str | None, seed: int, n: int | None, cutoff: str | None,
    db: str | None, as_user: str | None,
) -> TrialData:
    from cmvtrial.errors import InvalidInput

    data_cutoff = _parse_date(cutoff, "--cutoff")
    if simulate is not None:
        if protocol is None:
            raise InvalidInput("--simulate needs --protocol (see `cmvtrial protocol list`)", field="protocol")
        if db is not None:
            raise InvalidInput("give either --simulate or --db, not both", field="db")
        return _simulated(simulate, protocol, seed, n, data_cutoff)
    if protocol is not None or n is not None:
        raise InvalidInput("--protocol and --n go with --simulate; a database knows its protocol", field="protocol")
    return _from_database(db, as_user, data_cutoff)


def _simulated(scenario: str, protocol_id: str, seed: int, n: int | None, data_cutoff: date | None) -> TrialData:
    from cmvtrial.analysis.from_simulation import trial_data_from_simulation
    from cmvtrial.errors import InvalidInput
    from cmvtrial.protocols import load_shipped_protocol
    from cmvtrial.simulation.scenarios import load_shipped_scenario
    from cmvtrial.simulation.virtual_trial import simulate_trial

    protocol, _text = load_shipped_protocol(protocol_id)
    trial = simulate_trial(protocol, load_shipped_scenario(protocol_id, scenario), seed, SIMULATION_START, n)
    if data_cutoff is not None and data_cutoff < SIMULATION_START:
        raise InvalidInput(f"--cutoff {data_cutoff} is before the simulated trial starts ({SIMULATION_START})",
                           field="cutoff", value=data_cutoff.isoformat())
    return trial_data_from_simulation(protocol, trial, data_cutoff=data_cutoff)


def _from_database(db: str | None, as_user: str | None, data_cutoff: date | None) -> TrialData:
    import importlib

    from cmvtrial.adapters.cli.context import command_context
    from cmvtrial.errors import NotFound

    try:
        service = importlib.import_module(SNAPSHOT_SERVICE)
        build = service.build_trial_data
    except (ImportError, AttributeError):
        raise NotFound(
            "reading the trial from a database is not available yet (the analysis snapshot service "
            f"{SNAPSHOT_SERVICE}.build_trial_data is missing); use --simulate SCENARIO --protocol ID",
            field="db",
        ) from None
    with command_context(db, as_user) as cli:
        return build(cli.uow(), cli.actor, data_cutoff=data_cutoff)


# --- report --------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    from cmvtrial.errors import InvalidInput

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror}", field="out", value=str(path)) from None


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True, highlight=False))


@handles_errors
def report(
    out: Annotated[str, typer.Option("--out", help="The HTML report to write (self-contained, printable).")],
    json_out: Annotated[
        str | None, typer.Option("--json", help="Also write every number of the report as JSON here.", show_default=False)
    ] = None,
    population: Annotated[
        str, typer.Option("--population", help="Analysis population of the efficacy results: itt, pp or safety.")
    ] = "itt",
    simulate: SimulateOption = None,
    protocol: ProtocolOption = None,
    seed: SeedOption = 1,
    n: SizeOption = None,
    cutoff: CutoffOption = None,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Build the trial report: CONSORT, baseline, every seed outcome with its table and figure, safety, data quality."""
    from cmvtrial.analysis.adsl import POPULATIONS
    from cmvtrial.errors import InvalidInput

    if population not in POPULATIONS:
        raise InvalidInput(f"--population must be one of {', '.join(POPULATIONS)}, not '{population}'",
                           field="population", value=population)
    target, json_target = Path(out), Path(json_out) if json_out else None
    with _progress() as progress:
        task = progress.add_task("load trial data", total=None)
        data = _trial_data(simulate, protocol, seed, n, cutoff, db, as_user)
        from cmvtrial.adapters.reports.report_html import build_report, report_steps

        steps = report_steps(data)
        progress.update(task, total=len(steps) + 2, completed=1, description="analyse")
        advance: Callable[[str], None] = lambda step: progress.update(task, advance=1, description=step[:28])  # noqa: E731
        built = build_report(data, population=population, generated_on=date.today(), progress=advance)
        _write(target, built.html)
        if json_target is not None:
            _write(json_target, built.json())
        progress.update(task, advance=1, description="written")
    extra = f" and {json_target}" if json_target else ""
    typer.echo(f"Wrote {target}{extra}: {len(data.subjects)} subjects, population {population}, "
               f"data cut-off {data.data_cutoff}.")


# --- export adam ---------------------------------------------------------------------------

R_SCRIPT = """# Rerun the report's main analyses in R on the exported datasets (cmvtrial export adam).
# R >= 4.2 with the survival and nlme packages.
library(survival); library(nlme)
adsl <- read.csv("ADSL.csv"); adtte <- read.csv("ADTTE.csv"); adlb <- read.csv("ADLB.csv")
itt <- subset(adtte, ITTFL == "Y")
itt$arm <- relevel(factor(itt$TRT01P), ref = "{reference}")
print(survfit(Surv(AVAL, EVENT) ~ arm, data = itt))                       # medians, conf.type "log"
print(survdiff(Surv(AVAL, EVENT) ~ arm + strata(STRATUM), data = itt))    # stratified log-rank
print(summary(coxph(Surv(AVAL, EVENT) ~ arm + strata(STRATUM), data = itt, ties = "efron")))
cmv <- merge(subset(adlb, PARAMCD == "CMVLOG10"), adsl[, c("USUBJID", "EOTDT", "RANDDT")], by = "USUBJID")
eot <- as.numeric(as.Date(cmv$EOTDT) - as.Date(cmv$RANDDT))
cmv <- subset(cmv, ITTFL == "Y" & (ABLFL == "Y" | (ADY > 0 & (is.na(eot) | ADY <= eot))))
cmv$arm <- relevel(factor(cmv$TRT01P), ref = "{reference}")
print(summary(lme(AVAL ~ ADY * arm, random = ~ ADY | USUBJID, data = cmv, method = "REML")))
"""


@handles_errors
def export_adam(
    out: Annotated[str, typer.Option("--out", help="Folder to write ADSL.csv, ADTTE.csv, ADLB.csv (and rerun.R) into.")],
    simulate: SimulateOption = None,
    protocol: ProtocolOption = None,
    seed: SeedOption = 1,
    n: SizeOption = None,
    cutoff: CutoffOption = None,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Write the analysis datasets (ADSL, ADTTE, ADLB; columns in docs/report.md) as CSV, with an R script.

    From a database the rows carry SDTM's pseudonymized USUBJID and trace to SDTM (docs/interop.md)."""
    from cmvtrial.adapters.cli.interop_commands import adam_tables
    from cmvtrial.analysis.derivations import derive_datasets

    data = _trial_data(simulate, protocol, seed, n, cutoff, db, as_user)
    datasets = derive_datasets(data)
    tables = adam_tables(datasets, from_database=simulate is None, db=db, as_user=as_user)
    folder = Path(out)
    for name, frame in tables.items():
        _write(folder / f"{name}.csv", frame.to_csv(index=False, date_format="%Y-%m-%d"))
    _write(folder / "rerun.R", R_SCRIPT.replace("{reference}", datasets.setup.reference_arm))
    typer.echo(f"Wrote ADSL.csv ({len(tables.adsl)} rows), ADTTE.csv ({len(tables.adtte)} rows), "
               f"ADLB.csv ({len(tables.adlb)} rows) and rerun.R to {folder}.")
