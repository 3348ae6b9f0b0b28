"""`cmvtrial subject | screening | consent`: candidates, their screening data and consent, and end of study.

Thin adapter over services/subjects.py, services/screening.py, services/screening_log.py and
services/end_of_study.py (`subject withdraw`, `subject complete`); `randomize` and `randomization`
are randomization_commands.py. Each command opens the database, resolves the subject the user
named, calls one service and prints the answer. A subject is named by its id, ``SITE:SCREENING_NUMBER``, its subject number (once
randomized) or a screening number unique among the user's sites. Every command takes ``--db`` and
``--as USERNAME`` (default: the administrator `cmvtrial init` created; site work needs a site user).
Only typer and stdlib at module top, so `cmvtrial --help` stays fast.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption, SubjectArgument, command_context, read_text
from cmvtrial.adapters.cli.output import DbOption, echo_json, handles_errors, make_console, make_table

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.eligibility import EligibilityResult
    from cmvtrial.services.screening_log import ConsortCounts

JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]


def register(app: typer.Typer) -> None:
    subject_app = typer.Typer(help="Trial subjects: register candidates, list and show them.", no_args_is_help=True)
    subject_app.command("register")(subject_register)
    subject_app.command("list")(subject_list)
    subject_app.command("show")(subject_show)
    subject_app.command("withdraw")(subject_withdraw)
    subject_app.command("complete")(subject_complete)
    app.add_typer(subject_app, name="subject")

    screening_app = typer.Typer(
        help="Screening: enter a candidate's screening data, record screen failures, the screening log.",
        no_args_is_help=True,
    )
    screening_app.command("enter")(screening_enter)
    screening_app.command("fail")(screening_fail)
    screening_app.command("log")(screening_log)
    app.add_typer(screening_app, name="screening")

    app.command("consent")(consent)


def _label(view: Any) -> str:
    number = f"{view.subject_number}, " if view.subject_number else ""
    return f"{view.site_code}:{view.screening_number} ({number}id {view.id})"


# --- subjects ------------------------------------------------------------------------------


@handles_errors
def subject_register(
    site: Annotated[str, typer.Option("--site", help="The site's code.", show_default=False)],
    screening_number: Annotated[
        str, typer.Option("--screening-number", help="The candidate's screening number at the site.", show_default=False)
    ],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Register a screening candidate at a site (investigator or coordinator of that site)."""
    from cmvtrial.services import subjects

    with command_context(db, as_user) as cli:
        view = subjects.register_subject(cli.uow(), cli.actor, site, screening_number, reason=reason)
    typer.echo(f"Registered candidate {_label(view)}; enter the screening data with "
               f"`cmvtrial screening enter {view.site_code}:{view.screening_number} FILE.json`.")


@handles_errors
def subject_list(
    site: Annotated[str | None, typer.Option("--site", help="Only this site's subjects.", show_default=False)] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only subjects in this status (screening, eligible, screen_failed, randomized, ...).",
                     show_default=False),
    ] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """List the subjects you may see, by site."""
    from cmvtrial.services import subjects

    with command_context(db, as_user) as cli:
        views = subjects.list_subjects(cli.uow(), cli.actor, site_code=site, status=status)
    if as_json:
        echo_json(views)
        return
    table = make_table(f"Subjects ({len(views)})", "id", "site", "screening no.", "subject no.", "status", "eligibility",
                       "consent")
    for view in views:
        table.add_row(str(view.id), view.site_code, view.screening_number, view.subject_number or "", view.status,
                      view.eligibility or "", view.consent_date.isoformat() if view.consent_date else "")
    make_console().print(table)


@handles_errors
def subject_show(subject: SubjectArgument, as_json: JsonOption = False, db: DbOption = None, as_user: AsOption = None) -> None:
    """Show a subject: status, screening data, eligibility criterion by criterion, consent and allocation;
    once randomized, the visit calendar, the doses and the latest lab values."""
    from cmvtrial.services import screening

    from cmvtrial.adapters.cli.data_commands import treatment_summary

    with command_context(db, as_user) as cli:
        detail = screening.subject_detail(cli.uow(), cli.actor, cli.subject_id(subject))
        treatment = treatment_summary(cli, detail.subject.id) if detail.allocation is not None else None
    if as_json:
        echo_json({
            "subject": detail.subject,
            "screening_data": detail.screening_data,
            "missing_required": list(detail.missing_required),
            "eligibility": detail.eligibility.to_dict() if detail.eligibility else None,
            "allocation": detail.allocation,
            **(treatment.to_dict() if treatment is not None else {}),
        })
        return
    view, console = detail.subject, make_console()
    console.print(f"Subject {_label(view)} — status {view.status}, eligibility {view.eligibility or 'not judged yet'}")
    console.print(f"Consent: {view.consent_date.isoformat() if view.consent_date else 'not recorded'}")
    for reason in view.screen_failure_reasons or []:
        console.print(f"Screen failure: {reason.get('criterion') or reason.get('category')}: "
                      f"{reason.get('text') or reason.get('detail')}")
    if detail.allocation is not None:
        allocation = detail.allocation
        position = f", position {allocation.sequence}" if allocation.sequence else ""
        console.print(f"Allocation: {allocation.arm} ({allocation.method}, stratum {allocation.stratum}{position}) "
                      f"on {allocation.allocated_at:%Y-%m-%d %H:%M} UTC")
    if detail.missing_required:
        console.print(f"Screening items still missing: {', '.join(detail.missing_required)}")
    if detail.eligibility is not None:
        _print_criteria(detail.eligibility)
    if treatment is not None:
        treatment.print()


