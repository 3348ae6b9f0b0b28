"""`cmvtrial visits | enter | sign | calendar | dose record|list`: visits and data capture.

Thin adapter over services/visits.py, data_entry.py, signatures.py and dosing_records.py (the
queries on the data are query_commands.py):
each command opens the database, resolves the subject the user named (its id,
``SITE:SCREENING_NUMBER`` or its subject number), calls one service and prints the answer. Every
command takes ``--db`` and ``--as USERNAME``; data work needs a user of the right role (a
coordinator enters data, a monitor opens queries, an investigator signs). ``--today`` defaults to
the local date: this adapter may read the clock, the services never do. Only typer and stdlib at
module top, so `cmvtrial --help` stays fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption, command_context, command_group, read_text
from cmvtrial.adapters.cli.output import DbOption, echo_json, handles_errors, make_console, make_table

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.cli.context import CommandContext
    from cmvtrial.services.data_entry import VisitEntry

SIGN_PASSWORD_ENV = "CMVTRIAL_SIGN_PASSWORD"

SubjectArgument = Annotated[
    str, typer.Argument(help="The subject: its id, SITE:SCREENING_NUMBER or its subject number.", show_default=False)
]
VisitArgument = Annotated[
    str, typer.Argument(help="The visit label: BL, TW1, TW2, ..., W12, FU3M (the protocol's visit codes).",
                        show_default=False)
]
TodayOption = Annotated[
    str | None,
    typer.Option("--today", metavar="DATE", help="The date to judge on (YYYY-MM-DD); default: today's local date.",
                 show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]


def register(app: typer.Typer) -> None:
    visits_app = typer.Typer(help="Visits: what is due at a site, recording a visit, a visit's signatures.",
                             no_args_is_help=True)
    visits_app.command("due")(visits_due)
    visits_app.command("record")(visits_record)
    visits_app.command("signatures")(visits_signatures)
    app.add_typer(visits_app, name="visits")

    app.command("enter")(enter)
    app.command("sign")(sign)
    app.command("calendar")(calendar)

    dose_app = command_group(app, "dose", "Doses: the protocol's dose calculation, and recording administrations.")
    dose_app.command("record")(dose_record)
    dose_app.command("list")(dose_list)


# --- helpers -------------------------------------------------------------------------------


def _date(text: str | None, option: str) -> date:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{option} must be a date YYYY-MM-DD (got {text!r})", field=option, value=text) from None


def _read_json(file: str) -> object:
    from cmvtrial.errors import InvalidInput

    text = read_text(file)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{file} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
                           field="file", value=file) from None


# --- visits --------------------------------------------------------------------------------


@handles_errors
def visits_due(
    site: Annotated[str, typer.Option("--site", help="The site's code.", show_default=False)],
    today: TodayOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """A site's visits due this week (window open now or within six days), overdue and missed."""
    from cmvtrial.services import visits

    with command_context(db, as_user) as cli:
        found = visits.visits_due(cli.uow(), cli.actor, site, today=_date(today, "--today"))
    if as_json:
        echo_json(found.to_dict())
        return
    worklist = found.worklist
    console = make_console()
    console.print(f"Site {found.site_code}, week {worklist.today.isoformat()} to {worklist.week_end.isoformat()}")
    for title, entries in (("Due this week", worklist.due_this_week), ("Overdue", worklist.overdue),
                           ("Missed", worklist.missed)):
        table = make_table(f"{title} ({len(entries)})", "subject", "visit", "target", "window", "status")
        for entry in entries:
            visit = entry.visit
            window = f"{visit.window_start} to {visit.window_end}" if visit.window_start else ""
            table.add_row(entry.subject, visit.label, str(visit.target_date or ""), window, str(visit.status))
        console.print(table)


