"""`cmvtrial protocol …`: list, show, validate and print the schema of protocol files.

Thin: each command loads through :mod:`cmvtrial.protocols` and renders. Pydantic, PyYAML and the
protocol model are imported inside the commands so that `cmvtrial --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cmvtrial.adapters.cli.output import handles_errors

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from cmvtrial.core.protocol import Frequency, Protocol, Regimen, Visit


def _console() -> Console:
    from rich.console import Console

    # markup off: protocol text holds brackets such as the UCUM unit [IU]/mL.
    return Console(markup=False, highlight=False, soft_wrap=False)


def _frequency(frequency: Frequency) -> str:
    if frequency.every_days is not None:
        return "daily" if frequency.every_days == 1 else f"every {frequency.every_days} days"
    if frequency.every_hours is not None:
        return f"every {frequency.every_hours} h"
    return f"{frequency.times_per_week}x per week"


def _regimen(regimen: Regimen) -> str:
    dose = f"{regimen.dose.value:g} {regimen.dose.unit}" + ("/day" if regimen.dose.per == "day" else "")
    stop = regimen.stop.rule.replace("_", " ") + (f" ({regimen.stop.days} days)" if regimen.stop.days else "")
    infusion = f", infused over {regimen.infusion_minutes} min" if regimen.infusion_minutes else ""
    return (
        f"{regimen.drug} {dose} {regimen.route} {_frequency(regimen.frequency)}{infusion}, "
        f"from {regimen.start.anchor} day {regimen.start.day} until {stop}"
    )


def _timing(visit: Visit) -> str:
    if visit.repeat is not None:
        repeat = visit.repeat
        limit = f", at most {repeat.max_count}" if repeat.max_count else ""
        return (
            f"every {repeat.every_days} d from day {repeat.first_day} until "
            f"{repeat.until.replace('_', ' ')}{limit}"
        )
    return f"day {visit.day}"


def _show(protocol: Protocol, console: Console) -> None:
    from rich.table import Table

    console.print(f"{protocol.id} {protocol.version}: {protocol.title}")
    registry = ", ".join(f"{entry.registry} {entry.id}" for entry in protocol.registry_ids)
    console.print(f"sponsor: {protocol.sponsor}" + (f"; registry: {registry}" if registry else ""))
    population, design = protocol.population, protocol.design
    console.print(
        f"population: {population.condition}; target {population.target_enrollment}; "
        f"ages {population.min_age_years}-{population.max_age_years}"
    )
    randomization = protocol.randomization
    ratio = ":".join(str(randomization.ratio[arm.id]) for arm in protocol.arms if arm.id in randomization.ratio)
    console.print(
        f"design: {design.allocation} {ratio}, masking {design.masking}, {design.model}; "
        f"{randomization.method.replace('_', ' ')}"
        + (f" sizes {', '.join(map(str, randomization.block_sizes))}" if randomization.block_sizes else "")
        + (f", strata {', '.join(f.name for f in randomization.strata)}" if randomization.strata else "")
    )
    for note in design.notes:
        console.print(f"  note: {note}")

    console.print("\nArms")
    for arm in protocol.arms:
        console.print(f"  {arm.id} ({arm.role}): {arm.label}")
        for regimen in arm.regimens:
            console.print(f"    - {_regimen(regimen)}")

    criteria = Table("id", "kind", "text", "expression", title="Eligibility", title_justify="left")
    for criterion in protocol.criteria:
        criteria.add_row(criterion.id, criterion.kind, criterion.text, criterion.expression)
    console.print(criteria)

    visits = Table("code", "name", "anchor", "timing", "window", "forms", title="Visits", title_justify="left")
    for visit in protocol.visits:
        window = f"-{visit.window.before_days}/+{visit.window.after_days} d"
        visits.add_row(visit.code, visit.name, visit.anchor, _timing(visit), window, ", ".join(visit.forms))
    console.print(visits)

    forms = Table("form", "name", "items", title="Forms", title_justify="left")
    for form in protocol.forms:
        forms.add_row(form.id, form.name, ", ".join(item.id for item in form.items))
    console.print(forms)

    endpoints = Table("id", "kind", "title", "time frame", "analysis", title="Endpoints", title_justify="left")
    for endpoint in protocol.endpoints:
        endpoints.add_row(endpoint.id, endpoint.kind, endpoint.title, endpoint.time_frame, endpoint.analysis)
    for table in (criteria, visits, forms, endpoints):
        for column in table.columns:
            column.overflow = "fold"
    console.print(endpoints)


def register(app: typer.Typer) -> None:
    protocol_app = typer.Typer(
        help="Protocol files: list, show, validate, schema.", no_args_is_help=True, rich_markup_mode=None
    )
    app.add_typer(protocol_app, name="protocol")

    @protocol_app.command("list")
    @handles_errors
    def list_protocols() -> None:
        """List the protocols shipped with cmvtrial: id, version, title, arms, target size."""
        from rich.table import Table

        from cmvtrial.protocols import load_shipped_protocol, shipped_ids

        table = Table("id", "version", "title", "arms", "target")
        for protocol_id in shipped_ids():
            protocol, _ = load_shipped_protocol(protocol_id)
            table.add_row(
                protocol.id,
                protocol.version,
                protocol.title,
                ", ".join(arm.id for arm in protocol.arms),
                str(protocol.population.target_enrollment),
            )
        _console().print(table)

    @protocol_app.command("show")
    @handles_errors
    def show(
        protocol: Annotated[str, typer.Argument(help="A shipped protocol id or a protocol file.", show_default=False)],
        as_json: Annotated[bool, typer.Option("--json", help="Print the full validated protocol as JSON.")] = False,
    ) -> None:
        """Summarise a protocol: arms and regimens, criteria, visits, forms, endpoints."""
        from cmvtrial.protocols import load_protocol

        loaded, _ = load_protocol(protocol)
        if as_json:
            typer.echo(loaded.model_dump_json(indent=2))
        else:
            _show(loaded, _console())

    @protocol_app.command("validate")
    @handles_errors
    def validate(
        protocol: Annotated[str, typer.Argument(help="A protocol file, or a shipped protocol id.", show_default=False)],
    ) -> None:
        """Check a protocol file; exit 0 when valid, 2 listing every problem with its line otherwise."""
        from cmvtrial.protocols import load_protocol

        loaded, _ = load_protocol(protocol)
        typer.echo(f"valid: {loaded.id} {loaded.version}")

    @protocol_app.command("schema")
    @handles_errors
    def schema() -> None:
        """Print the JSON Schema of protocol files (for editors and validators)."""
        import json

        from cmvtrial.core.protocol import Protocol

        typer.echo(json.dumps(Protocol.model_json_schema(), indent=2, ensure_ascii=False))
