"""`cmvtrial dose gcv` and `cmvtrial schedule show`: the dosing and calendar rules of a protocol,
run without a database.

Thin by design: parse the options, call ``cmvtrial.core.dosing`` / ``schedule`` / ``icalendar``,
print. Numbers may carry a unit (``--anc "0.5 10^9/L"``, ``--hb "80 g/L"``); without one they are in
the unit the option names. The blood counts reach the protocol's hold rules through their LOINC
codes, so this module knows no item ids. This adapter may read the clock (``--today`` defaults to
the local date); core never does. Only typer/stdlib at module top, so ``cmvtrial --help`` stays fast.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cmvtrial.adapters.cli.output import handles_errors

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.dosing import DoseDecision
    from cmvtrial.core.protocol import Protocol, Regimen
    from cmvtrial.core.schedule import Calendar

#: The drug `dose gcv` doses, as the protocol files name it.
GANCICLOVIR = "ganciclovir"
#: LOINC codes of the counts the options give (reference/domain.md §9), with each option's unit.
COUNT_OPTIONS = {
    "anc": ("751-8", "cells/uL"),         # Neutrophils [#/volume] in Blood
    "platelets": ("777-3", "/uL"),         # Platelets [#/volume] in Blood
    "hb": ("718-7", "g/dL"),               # Hemoglobin [Mass/volume] in Blood
}

ProtocolOption = Annotated[
    str,
    typer.Option("--protocol", metavar="ID", help="A shipped protocol id (see `cmvtrial protocol list`) or a protocol YAML file.",
                 show_default=False),
]


def _load(reference: str) -> Protocol:
    from cmvtrial.protocols import load_protocol

    protocol, _text = load_protocol(reference)
    return protocol


def _amount(text: str, option: str, unit: str) -> float:
    """The option's number in ``unit``; a unit written after the number is converted (pint)."""
    from cmvtrial.core import units
    from cmvtrial.core.form_entry import parse_amount
    from cmvtrial.errors import UnitError

    number, given = parse_amount(text, option)
    if given is None:
        return number
    try:
        return units.convert(number, given, unit)
    except UnitError as error:
        raise UnitError(f"{option}: {error.message}", field=option, value=given) from None


def _counts(protocol: Protocol, regimen: Regimen, given: dict[str, str | None]) -> dict[str, tuple[float, str]]:
    """The counts as (number, unit) keyed by the hold form's item ids, found by LOINC code."""
    from cmvtrial.core.dosing import item_for_loinc
    from cmvtrial.core.form_entry import parse_amount
    from cmvtrial.errors import InvalidInput

    forms = sorted({hold.form for hold in regimen.holds})
    labs: dict[str, tuple[float, str]] = {}
    for option, text in given.items():
        if text is None:
            continue
        loinc, default_unit = COUNT_OPTIONS[option]
        number, unit = parse_amount(text, f"--{option}")
        if number < 0:
            raise InvalidInput(f"--{option} cannot be negative (got {number:g})", field=option, value=number)
        item = next((found for form in forms if (found := item_for_loinc(protocol, form, loinc))), None)
        if item is None:
            raise InvalidInput(f"--{option}: no hold rule of the {regimen.drug} regimen reads a count with "
                               f"LOINC {loinc}", field=option)
        labs[item] = (number, unit or default_unit)
    return labs


def _render_dose(decision: DoseDecision, protocol: Protocol, infusion_minutes: int | None) -> None:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    per_kg = f" ({decision.dose_per_kg:g} mg/kg)" if decision.dose_per_kg is not None else ""
    infusion = f", infused over {infusion_minutes} min" if infusion_minutes else ""
    console.print(f"{decision.drug} under {protocol.id}: [bold]{decision.dose:g} {decision.unit}[/]{per_kg} "
                  f"{decision.route} {decision.frequency}{infusion}")
    if decision.interval_h is not None:
        console.print(f"interval: {decision.interval_h:g} h")
    if decision.hold:
        console.print("[bold red]HOLD: do not give this dose[/]")
    else:
        console.print("hold: no")
    for reason in decision.reasons:
        console.print(f"  - {reason}")


def _parse_date(text: str | None, option: str) -> date | None:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{option} must be a date YYYY-MM-DD (got {text!r})", field=option, value=text) from None


def _render_calendar(calendar: Calendar) -> None:
    from rich.console import Console
    from rich.table import Table

    eot = calendar.end_of_treatment.isoformat() if calendar.end_of_treatment else "not yet (CMV-DNA still positive)"
    table = Table(title=f"Visit calendar, protocol {calendar.protocol_id}: randomized "
                        f"{calendar.randomized_on.isoformat()}, end of treatment {eot}, today {calendar.today.isoformat()}")
    for column in ("visit", "name", "target", "window", "status", "note"):
        table.add_column(column, no_wrap=column in ("visit", "target", "window", "status"))
    for visit in calendar.visits:
        window = (f"{visit.window_start.isoformat()} – {visit.window_end.isoformat()}"
                  if visit.window_start and visit.window_end else "after end of treatment")
        notes = []
        if visit.end_of_treatment:
            notes.append("end of treatment")
        if visit.actual_date:
            notes.append(f"done {visit.actual_date.isoformat()}")
        if visit.out_of_window:
            notes.append("outside window (deviation)")
        table.add_row(visit.label, visit.name, visit.target_date.isoformat() if visit.target_date else "—",
                      window, str(visit.status), ", ".join(notes))
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    dose_app = typer.Typer(help="Doses by the protocol's regimen: weight, renal function, blood counts.",
                           no_args_is_help=True)
    schedule_app = typer.Typer(help="A subject's visit calendar from the protocol's visit plan.", no_args_is_help=True)
    app.add_typer(dose_app, name="dose")
    app.add_typer(schedule_app, name="schedule")
    dose_app.command("gcv")(gcv_command)
    schedule_app.command("show")(schedule_show_command)