@handles_errors
def visits_record(
    subject: SubjectArgument,
    visit: VisitArgument,
    on_date: Annotated[str | None, typer.Option("--date", metavar="DATE", help="The date the visit was done.",
                                                show_default=False)] = None,
    missed: Annotated[bool, typer.Option("--missed", help="Record the visit as missed (needs --reason).")] = False,
    today: TodayOption = None,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Record a visit as done on a date (outside its window: kept and flagged) or as missed."""
    from cmvtrial.services import visits

    with command_context(db, as_user) as cli:
        view = visits.record_visit(cli.uow(), cli.actor, cli.subject_id(subject), visit,
                                   today=_date(today, "--today"), on_date=_date(on_date, "--date") if on_date else None,
                                   missed=missed, reason=reason)
    when = f" on {view.actual_date.isoformat()}" if view.actual_date else ""
    typer.echo(f"{view.subject} {view.visit}: {view.status}{when}" + ("" if view.changed else " (unchanged)"))
    if view.deviation:
        typer.echo(f"PROTOCOL DEVIATION: {view.deviation}")


@handles_errors
def visits_signatures(subject: SubjectArgument, visit: VisitArgument, as_json: JsonOption = False, db: DbOption = None,
                      as_user: AsOption = None) -> None:
    """A visit's signatures, each checked against the visit's data as they are now."""
    from cmvtrial.services import signatures

    with command_context(db, as_user) as cli:
        views = signatures.visit_signatures(cli.uow(), cli.actor, cli.subject_id(subject), visit)
    if as_json:
        echo_json([view.to_dict() for view in views])
        return
    if not views:
        typer.echo(f"{visit} has no signature.")
    for view in views:
        state = "VALID" if view.valid else f"INVALID: {view.invalidated_reason}"
        typer.echo(f"{view.manifestation} [{state}]")


@handles_errors
def calendar(
    subject: SubjectArgument,
    ics: Annotated[str | None, typer.Option("--ics", metavar="FILE", help="Also write the calendar as an "
                                            "iCalendar file.", show_default=False)] = None,
    today: TodayOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """A subject's visit calendar from the actual randomization date, with each visit's status."""
    from cmvtrial.core.icalendar import calendar_to_ics
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import visits

    with command_context(db, as_user) as cli:
        found = visits.subject_calendar(cli.uow(), cli.actor, cli.subject_id(subject),
                                        today=_date(today, "--today"))
    if ics:
        text = calendar_to_ics(found.calendar, subject=found.subject, generated_at=datetime.now(UTC))
        try:
            Path(ics).write_bytes(text.encode("utf-8"))
        except OSError as error:
            raise InvalidInput(f"cannot write {ics}: {error.strerror}", field="ics", value=ics) from None
    if as_json:
        echo_json(found.to_dict())
        return
    print_calendar(found)
    if ics:
        typer.echo(f"Wrote {ics}")


def print_calendar(found: Any) -> None:
    """The calendar as a table (shared with `subject show`)."""
    eot = found.end_of_treatment.isoformat() if found.end_of_treatment else "not yet"
    console = make_console()
    console.print(f"Subject {found.subject} ({found.site_code}), arm {found.arm}, randomized "
                  f"{found.randomized_on.isoformat()}, end of treatment {eot}")
    table = make_table(f"Calendar on {found.calendar.today.isoformat()}", "visit", "name", "target", "window", "status",
                       "done", "note")
    for visit in found.calendar.visits:
        window = f"{visit.window_start} to {visit.window_end}" if visit.window_start else ""
        note = found.deviations.get(visit.label) or ("end of treatment" if visit.end_of_treatment else "")
        table.add_row(visit.label, visit.name, str(visit.target_date or ""), window, str(visit.status),
                      str(visit.actual_date or ""), note)
    console.print(table)


# --- data entry ----------------------------------------------------------------------------


@handles_errors
def enter(
    subject: SubjectArgument,
    visit: VisitArgument,
    file: Annotated[str, typer.Argument(help='The visit\'s values as JSON: {"date"?, "forms": {form: {item: value}}, '
                                        '"complete"?}; - reads stdin.')],
    complete: Annotated[bool, typer.Option("--complete", help="Mark every submitted form complete (refused while a "
                                           "required item is missing).")] = False,
    today: TodayOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Enter or correct the values of one visit's forms, with the same checks as every other entry.

    A value may be given in any unit its item accepts. Values outside hard limits are refused (nothing
    is stored); soft limits and edit checks open queries. Changing a stored value needs --reason.
    """
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import data_entry

    submission = data_entry.parse_visit_submission(_read_json(file))
    if submission.visit is not None and submission.visit != visit:
        raise InvalidInput(f"the file is for visit {submission.visit}, not {visit}", field="visit",
                           value=submission.visit)
    with command_context(db, as_user) as cli:
        entry = data_entry.enter_visit_data(
            cli.uow(), cli.actor, cli.subject_id(subject), visit, submission.forms,
            today=_date(today, "--today"), visit_date=submission.visit_date,
            complete=True if complete else submission.complete, reason=reason)
    if as_json:
        echo_json(entry.to_dict())
        return
    _print_entry(entry)


def _print_entry(entry: VisitEntry) -> None:
    if not entry.changed:
        typer.echo(f"{entry.subject} {entry.visit}: nothing changed.")
        return
    typer.echo(f"{entry.subject} {entry.visit} ({entry.visit_date.isoformat()}):")
    for form in entry.forms:
        name = form.form_id + (f"[{form.form_repeat}]" if form.form_repeat else "")
        typer.echo(f"  {name}: {form.status}; {len(form.created)} entered, {len(form.updated)} changed, "
                   f"{len(form.removed)} removed" + (f"; missing {', '.join(form.missing_required)}"
                                                      if form.missing_required else ""))
        for finding in form.findings:
            typer.echo(f"    query: {finding.message}")
    if entry.deviation:
        typer.echo(f"PROTOCOL DEVIATION: {entry.deviation}")
    if entry.queries_opened:
        typer.echo(f"Queries opened: {', '.join(map(str, entry.queries_opened))}")
    if entry.queries_closed:
        typer.echo(f"Queries closed (edit check passes now): {', '.join(map(str, entry.queries_closed))}")
    for message in entry.signatures_invalidated:
        typer.echo(f"SIGNATURE INVALIDATED: {message}")
    for message in entry.lab_reviews:
        typer.echo(f"Lab safety: {message}")
    if entry.labs_not_graded:
        typer.echo(f"Not graded for safety (no normal limit recorded): {len(entry.labs_not_graded)} value(s)")
    eot = entry.end_of_treatment
    if eot is not None and eot.after is not None:
        typer.echo(f"END OF TREATMENT on {eot.after.isoformat()}" + (f"; cancelled {', '.join(eot.cancelled)}"
                   if eot.cancelled else "") + (f"; scheduled {', '.join(eot.scheduled)}" if eot.scheduled else ""))
    elif eot is not None:
        typer.echo(f"End of treatment of {eot.before} withdrawn by this correction")


# --- signatures ----------------------------------------------------------------------------


@handles_errors
def sign(
    subject: SubjectArgument,
    visit: VisitArgument,
    meaning: Annotated[str, typer.Option("--meaning", help="What the signature means: approval, review, "
                                         "responsibility or authorship.")] = "approval",
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Sign every form of a visit (investigator): asks for your password again, or reads CMVTRIAL_SIGN_PASSWORD."""
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import signatures

    password = os.environ.get(SIGN_PASSWORD_ENV)
    with command_context(db, as_user) as cli:
        subject_id = cli.subject_id(subject)
        if not password:
            try:
                password = str(typer.prompt(f"Password of {cli.actor.username} to sign {visit}", hide_input=True))
            except typer.Abort:
                raise InvalidInput(f"signing needs your password (prompt, or {SIGN_PASSWORD_ENV})",
                                   field="password") from None
        view = signatures.sign_visit(cli.uow(), cli.actor, subject_id, visit, password=password, meaning=meaning)
    typer.echo(f"{view.subject} {view.visit}: {view.manifestation}")
    typer.echo(f"  {view.statement} (record SHA-256 {view.record_sha256})")


# --- doses ---------------------------------------------------------------------------------


@handles_errors
def dose_record(
    subject: SubjectArgument,
    file: Annotated[str, typer.Argument(help='The administration as JSON: {"drug", "status"?, "dose", "unit", '
                                        '"route", "date" or "time", "given_by", "reason"?, "basis"?}; - reads stdin.')],
    today: TodayOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Record a dose given, held or missed; a drug the subject's arm does not get, or a dose after
    end of treatment, is refused."""
    from cmvtrial.services import dosing_records

    record = dosing_records.parse_administration(_read_json(file))
    with command_context(db, as_user) as cli:
        view = dosing_records.record_administration(cli.uow(), cli.actor, cli.subject_id(subject),
                                                    record, today=_date(today, "--today"))
    if as_json:
        echo_json(view.to_dict())
        return
    amount = f" {view.dose:g} {view.unit}" if view.dose is not None else ""
    typer.echo(f"{view.subject}: {view.drug} {view.status}{amount} on {view.date.isoformat()} (day {view.study_day})"
               + (f", reason: {view.reason}" if view.reason else ""))
    for finding in view.findings:
        typer.echo(f"  flagged: {finding}")


@handles_errors
def dose_list(subject: SubjectArgument, as_json: JsonOption = False, db: DbOption = None,
              as_user: AsOption = None) -> None:
    """A subject's recorded administrations, holds and missed doses."""
    from cmvtrial.services import dosing_records

    with command_context(db, as_user) as cli:
        views = dosing_records.list_administrations(cli.uow(), cli.actor, cli.subject_id(subject))
    if as_json:
        echo_json([view.to_dict() for view in views])
        return
    print_doses(views)


@dataclass(frozen=True)
class TreatmentSummary:
    """`cmvtrial subject show` for a randomized subject: calendar, doses, latest labs."""

    calendar: Any
    doses: list[Any]
    labs: list[Any]

    def to_dict(self) -> dict[str, object]:
        return {"calendar": self.calendar.to_dict(), "doses": [view.to_dict() for view in self.doses],
                "latest_labs": self.labs}

    def print(self) -> None:
        print_calendar(self.calendar)
        print_doses(self.doses)
        print_labs(self.labs)


def treatment_summary(cli: CommandContext, subject_id: int, today: date | None = None) -> TreatmentSummary:
    from cmvtrial.services import dosing_records, visit_data, visits

    on = today or date.today()
    return TreatmentSummary(visits.subject_calendar(cli.uow(), cli.actor, subject_id, today=on),
                            dosing_records.list_administrations(cli.uow(), cli.actor, subject_id),
                            visit_data.latest_labs(cli.uow(), cli.actor, subject_id))


def print_doses(views: list[Any]) -> None:
    """The administrations as a table (shared with `subject show`)."""
    table = make_table(f"Doses ({len(views)})", "date", "day", "drug", "status", "dose", "route", "given by", "reason")
    for view in views:
        amount = f"{view.dose:g} {view.unit}" if view.dose is not None else ""
        table.add_row(view.date.isoformat(), str(view.study_day), view.drug, view.status, amount, view.route or "",
                      view.given_by or "", view.reason or "")
    make_console().print(table)


def print_labs(values: list[Any]) -> None:
    """The latest lab values as a table (shared with `subject show`)."""
    table = make_table(f"Latest labs ({len(values)})", "form", "item", "value", "entered", "visit", "date")
    for value in values:
        entered = f"{value.entered} {value.entered_unit or ''}".strip()
        shown = value.result or f"{value.value:g} {value.unit or ''}".strip()
        table.add_row(value.form, value.label, shown, entered, value.visit, str(value.date or ""))
    make_console().print(table)
