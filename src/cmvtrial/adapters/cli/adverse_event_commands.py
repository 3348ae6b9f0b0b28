"""`cmvtrial ae …` and `cmvtrial sae …`: adverse events, lab-grade proposals, SAE reporting.

Thin adapter: read the options (and the AE form as a JSON file), call one service of
``cmvtrial.services.adverse_events``, ``lab_safety`` or ``sae_reporting``, print the answer. The
command line acts as ``--as USERNAME`` (default: the administrator created by init, who may read but
not record safety data). The adapter reads the clock: "today" is the local date (a site's date, for
the AE date checks) and "now" the current UTC time (for the report clock). Heavy modules load
inside the commands so that `cmvtrial --help` stays fast.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption, SubjectArgument, command_context, read_text
from cmvtrial.adapters.cli.output import DbOption, handles_errors, make_console, make_table

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.cli.context import CommandContext
    from cmvtrial.services.adverse_events import AdverseEventView
    from cmvtrial.services.lab_safety import ProposalView
    from cmvtrial.services.sae_reporting import SaeStatus
    from cmvtrial.services.unit_of_work import UnitOfWork

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
EventArgument = Annotated[int, typer.Argument(help="The adverse event's id (as `cmvtrial ae list` shows it).")]
ProposalArgument = Annotated[int, typer.Argument(help="The proposal's id (as `cmvtrial ae proposals` shows it).")]
FORM_HELP = ("A JSON file (or - for standard input) with the AE form: term, start_date, end_date, grade, outcome, "
             "seriousness, awareness_time, drugs [{drug, relatedness, action_taken}], verbatim, narrative.")


def register(app: typer.Typer) -> None:
    ae_app = typer.Typer(help="Adverse events: record, update, list; lab-grade proposals to confirm or dismiss.",
                         no_args_is_help=True)
    ae_app.command("record")(ae_record)
    ae_app.command("update")(ae_update)
    ae_app.command("list")(ae_list)
    ae_app.command("review-lab")(ae_review_lab)
    ae_app.command("proposals")(ae_proposals)
    ae_app.command("confirm")(ae_confirm)
    ae_app.command("dismiss")(ae_dismiss)
    app.add_typer(ae_app, name="ae")

    sae_app = typer.Typer(help="Serious adverse events: the expedited-report clock, submission, the report form.",
                          no_args_is_help=True)
    sae_app.command("list")(sae_list)
    sae_app.command("submit")(sae_submit)
    sae_app.command("report")(sae_report)
    app.add_typer(sae_app, name="sae")


# --- helpers -------------------------------------------------------------------------------


def _read_json(file: str) -> dict[str, Any]:
    from cmvtrial.errors import InvalidInput

    text = read_text(file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"{file} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})",
                           field="file", value=file) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{file} must hold one JSON object (the AE form's fields)", field="file", value=file)
    return data


def _subject(cli: CommandContext, reference: str | None) -> int | None:
    return None if reference is None else cli.subject_id(reference)


def _site(uow: UnitOfWork, code: str | None) -> int | None:
    from cmvtrial.services.adverse_events import site_id_for

    return None if code is None else site_id_for(uow, code)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _print_event(view: AdverseEventView, verb: str) -> None:
    serious = f"serious ({', '.join(view.seriousness)})" if view.serious else "not serious"
    typer.echo(f"{verb} {view.label} (id {view.id}): {view.term}, grade {view.grade} — {view.grade_text}; {serious}.")
    for finding in view.findings:
        typer.echo(f"  finding [{finding.code}] {finding.field}: {finding.message}")


def _print_clock(uow: UnitOfWork, actor: Any, view: AdverseEventView) -> None:
    if not view.serious or view.report_submitted_at:
        return
    from cmvtrial.services.sae_reporting import sae_status

    status = sae_status(uow, actor, view.id, now=datetime.now(UTC))
    if status.clock is not None:
        typer.echo(f"  Expedited report {status.status}: due {status.clock.due_time:%Y-%m-%d %H:%M} UTC "
                   f"(mark it sent with `cmvtrial sae submit {view.id}`).")


def _parse_time(text: str | None, option: str) -> datetime | None:
    from cmvtrial.errors import InvalidInput

    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{option}: '{text}' is not an ISO date and time (2025-03-14T09:30+08:00)",
                           field=option, value=text) from None
    if moment.utcoffset() is None:
        raise InvalidInput(f"{option}: give the time zone, e.g. {text}+08:00 or {text}Z", field=option, value=text)
    return moment


# --- adverse events ------------------------------------------------------------------------


@handles_errors
def ae_record(
    subject: SubjectArgument,
    file: Annotated[str, typer.Argument(help=FORM_HELP)],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record an adverse event for a subject of your site; hard problems exit 2 and change nothing.

    Soft findings (for example an end date on an ongoing event) are stored and printed. A serious
    event prints its expedited-report deadline.
    """
    from cmvtrial.services.adverse_events import record_adverse_event

    data = _read_json(file)
    with command_context(db, as_user) as cli:
        view = record_adverse_event(cli.uow(), cli.actor, cli.subject_id(subject), data, today=date.today(), reason=reason)
        if as_json:
            _print_json(view.to_dict())
            return
        _print_event(view, "Recorded")
        _print_clock(cli.uow(), cli.actor, view)