def _print_criteria(result: EligibilityResult) -> None:
    table = make_table("Eligibility", "criterion", "kind", "verdict", "values used")
    for verdict in result.criteria:
        shown = ", ".join(f"{name}={value}" for name, value in verdict.to_dict()["values"].items())  # type: ignore[union-attr]
        if verdict.missing:
            shown = (shown + "; " if shown else "") + "missing: " + ", ".join(verdict.missing)
        table.add_row(verdict.id, verdict.kind, verdict.verdict, shown)
    make_console().print(table)


TodayOption = Annotated[str | None, typer.Option(
    "--today", metavar="DATE", help="The date to judge on (YYYY-MM-DD); default: today's local date.",
    show_default=False)]
DetailsOption = Annotated[str | None, typer.Option(
    "--details", help="The reason in words (required for other), or a note.", show_default=False)]


def _day(text: str | None, option: str) -> Any:
    from datetime import date as Date

    from cmvtrial.errors import InvalidInput

    try:
        return Date.today() if text is None else Date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{option} must be a date YYYY-MM-DD (got {text!r})", field=option, value=text) from None


def _print_end(view: Any, as_json: bool) -> None:
    if as_json:
        echo_json(view.to_dict())
        return
    words = f": {view.details}" if view.details else ""
    cancelled = f"; cancelled: {', '.join(view.cancelled)}" if view.cancelled else ""
    typer.echo(f"Subject {view.subject} {view.status.replace('_', ' ')} on {view.date.isoformat()} "
               f"({view.reason_label}{words}; CDISC {view.dsdecod}){cancelled}.")


