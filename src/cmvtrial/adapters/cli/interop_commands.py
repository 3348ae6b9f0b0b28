"""`cmvtrial export sdtm|odm|fhir`, `cmvtrial sdtm check` and `cmvtrial import fhir`: interchange.

Thin by design: read the database through ``services/export_data.py`` (pseudonymized, as a data
manager or statistician: ``--as``), hand the snapshot to ``cmvtrial.adapters.interop`` and write
the files; the FHIR import parses the bundle (adapters/interop/fhir_import.py) and lets
``services/lab_import.py`` enter it through data entry. Every export is written to the audit trail
(who exported what). Only typer/stdlib at module top (``cmvtrial --help`` stays fast).
The ``export`` group is the one analysis_commands.py registers (``export adam`` lives there and
calls :func:`adam_tables` here for its ADaM columns and SDTM traceability).
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption, command_context, command_group
from cmvtrial.adapters.cli.output import DbOption, handles_errors, make_table

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.adapters.cli.context import CommandContext
    from cmvtrial.adapters.interop.adam import AdamDatasets
    from cmvtrial.analysis.derivations import AnalysisDatasets
    from cmvtrial.services.export_data import ExportData

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
SubjectOption = Annotated[
    str, typer.Option("--subject", help="The subject: its id, SITE:SCREENING_NUMBER, subject number or export "
                                        "pseudonym.", show_default=False)]


def register(app: typer.Typer) -> None:
    export_app = command_group(app, "export", "Export the trial's data for other tools.")
    export_app.command("sdtm")(export_sdtm)
    export_app.command("odm")(export_odm)
    export_app.command("fhir")(export_fhir)
    sdtm_app = typer.Typer(help="SDTM datasets: conformance checks on any folder.", no_args_is_help=True)
    sdtm_app.command("check")(sdtm_check)
    app.add_typer(sdtm_app, name="sdtm")
    import_app = typer.Typer(help="Import data from other systems: FHIR lab results.", no_args_is_help=True)
    import_app.command("fhir")(import_fhir)
    app.add_typer(import_app, name="import")


def _version() -> str:
    from cmvtrial import __version__

    return __version__


def _export_data(cli: CommandContext, **options: Any) -> ExportData:
    from cmvtrial.services.export_data import build_export_data

    return build_export_data(cli.uow(), cli.actor, **options)


def _record(cli: CommandContext, what: str, details: dict[str, Any]) -> None:
    from cmvtrial.services.export_data import record_export

    record_export(cli.uow(), cli.actor, what, details)


def _write_text(path: Path, text: str) -> None:
    from cmvtrial.errors import InvalidInput

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InvalidInput(f"cannot write {path}: {error.strerror}", field="out", value=str(path)) from None


# --- export sdtm / odm / fhir --------------------------------------------------------------


@handles_errors
def export_sdtm(
    out: Annotated[str, typer.Option("--out", help="Folder to write the datasets and define.xml into.")],
    file_format: Annotated[
        str, typer.Option("--format", help="xpt (SAS XPORT v5), csv, json (Dataset-JSON 1.1), both (xpt and csv), "
                                            "all, or a comma list such as xpt,json.")] = "xpt",
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Write SDTM datasets (TS TA TE TV DM DS SV EX AE CM MH LB VS) and define.xml; subjects pseudonymized."""
    from cmvtrial.adapters.interop.dataset_files import parse_formats, write_package
    from cmvtrial.adapters.interop.sdtm import build_sdtm

    formats = parse_formats(file_format)
    with command_context(db, as_user) as cli:
        data = _export_data(cli)
        package = build_sdtm(data)
        written = write_package(package, Path(out), formats, generated_at=data.generated_at,
                                source_version=_version())
        _record(cli, "sdtm", {"formats": list(formats), "folder": str(Path(out).resolve()),
                              "datasets": written.datasets})
    listed = ", ".join(f"{name} {rows}" for name, rows in written.datasets.items())
    typer.echo(f"Wrote {len(written.files)} files to {out} ({'/'.join(formats)} and define.xml): {listed}.")