@handles_errors
def gcv_command(
    protocol: ProtocolOption,
    weight_kg: Annotated[str, typer.Option("--weight-kg", metavar="W", help="Actual body weight in kg (or with a unit: '70 kg').",
                                           show_default=False)],
    crcl: Annotated[str, typer.Option("--crcl", metavar="ML_MIN", help="Cockcroft-Gault creatinine clearance in mL/min.",
                                      show_default=False)],
    anc: Annotated[str | None, typer.Option("--anc", metavar="CELLS_PER_UL", help="Absolute neutrophil count in cells/uL "
                                                          "(or with a unit: '0.5 10^9/L').")] = None,
    platelets: Annotated[str | None, typer.Option("--platelets", metavar="PER_UL", help="Platelet count per uL "
                                                                      "(or with a unit: '25 10^9/L').")] = None,
    hb: Annotated[str | None, typer.Option("--hb", metavar="G_DL", help="Hemoglobin in g/dL (or with a unit: '80 g/L').")] = None,
    as_json: Annotated[bool, typer.Option("--json", help='Print {"dose_mg", "dose_mg_per_kg", "interval_h", '
                                                         '"hold", "reasons"} as JSON.')] = False,
) -> None:
    """Ganciclovir dose for one administration: mg/kg by actual weight from the label's maintenance
    renal table, rounded as the protocol says, and whether to hold it for low counts. Bad input exits 2."""
    from cmvtrial.core.dosing import find_regimen, weight_based_dose

    loaded = _load(protocol)
    regimen = find_regimen(loaded, GANCICLOVIR)
    weight = _amount(weight_kg, "--weight-kg", "kg")
    clearance = _amount(crcl, "--crcl", "mL/min")
    labs = _counts(loaded, regimen, {"anc": anc, "platelets": platelets, "hb": hb})
    decision = weight_based_dose(loaded, regimen, weight_kg=weight, crcl_ml_min=clearance, labs=labs)
    if as_json:
        typer.echo(json.dumps(decision.summary(), ensure_ascii=False))
    else:
        _render_dose(decision, loaded, regimen.infusion_minutes)


@handles_errors
def schedule_show_command(
    protocol: ProtocolOption,
    randomized: Annotated[str, typer.Option("--randomized", metavar="YYYY-MM-DD", help="The randomization date (baseline, day 0), YYYY-MM-DD.",
                                            show_default=False)],
    negative_on: Annotated[str | None, typer.Option(
        "--negative-on", metavar="YYYY-MM-DD", help="Date of the first CMV-DNA below the assay's limit: ends treatment.")] = None,
    today: Annotated[str | None, typer.Option("--today", metavar="YYYY-MM-DD", help="The day to judge each visit's status on "
                                                              "(default: the local date).")] = None,
    done: Annotated[list[str] | None, typer.Option(
        "--done", metavar="VISIT=YYYY-MM-DD", help="A visit that took place, as VISIT=YYYY-MM-DD (e.g. TW1=2024-03-04); repeatable.")] = None,
    missed: Annotated[list[str] | None, typer.Option(
        "--missed", metavar="VISIT", help="A visit recorded as missed (e.g. TW2); repeatable.")] = None,
    subject: Annotated[str, typer.Option("--subject", metavar="CODE", help="The subject code shown in the calendar file.")] = "SUBJECT",
    ics: Annotated[str | None, typer.Option("--ics", metavar="FILE", help="Also write the calendar as an iCalendar file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the calendar as JSON.")] = False,
) -> None:
    """The visit calendar from the actual randomization date: baseline, weekly treatment visits until
    CMV negativity (end of treatment), week 12 and the follow-up after drug withdrawal, with each
    visit's window and status (scheduled, due, overdue, missed, done, cancelled, pending)."""
    from cmvtrial.core.icalendar import calendar_to_ics
    from cmvtrial.core.schedule import VisitRecord, parse_visit_label, visit_calendar
    from cmvtrial.errors import InvalidInput

    loaded = _load(protocol)
    randomized_on = _parse_date(randomized, "--randomized")
    assert randomized_on is not None
    on = _parse_date(today, "--today") or date.today()
    records = {}
    for entry in done or []:
        label, separator, when = entry.partition("=")
        if not separator:
            raise InvalidInput(f"--done takes VISIT=YYYY-MM-DD (got {entry!r})", field="done", value=entry)
        records[parse_visit_label(loaded, label)] = VisitRecord(actual_date=_parse_date(when, "--done"))
    for label in missed or []:
        records[parse_visit_label(loaded, label)] = VisitRecord(missed=True)
    calendar = visit_calendar(loaded, randomized_on=randomized_on, today=on, records=records,
                              end_of_treatment=_parse_date(negative_on, "--negative-on"))
    if ics is not None:
        text = calendar_to_ics(calendar, subject=subject, generated_at=datetime.now().astimezone())
        try:
            Path(ics).write_text(text, encoding="utf-8", newline="")
        except OSError as error:
            raise InvalidInput(f"cannot write {ics}: {error.strerror}", field="ics", value=ics) from None
    if as_json:
        typer.echo(json.dumps(calendar.to_dict(), indent=2, ensure_ascii=False))
    else:
        _render_calendar(calendar)
        if ics is not None:
            typer.echo(f"calendar written to {ics}")