@handles_errors
def ae_update(
    event_id: EventArgument,
    file: Annotated[str, typer.Argument(help="A JSON file (or -) with the fields to change, e.g. {\"grade\": 4}.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the event is changed (required; audited).")],
    db: DbOption = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change fields of a recorded adverse event; every check runs again."""
    from cmvtrial.services.adverse_events import update_adverse_event

    changes = _read_json(file)
    with command_context(db, as_user) as cli:
        view = update_adverse_event(cli.uow(), cli.actor, event_id, changes, reason=reason, today=date.today())
        if as_json:
            _print_json(view.to_dict())
            return
        _print_event(view, "Updated")
        _print_clock(cli.uow(), cli.actor, view)


@handles_errors
def ae_list(
    subject: Annotated[str | None, typer.Option("--subject", help="Only this subject's events.",
                                                show_default=False)] = None,
    site: Annotated[str | None, typer.Option("--site", help="Only this site's events (site code).",
                                             show_default=False)] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """List adverse events: one subject's, one site's, or all you may see (site users: their site)."""
    from cmvtrial.services.adverse_events import list_adverse_events

    with command_context(db, as_user) as cli:
        views = list_adverse_events(cli.uow(), cli.actor, subject_id=_subject(cli, subject),
                                    site_id=_site(cli.uow(), site))
    if as_json:
        _print_json([v.to_dict() for v in views])
        return
    table = make_table(f"Adverse events ({len(views)})", "id", "site", "subject", "#", "term", "grade", "serious",
                       "start", "end", "outcome", "findings")
    for v in views:
        table.add_row(str(v.id), v.site_code, v.subject, str(v.ae_number), v.term, str(v.grade),
                      "yes" if v.serious else "no", v.start_date.isoformat(),
                      v.end_date.isoformat() if v.end_date else "ongoing", v.outcome, str(len(v.findings)))
    make_console().print(table)


# --- lab proposals -------------------------------------------------------------------------


def _print_proposal(p: ProposalView) -> None:
    what = "new event" if p.action == "new_event" else f"raise AE id {p.adverse_event_id} from grade {p.current_grade}"
    typer.echo(f"Proposal {p.id} ({p.status}) for {p.subject}: {p.term} grade {p.grade} — {what}; "
               f"{p.value:g} {p.unit} on {p.observed_on}.")


@handles_errors
def ae_review_lab(
    subject: SubjectArgument,
    term: Annotated[str, typer.Option("--term", help="CTCAE term or synonym, or the lab item's LOINC code.")],
    value: Annotated[float, typer.Option("--value", help="The lab value.")],
    unit: Annotated[str, typer.Option("--unit", help="Its unit (UCUM code or common spelling).")],
    observed_on: Annotated[str, typer.Option("--date", help="The sample date (YYYY-MM-DD).")],
    lln: Annotated[float | None, typer.Option("--lln", help="Lower limit of normal, in the value's unit.")] = None,
    uln: Annotated[float | None, typer.Option("--uln", help="Upper limit of normal, in the value's unit.")] = None,
    baseline: Annotated[float | None, typer.Option("--baseline", help="The subject's baseline value.")] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Grade a lab value by CTCAE and store what it proposes for the investigator (never an event)."""
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services.lab_safety import review_lab_value

    try:
        sampled = date.fromisoformat(observed_on)
    except ValueError:
        raise InvalidInput(f"--date: '{observed_on}' is not a date (YYYY-MM-DD)", field="date") from None
    with command_context(db, as_user) as cli:
        result = review_lab_value(cli.uow(), cli.actor, cli.subject_id(subject), term, value, unit, observed_on=sampled,
                                  lln=lln, uln=uln, baseline=baseline, today=date.today())
    if as_json:
        _print_json({"outcome": result.outcome, "reason": result.reason,
                     "grading": result.grading.to_dict() if result.grading else None,
                     "proposal": result.proposal.to_dict() if result.proposal else None,
                     "superseded": list(result.superseded)})
        return
    if result.grading is not None:
        typer.echo(f"{result.grading.term}: grade {result.grading.grade} — {result.grading.criterion}")
    typer.echo(f"{result.outcome.replace('_', ' ')}: {result.reason}")
    if result.proposal is not None:
        _print_proposal(result.proposal)


@handles_errors
def ae_proposals(
    subject: Annotated[str | None, typer.Option("--subject", help="Only this subject's proposals.",
                                                show_default=False)] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Also confirmed, dismissed and superseded ones.")] = False,
    db: DbOption = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the lab-grade proposals waiting for the investigator (pending ones by default)."""
    from cmvtrial.services.lab_safety import list_proposals

    with command_context(db, as_user) as cli:
        views = list_proposals(cli.uow(), cli.actor, subject_id=_subject(cli, subject),
                               status=None if show_all else "pending")
    if as_json:
        _print_json([v.to_dict() for v in views])
        return
    table = make_table(f"Lab safety proposals ({len(views)})", "id", "subject", "term", "grade", "proposes", "value",
                       "date", "status")
    for p in views:
        proposes = "new event" if p.action == "new_event" else f"raise AE id {p.adverse_event_id} (grade {p.current_grade})"
        table.add_row(str(p.id), p.subject, p.term, str(p.grade), proposes, f"{p.value:g} {p.unit}",
                      p.observed_on.isoformat(), p.status)
    make_console().print(table)


@handles_errors
def ae_confirm(
    proposal_id: ProposalArgument,
    file: Annotated[str | None, typer.Argument(
        help="For a new event: a JSON file (or -) completing the AE form (drugs, outcome, seriousness …).",
        show_default=False)] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Confirm a proposal (investigator): record the new event, or raise the open event's grade."""
    from cmvtrial.services.lab_safety import confirm_proposal

    details = _read_json(file) if file else {}
    with command_context(db, as_user) as cli:
        decision = confirm_proposal(cli.uow(), cli.actor, proposal_id, details, reason=reason, today=date.today())
        if as_json:
            _print_json({"proposal": decision.proposal.to_dict(),
                         "adverse_event": decision.event.to_dict() if decision.event else None})
            return
        _print_proposal(decision.proposal)
        if decision.event is not None:
            _print_event(decision.event, "Recorded" if decision.proposal.action == "new_event" else "Updated")
            _print_clock(cli.uow(), cli.actor, decision.event)


@handles_errors
def ae_dismiss(
    proposal_id: ProposalArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why it is not an adverse event (required; audited).")],
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Dismiss a proposal (investigator), with the reason."""
    from cmvtrial.services.lab_safety import dismiss_proposal

    with command_context(db, as_user) as cli:
        decision = dismiss_proposal(cli.uow(), cli.actor, proposal_id, reason=reason)
    _print_proposal(decision.proposal)


# --- serious adverse events ----------------------------------------------------------------


@handles_errors
def sae_list(
    overdue: Annotated[bool, typer.Option("--overdue", help="Only reports past their deadline and not sent.")] = False,
    site: Annotated[str | None, typer.Option("--site", help="Only this site (site code).", show_default=False)] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    as_json: JsonOption = False,
) -> None:
    """List serious adverse events with their expedited-report clock, most urgent first."""
    from cmvtrial.services.sae_reporting import list_serious_events

    with command_context(db, as_user) as cli:
        statuses = list_serious_events(cli.uow(), cli.actor, now=datetime.now(UTC),
                                       site_id=_site(cli.uow(), site), overdue_only=overdue)
    if as_json:
        _print_json([s.to_dict() for s in statuses])
        return
    title = "Overdue SAE reports" if overdue else "Serious adverse events"
    table = make_table(f"{title} ({len(statuses)})", "id", "site", "subject", "term", "aware (UTC)", "due (UTC)",
                       "status", "reported (UTC)")
    for s in statuses:
        table.add_row(str(s.event.id), s.event.site_code, s.event.subject, s.event.term,
                      _short(s.event.awareness_time), _short(s.clock.due_time if s.clock else None),
                      s.status.replace("_", " "), _short(s.event.report_submitted_at))
    make_console().print(table)


def _short(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}" if moment else "—"


def _status_line(status: SaeStatus) -> str:
    due = f"; due {status.clock.due_time:%Y-%m-%d %H:%M} UTC" if status.clock else ""
    return f"{status.event.label} (id {status.event.id}): {status.status.replace('_', ' ')}{due}"


@handles_errors
def sae_submit(
    event_id: EventArgument,
    at: Annotated[str | None, typer.Option("--at", help="When it was sent (ISO time with zone); default now.",
                                           show_default=False)] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="The report's reference (e.g. the "
                                                  "sponsor's case number).", show_default=False)] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Mark the expedited report of a serious event as submitted (investigator); once per event."""
    from cmvtrial.services.sae_reporting import submit_report

    submitted_at = _parse_time(at, "at")
    with command_context(db, as_user) as cli:
        status = submit_report(cli.uow(), cli.actor, event_id, submitted_at=submitted_at,
                               reference=reference, reason=reason)
    typer.echo(f"Report submitted: {_status_line(status)}.")


@handles_errors
def sae_report(
    event_id: EventArgument,
    out: Annotated[Path, typer.Option("--out", help="The file to write: .html (self-contained page) or .pdf.")],
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Write the SAE report form (narrative, dates, seriousness, causality per drug) as HTML or PDF."""
    from cmvtrial.adapters.reports.sae_report import render
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services.sae_reporting import sae_report_form

    formats = {".html": "html", ".htm": "html", ".pdf": "pdf"}
    fmt = formats.get(out.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"--out must end in .html or .pdf (got '{out.name}')", field="out", value=str(out))
    with command_context(db, as_user) as cli:
        form = sae_report_form(cli.uow(), cli.actor, event_id, now=datetime.now(UTC))
    content = render(form, fmt)
    try:
        out.write_bytes(content)
    except OSError as error:
        raise InvalidInput(f"cannot write {out}: {error.strerror}", field="out", value=str(out)) from None
    typer.echo(f"Wrote the SAE report of {form.event.label} to {out} ({fmt.upper()}, {len(content)} bytes).")