@handles_errors
def export_odm(
    out: Annotated[str, typer.Option("--out", help="The ODM 1.3.2 XML file to write.")],
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Write CDISC ODM 1.3.2: study metadata from the protocol, clinical data with audit records."""
    from cmvtrial.adapters.interop.odm import odm_xml

    with command_context(db, as_user) as cli:
        data = _export_data(cli, include_audit=True)
        _write_text(Path(out), odm_xml(data, source_version=_version()))
        _record(cli, "odm", {"file": str(Path(out).resolve()), "subjects": len(data.subjects),
                             "values": len(data.values), "audit_records": len(data.audit)})
    typer.echo(f"Wrote {out}: {len(data.subjects)} subjects, {len(data.values)} values, "
               f"{len(data.audit)} audit records.")


@handles_errors
def export_fhir(
    subject: SubjectOption,
    out: Annotated[str | None, typer.Option("--out", help="Write the Bundle here instead of printing it.",
                                            show_default=False)] = None,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Print (or write) one subject's FHIR R4 Bundle: Patient (pseudonymized), study, results, doses, AEs."""
    from cmvtrial.adapters.interop.fhir_export import bundle_json, export_subject_bundle

    with command_context(db, as_user) as cli:
        key = _export_subject(cli, subject)
        data = _export_data(cli, subject_id=key)
        document = export_subject_bundle(data, key)
        text = bundle_json(document)
        if out is not None:
            _write_text(Path(out), text)
        _record(cli, "fhir", {"subject": data.subject(key).subject_id, "resources": len(document["entry"]),
                              "file": str(Path(out).resolve()) if out else "stdout"})
    if out is None:
        typer.echo(text, nl=False)
    else:
        typer.echo(f"Wrote {out}: a Bundle of {len(document['entry'])} resources for subject "
                   f"{data.subject(key).subject_id}.")


def _export_subject(cli: CommandContext, reference: str) -> int:
    """A subject named as everywhere in the CLI, or by the pseudonym an earlier export gave it."""
    from cmvtrial.errors import NotFound
    from cmvtrial.services.export_data import subject_by_pseudonym

    try:
        return cli.subject_id(reference)
    except NotFound:
        return subject_by_pseudonym(cli.uow(), cli.actor, reference)


# --- export adam (called by analysis_commands.export_adam) ----------------------------------


def adam_tables(datasets: AnalysisDatasets, *, from_database: bool, db: str | None,
                as_user: str | None) -> AdamDatasets:
    """The ADaM datasets to write: traced to SDTM and pseudonymized when the trial is a database."""
    from cmvtrial.adapters.interop.adam import build_adam
    from cmvtrial.adapters.interop.sdtm import build_sdtm

    if not from_database:
        return build_adam(datasets)
    with command_context(db, as_user) as cli:
        data = _export_data(cli)
        package = build_sdtm(data)
        _record(cli, "adam", {"subjects": len(datasets.adsl)})
    usubjids = {subject.label: data.usubjid(subject.key) for subject in data.subjects}
    return build_adam(datasets, sdtm=package, usubjids=usubjids)


# --- sdtm check ----------------------------------------------------------------------------


@handles_errors
def sdtm_check(
    folder: Annotated[str, typer.Argument(help="A folder of SDTM datasets (.xpt, .json Dataset-JSON or .csv).",
                                          show_default=False)],
    as_json: JsonOption = False,
    errors_only: Annotated[bool, typer.Option("--errors-only", help="List errors, not warnings.")] = False,
) -> None:
    """Check SDTM datasets against our conformance rules; exit 0 no error, 1 errors, 2 unreadable folder."""
    from cmvtrial.adapters.interop.sdtm_check import ERROR, check_folder

    report = check_folder(Path(folder))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
    else:
        for finding in report.findings:
            if finding.severity == ERROR or not errors_only:
                typer.echo(finding.line())
        datasets = ", ".join(f"{name} ({rows})" for name, rows in report.datasets.items())
        typer.echo(f"{len(report.datasets)} datasets checked: {datasets}. {report.errors} error(s), "
                   f"{report.warnings} warning(s).")
    if not report.ok:
        raise typer.Exit(1)


# --- import fhir ---------------------------------------------------------------------------


@handles_errors
def import_fhir(
    file: Annotated[str, typer.Argument(help="A FHIR R4 Bundle of lab Observations (JSON); - reads stdin.",
                                        show_default=False)],
    subject: SubjectOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be imported; change nothing.")] = False,
    today: Annotated[str | None, typer.Option("--today", metavar="DATE", help="The date to judge on (YYYY-MM-DD); "
                                              "default: today's local date.", show_default=False)] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Import lab results: each mapped by LOINC to its item and visit, entered as a site would (audited)."""
    import sys

    from cmvtrial.adapters.interop.fhir_import import read_bundle
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services.lab_import import NOT_IMPORTED, import_lab_results

    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{file} is not UTF-8 text; nothing was imported", field="file", value=file) from None
    except OSError as error:
        raise InvalidInput(f"cannot read {file}: {error.strerror}", field="file", value=file) from None
    results = read_bundle(text)
    on = date.today()
    if today is not None:
        try:
            on = date.fromisoformat(today.strip())
        except ValueError:
            raise InvalidInput(f"--today must be a date YYYY-MM-DD (got {today!r})", field="today", value=today) from None
    with command_context(db, as_user) as cli:
        report = import_lab_results(cli.uow(), cli.actor, cli.subject_id(subject), results, today=on,
                                    source=Path(file).name if file != "-" else "stdin", dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1))
        return
    from rich.console import Console

    title = f"{'Dry run: nothing was changed. ' if dry_run else ''}Subject {report.subject}, {Path(file).name}"
    table = make_table(title, "observation", "date", "value", "outcome", "visit", "item", "why")
    for line in report.lines:
        table.add_row(line.source_id, line.effective.isoformat(), line.value, line.outcome, line.visit or "",
                      line.item or "", line.message)
    Console(highlight=False, width=200).print(table)
    done = report.count("would import") if dry_run else report.count("imported")
    typer.echo(f"{done} result(s) {'would be ' if dry_run else ''}imported, {report.count('unchanged')} unchanged, "
               f"{report.count(NOT_IMPORTED)} not imported; visits entered: {', '.join(report.visits_entered) or 'none'}.")
