"""`cmvtrial randomize` and the database side of `cmvtrial randomization`: setup, balance, export, verify.

Thin adapter over services/randomizing.py and services/randomization_audit.py: each command opens
the database, calls one service and prints the answer (`randomization list`, which needs no
database, is in screening_commands.py). Every command takes ``--db`` and ``--as USERNAME``. Only
typer and stdlib at module top, so `cmvtrial --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption, SubjectArgument, command_context, command_group
from cmvtrial.adapters.cli.output import DbOption, echo_json, handles_errors, make_console, make_table
from cmvtrial.adapters.cli.subject_commands import JsonOption


def register(app: typer.Typer) -> None:
    app.command("randomize")(randomize)

    randomization_app = command_group(  # `randomization list` lives in screening_commands.py
        app, "randomization", "Randomization: lists, the scheme, balance, export and verification."
    )
    randomization_app.command("setup")(randomization_setup)
    randomization_app.command("balance")(randomization_balance)
    randomization_app.command("export")(randomization_export)
    randomization_app.command("verify")(randomization_verify)


@handles_errors
def randomize(subject: SubjectArgument, db: DbOption = None, as_user: AsOption = None, reason: ReasonOption = None) -> None:
    """Randomize an eligible, consented subject of your site (investigator or coordinator); never twice."""
    from cmvtrial.services import randomizing

    with command_context(db, as_user) as cli:
        allocation = randomizing.randomize_subject(cli.uow(), cli.actor, cli.subject_id(subject),
                                                   reason=reason)
    position = f", position {allocation.sequence}" if allocation.sequence else ""
    typer.echo(f"Subject {allocation.subject_number} ({allocation.site_code}:{allocation.screening_number}) randomized "
               f"to {allocation.arm_label} ({allocation.arm}); stratum {allocation.stratum}{position}.")


@handles_errors
def randomization_setup(db: DbOption = None, as_user: AsOption = None, reason: ReasonOption = None) -> None:
    """Create the randomization scheme and its secret seed (admin, at go-live; else done on first use).

    Prints the seed's SHA-256, committed in the audit trail; publish it outside the database.
    Running it again only shows the existing scheme.
    """
    from cmvtrial.services import randomizing

    with command_context(db, as_user) as cli:
        scheme = randomizing.setup_scheme(cli.uow(), cli.actor, reason=reason)
    state = "Created" if scheme.created else "Existing"
    typer.echo(f"{state} randomization scheme {scheme.id} for {scheme.protocol_id} version {scheme.protocol_version} "
               f"({scheme.method}, {scheme.allocations} allocations); seed SHA-256 {scheme.seed_sha256}.")


@handles_errors
def randomization_balance(as_json: JsonOption = False, db: DbOption = None, as_user: AsOption = None) -> None:
    """Allocations per arm per stratum and overall, with the imbalance (admin, data manager, statistician)."""
    from cmvtrial.services import randomizing

    with command_context(db, as_user) as cli:
        view = randomizing.balance(cli.uow(), cli.actor)
    if as_json:
        echo_json(view.to_dict())
        return
    report = view.report
    table = make_table(f"Balance ({view.method}, {report.total} allocated)", "stratum", *report.arms, "imbalance")
    for stratum, counts in report.by_stratum.items():
        table.add_row(stratum, *(str(counts[arm]) for arm in report.arms), f"{float(report.imbalance_by_stratum[stratum]):g}")
    table.add_row("overall", *(str(report.overall[arm]) for arm in report.arms), f"{float(report.overall_imbalance):g}")
    make_console().print(table)
    for factor, levels in view.margins.items():
        margins = make_table(f"Factor {factor}", "level", *report.arms)
        for level, counts in sorted(levels.items()):
            margins.add_row(level, *(str(counts.get(arm, 0)) for arm in report.arms))
        make_console().print(margins)


@handles_errors
def randomization_export(
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write (readable by you only).", show_default=False)],
    stratum: Annotated[
        list[str] | None,
        typer.Option("--stratum", help="A stratum to export (repeatable); default: every stratum in use or planned.",
                     show_default=False),
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Positions per stratum; default: the target enrollment.",
                                          show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE if it exists.")] = False,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Export the randomization lists with the secret seed (admin only; the export is audited)."""
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import randomization_audit

    if out.exists() and not force:
        raise InvalidInput(f"{out} exists; choose another file or add --force", field="out", value=str(out))
    with command_context(db, as_user) as cli:
        export = randomization_audit.export_list(cli.uow(), cli.actor, strata=stratum, n=n,
                                                 reason=reason)
    payload = json.dumps(export.to_dict(), indent=2, ensure_ascii=False) + "\n"
    try:
        descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(payload)
    except OSError as error:
        raise InvalidInput(f"cannot write {out}: {error.strerror}", field="out", value=str(out)) from None
    positions = sum(len(entries) for entries in export.strata.values())
    typer.echo(f"Wrote {out}: {len(export.strata)} strata, {positions} positions, "
               f"{len(export.minimization)} minimization decisions. It holds the secret seed: keep it safe.")


@handles_errors
def randomization_verify(db: DbOption = None, as_user: AsOption = None) -> None:
    """Recompute the scheme from its seed: the committed hash, every list position and allocation,
    and every minimization decision. Exit 0 when all agree, 1 naming each problem."""
    from cmvtrial.services import randomization_audit

    with command_context(db, as_user) as cli:
        check = randomization_audit.verify_randomization(cli.uow(), cli.actor)
    if not check.scheme_exists:
        typer.echo("No randomization scheme yet: nothing to verify.")
        return
    if not check.ok:
        for problem in check.problems:
            typer.echo(f"problem: {problem}", err=True)
        typer.echo(f"randomization verification failed: {len(check.problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"Randomization intact: seed matches the hash committed in audit event {check.commitment_sequence}; "
               f"{check.allocations_checked} allocations in {check.strata_checked} strata verified.")
