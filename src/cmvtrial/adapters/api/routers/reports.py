"""The trial report (HTML and its JSON twin) and the ADaM-like datasets, read from the database as
the caller (services/analysis_data.build_trial_data: statisticians and data managers).

The report is built on request from the data as they are now (or as of ``cutoff``): it takes a few
seconds for a full trial, which a statistician asks for a few times a day. The exports are those of
`cmvtrial export adam|sdtm|odm|fhir` (adapters/interop, docs/interop.md): subjects pseudonymized,
each export written to the audit trail (who exported what) as the CLI does.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from starlette.responses import Response

from cmvtrial.adapters.api.context import AppContext
from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import SubjectId, today
from cmvtrial.errors import NotFound
from cmvtrial.services.permissions import Actor

router = APIRouter(tags=["reports"])

Population = Annotated[Literal["itt", "pp", "safety"], Query(description="Analysis population of the efficacy results.")]
Cutoff = Annotated[date | None, Query(description="Data cut-off date (YYYY-MM-DD); default: today.")]
DATASETS = ("ADSL", "ADTTE", "ADLB")


def trial_report(context: AppContext, actor: Actor, population: str, cutoff: date | None) -> Any:
    """The built report (``.html``, ``.json()``) of the trial in the database, read as ``actor``."""
    from cmvtrial.adapters.reports.report_html import build_report
    from cmvtrial.services.analysis_data import build_trial_data

    data = build_trial_data(context.uow(), actor, data_cutoff=cutoff)
    return build_report(data, population=population, generated_on=today(context))


def adam_files(context: AppContext, actor: Actor, cutoff: date | None) -> dict[str, bytes]:
    """ADSL.csv, ADTTE.csv, ADLB.csv (pseudonymized USUBJID, traced to SDTM, as `cmvtrial export
    adam --db` writes them) and the R script that reruns the main analyses on them."""
    from cmvtrial.adapters.cli.analysis_commands import R_SCRIPT
    from cmvtrial.adapters.interop.adam import build_adam
    from cmvtrial.adapters.interop.sdtm import build_sdtm
    from cmvtrial.analysis.derivations import derive_datasets
    from cmvtrial.services.analysis_data import build_trial_data
    from cmvtrial.services.export_data import build_export_data, record_export

    datasets = derive_datasets(build_trial_data(context.uow(), actor, data_cutoff=cutoff))
    data = build_export_data(context.uow(), actor)
    tables = build_adam(datasets, sdtm=build_sdtm(data),
                        usubjids={subject.label: data.usubjid(subject.key) for subject in data.subjects})
    files = {f"{name}.csv": frame.to_csv(index=False, date_format="%Y-%m-%d").encode("utf-8")
             for name, frame in tables.items()}
    files["rerun.R"] = R_SCRIPT.replace("{reference}", datasets.setup.reference_arm).encode("utf-8")
    record_export(context.uow(), actor, "adam", {"subjects": len(tables.adsl), "via": "api"})
    return files


def sdtm_files(context: AppContext, actor: Actor, formats: str) -> dict[str, bytes]:
    """The SDTM datasets (in each format asked for) and define.xml, as `cmvtrial export sdtm` writes them."""
    import tempfile
    from pathlib import Path

    from cmvtrial import __version__
    from cmvtrial.adapters.interop.dataset_files import parse_formats, write_package
    from cmvtrial.adapters.interop.sdtm import build_sdtm
    from cmvtrial.services.export_data import build_export_data, record_export

    chosen = parse_formats(formats)
    data = build_export_data(context.uow(), actor)
    with tempfile.TemporaryDirectory(prefix="cmvtrial-sdtm-") as folder:
        written = write_package(build_sdtm(data), Path(folder), chosen, generated_at=data.generated_at,
                                source_version=__version__)
        files = {path.name: path.read_bytes() for path in written.files}
    record_export(context.uow(), actor, "sdtm", {"formats": list(chosen), "datasets": written.datasets, "via": "api"})
    return files


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def attachment(content: bytes, media_type: str, filename: str) -> Response:
    return Response(content, media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@router.get("/reports/trial.html", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 422, 503),
                       200: {"description": "The trial report: one self-contained, printable HTML page (figures "
                                            "inline as SVG).", "content": {"text/html": {}}}})
def report_html(actor: ActorDep, context: ContextDep, population: Population = "itt", cutoff: Cutoff = None) -> Response:
    """CONSORT, baseline, every outcome with its table and figure, safety, data quality."""
    built = trial_report(context, actor, population, cutoff)
    return attachment(built.html.encode("utf-8"), "text/html; charset=utf-8", "cmvtrial-report.html")


@router.get("/reports/trial.json", response_model=dict[str, Any],
            responses={**problem_responses(*AUTHENTICATED, 422, 503),
                       200: {"description": "Every number of the report (the JSON twin of the HTML report)."}})
def report_json(actor: ActorDep, context: ContextDep, population: Population = "itt",
                cutoff: Cutoff = None) -> dict[str, Any]:
    """The report's results as JSON."""
    return trial_report(context, actor, population, cutoff).results  # type: ignore[no-any-return]