@handles_errors
def subject_withdraw(
    subject: SubjectArgument,
    on_date: Annotated[str, typer.Option("--date", help="The last day the subject took part (YYYY-MM-DD).",
                                         show_default=False)],
    reason: Annotated[str, typer.Option("--reason", help="withdrew_consent, lost_to_follow_up, adverse_event, "
                                        "investigator_decision, death or other.", show_default=False)],
    details: DetailsOption = None,
    today: TodayOption = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Withdraw a randomized subject from the study (the subject's investigator): visits planned after
    the date are cancelled, later visits and doses refused. Cannot be undone or repeated."""
    from cmvtrial.services import end_of_study

    left_on, day = _day(on_date, "--date"), _day(today, "--today")
    with command_context(db, as_user) as cli:
        view = end_of_study.withdraw_subject(cli.uow(), cli.actor, cli.subject_id(subject), reason=reason,
                                             on_date=left_on, today=day, details=details)
    _print_end(view, as_json)


@handles_errors
def subject_complete(subject: SubjectArgument, details: DetailsOption = None, today: TodayOption = None,
                     as_json: JsonOption = False, db: DbOption = None, as_user: AsOption = None) -> None:
    """Record that a subject completed the study (the subject's investigator), once the final visit
    (FU3M) is done; it is dated by that visit."""
    from cmvtrial.services import end_of_study

    day = _day(today, "--today")
    with command_context(db, as_user) as cli:
        view = end_of_study.complete_subject(cli.uow(), cli.actor, cli.subject_id(subject), today=day,
                                             details=details)
    _print_end(view, as_json)


# --- screening -----------------------------------------------------------------------------


def _read_json_object(file: str) -> dict[str, object]:
    from cmvtrial.core.screening_record import parse_screening_record

    text = read_text(file)
    parse_screening_record(text, source=file)  # the format's own errors, with line and column
    data = json.loads(text)
    return dict(data)


def _verdict_line(result: EligibilityResult) -> str:
    if result.eligible is True:
        return "ELIGIBLE: every inclusion criterion met, no exclusion criterion met"
    if result.eligible is False:
        return "NOT ELIGIBLE (screen failure): " + ", ".join(v.id for v in result.reasons_not_eligible)
    unknown = ", ".join(v.id for v in result.unknown)
    return f"UNDETERMINED: {unknown} unknown; missing {', '.join(result.missing)}"


@handles_errors
def screening_enter(
    subject: SubjectArgument,
    file: Annotated[
        str, typer.Argument(help="Screening data as JSON (docs/screening-record.md; any subset of its keys); - reads stdin.")
    ],
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Enter or correct a candidate's screening data and judge eligibility again.

    The keys given replace what is stored (null removes a value; for corticosteroid, null means none);
    changing or removing a stored value needs --reason. Exit 0 once stored, whatever the verdict.
    """
    from cmvtrial.services import screening

    data = _read_json_object(file)
    with command_context(db, as_user) as cli:
        entry = screening.enter_screening_data(cli.uow(), cli.actor, cli.subject_id(subject), data,
                                               reason=reason)
    if as_json:
        echo_json({
            "subject": entry.subject,
            "created": list(entry.created),
            "updated": list(entry.updated),
            "removed": list(entry.removed),
            "missing_required": list(entry.missing_required),
            "eligibility": entry.eligibility.to_dict(),
        })
        return
    if entry.changed:
        typer.echo(f"Screening data of {_label(entry.subject)}: {len(entry.created)} entered, "
                   f"{len(entry.updated)} changed, {len(entry.removed)} removed.")
    else:
        typer.echo(f"Screening data of {_label(entry.subject)}: nothing changed.")
    typer.echo(_verdict_line(entry.eligibility))
    if entry.missing_required:
        typer.echo(f"Still missing: {', '.join(entry.missing_required)}")


@handles_errors
def screening_fail(
    subject: SubjectArgument,
    category: Annotated[
        str, typer.Option("--category", help="declined (declined to participate) or other.", show_default=False)
    ],
    detail: Annotated[str, typer.Option("--detail", help="What happened, in a few words.", show_default=False)],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Record a screen failure eligibility cannot see (the candidate declined, or another reason)."""
    from cmvtrial.services import screening

    with command_context(db, as_user) as cli:
        view = screening.record_screen_failure(cli.uow(), cli.actor, cli.subject_id(subject), category,
                                               detail, reason=reason)
    typer.echo(f"Candidate {_label(view)} recorded as a screen failure ({category}).")


def _print_counts(title: str, counts: ConsortCounts) -> None:
    table = make_table(title, "CONSORT box", "n")
    table.add_row("Assessed for eligibility", str(counts.assessed))
    table.add_row("Excluded", str(counts.excluded))
    table.add_row("  not meeting eligibility criteria", str(counts.not_eligible))
    for criterion, count in counts.by_criterion.items():
        table.add_row(f"    {criterion}", str(count))
    table.add_row("  declined to participate", str(counts.declined))
    table.add_row("  other reasons", str(counts.other))
    table.add_row("Randomized", str(counts.randomized))
    table.add_row("Still in screening", str(counts.in_screening))
    make_console().print(table)


@handles_errors
def screening_log(
    site: Annotated[str | None, typer.Option("--site", help="Only this site (default: every site you see).",
                                             show_default=False)] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """The screening log: every candidate with status and screen-failure reasons, and the CONSORT counts."""
    from cmvtrial.services import screening_log as screening_log_service

    with command_context(db, as_user) as cli:
        log = screening_log_service.screening_log(cli.uow(), cli.actor, site_code=site)
    if as_json:
        echo_json({
            "site": log.site_code,
            "counts": log.counts.to_dict(),
            "counts_by_site": {code: counts.to_dict() for code, counts in log.counts_by_site.items()},
            "candidates": [
                {"id": e.subject.id, "site": e.subject.site_code, "screening_number": e.subject.screening_number,
                 "subject_number": e.subject.subject_number, "screening_date": e.screening_date,
                 "status": e.subject.status, "eligibility": e.subject.eligibility,
                 "screen_failure_reasons": e.subject.screen_failure_reasons, "randomized": e.randomized}
                for e in log.entries
            ],
        })
        return
    where = f"site {log.site_code}" if log.site_code else "all sites"
    table = make_table(f"Screening log, {where} ({len(log.entries)} candidates)", "site", "screening no.", "screened on",
                       "status", "eligibility", "reasons", "subject no.")
    for entry in log.entries:
        view = entry.subject
        reasons = ", ".join(str(r.get("criterion") or r.get("category")) for r in view.screen_failure_reasons or [])
        table.add_row(view.site_code, view.screening_number,
                      entry.screening_date.isoformat() if entry.screening_date else "", view.status,
                      view.eligibility or "", reasons, view.subject_number or "")
    make_console().print(table)
    _print_counts(f"CONSORT enrolment, {where}", log.counts)


# --- consent -------------------------------------------------------------------------------


@handles_errors
def consent(
    subject: SubjectArgument,
    date: Annotated[str, typer.Option("--date", help="The date informed consent was signed (YYYY-MM-DD).",
                                      show_default=False)],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Record the date a candidate signed informed consent (needed before randomization)."""
    from datetime import date as Date

    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import screening

    try:
        signed = Date.fromisoformat(date.strip())
    except ValueError:
        raise InvalidInput(f"--date '{date}' is not a date YYYY-MM-DD", field="date", value=date) from None
    with command_context(db, as_user) as cli:
        view = screening.record_consent(cli.uow(), cli.actor, cli.subject_id(subject), signed,
                                        reason=reason)
    typer.echo(f"Consent of {_label(view)} recorded: {signed.isoformat()}.")