@router.get("/exports/adam.zip", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 422, 503),
                       200: {"description": "ADSL.csv, ADTTE.csv, ADLB.csv and rerun.R in one ZIP file.",
                             "content": {"application/zip": {}}}})
def adam_zip(actor: ActorDep, context: ContextDep, cutoff: Cutoff = None) -> Response:
    """The ADaM-like analysis datasets with an R script that reruns the main analyses."""
    return attachment(zipped(adam_files(context, actor, cutoff)), "application/zip", "cmvtrial-adam.zip")


@router.get("/exports/adam/{dataset}.csv", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 422, 503),
                       200: {"description": "One analysis dataset as CSV (columns in docs/report.md).",
                             "content": {"text/csv": {}}}})
def adam_csv(dataset: Annotated[Literal["ADSL", "ADTTE", "ADLB"], Path(description="ADSL, ADTTE or ADLB.")],
             actor: ActorDep, context: ContextDep, cutoff: Cutoff = None) -> Response:
    """One ADaM-like dataset."""
    content = adam_files(context, actor, cutoff)[f"{dataset}.csv"]
    return attachment(content, "text/csv; charset=utf-8", f"{dataset}.csv")


@router.get("/exports/sdtm.zip", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 422, 503),
                       200: {"description": "SDTM datasets (TS TA TE TV DM DS SV EX AE CM MH LB VS) and define.xml "
                                            "in one ZIP; subjects pseudonymized.", "content": {"application/zip": {}}}})
def sdtm_zip(
    actor: ActorDep,
    context: ContextDep,
    format: Annotated[str, Query(max_length=40, pattern=r"^[a-z,]+$",  # noqa: A002 - the CLI's option name
                                 description="xpt, csv, json (Dataset-JSON), both, all, or a comma list.")] = "xpt",
) -> Response:
    """The trial as SDTM (data managers and statisticians; the export is audited)."""
    return attachment(zipped(sdtm_files(context, actor, format)), "application/zip", "cmvtrial-sdtm.zip")


@router.get("/exports/odm.xml", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 503),
                       200: {"description": "CDISC ODM 1.3.2: study metadata from the protocol, clinical data with "
                                            "each value's audit records.", "content": {"application/xml": {}}}})
def odm(actor: ActorDep, context: ContextDep) -> Response:
    """The trial as CDISC ODM (the export is audited)."""
    from cmvtrial import __version__
    from cmvtrial.adapters.interop.odm import odm_xml
    from cmvtrial.services.export_data import build_export_data, record_export

    data = build_export_data(context.uow(), actor, include_audit=True)
    text = odm_xml(data, source_version=__version__)
    record_export(context.uow(), actor, "odm", {"subjects": len(data.subjects), "values": len(data.values),
                                                "audit_records": len(data.audit), "via": "api"})
    return attachment(text.encode("utf-8"), "application/xml; charset=utf-8", "cmvtrial-odm.xml")


@router.get("/exports/fhir/{subject_id}.json", response_class=Response,
            responses={**problem_responses(*AUTHENTICATED, 404, 422, 503),
                       200: {"description": "One subject's FHIR R4 Bundle: Patient (pseudonymized), ResearchStudy, "
                                            "results, doses, adverse events.", "content": {"application/fhir+json": {}}}})
def fhir_bundle(subject_id: SubjectId, actor: ActorDep, context: ContextDep) -> Response:
    """One subject as a FHIR R4 Bundle (the export is audited)."""
    from cmvtrial.adapters.interop.fhir_export import bundle_json, export_subject_bundle
    from cmvtrial.services.export_data import build_export_data, record_export

    data = build_export_data(context.uow(), actor, subject_id=subject_id)
    if not data.subjects:
        raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
    document = export_subject_bundle(data, subject_id)
    record_export(context.uow(), actor, "fhir", {"subject": data.subject(subject_id).subject_id,
                                                 "resources": len(document["entry"]), "via": "api"})
    return attachment(bundle_json(document).encode("utf-8"), "application/fhir+json",
                      f"subject-{subject_id}-fhir.json")
