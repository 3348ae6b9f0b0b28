"""Statistician pages: the trial report (HTML, JSON) and the analysis datasets, built on request
from the data as they are now (or at a cut-off date) by the same code as the API and the CLI."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.routers.reports import (
    Population,
    adam_files,
    attachment,
    fhir_bundle,
    trial_report,
    zipped,
)
from cmvtrial.adapters.web.rendering import render
from cmvtrial.adapters.web.routes.deps import PageActor
from cmvtrial.adapters.web.routes.page_support import today
from cmvtrial.errors import InvalidInput
from cmvtrial.services import export_data, permissions, trial_setup

router = APIRouter(include_in_schema=False)

#: The form's cut-off field: blank means today (a browser sends the empty field).
Cutoff = Annotated[str | None, Query(max_length=10)]


def _cutoff(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"the cut-off '{text}' is not a date YYYY-MM-DD", field="cutoff", value=text) from None


@router.get("/reports")
def reports_page(request: Request, actor: PageActor, context: ContextDep) -> Response:
    permissions.require(actor, "analysis.run")
    status = trial_setup.trial_status(context.uow(), actor)
    return render(request, "reports.html", actor=actor, title="Reports and exports", trial=status,
                  today=today(context), datasets=("ADSL", "ADTTE", "ADLB"),
                  pseudonyms=export_data.randomized_pseudonyms(context.uow(), actor))


@router.get("/exports/fhir")
def fhir_download(actor: PageActor, context: ContextDep,
                  subject: Annotated[str, Query(min_length=1, max_length=64)]) -> Response:
    """One subject's FHIR R4 Bundle, chosen on the reports page by pseudonym (the API names the
    subject by its database id: ``GET /api/v1/exports/fhir/{id}.json``)."""
    return fhir_bundle(export_data.subject_by_pseudonym(context.uow(), actor, subject), actor, context)


@router.get("/reports/trial.html")
def report_html(actor: PageActor, context: ContextDep, population: Population = "itt", cutoff: Cutoff = None) -> Response:
    built = trial_report(context, actor, population, _cutoff(cutoff))
    return attachment(built.html.encode("utf-8"), "text/html; charset=utf-8", "cmvtrial-report.html")


@router.get("/reports/trial.json")
def report_json(actor: PageActor, context: ContextDep, population: Population = "itt", cutoff: Cutoff = None) -> Response:
    built = trial_report(context, actor, population, _cutoff(cutoff))
    return attachment(built.json().encode("utf-8"), "application/json", "cmvtrial-report.json")


@router.get("/exports/adam.zip")
def adam_zip(actor: PageActor, context: ContextDep, cutoff: Cutoff = None) -> Response:
    return attachment(zipped(adam_files(context, actor, _cutoff(cutoff))), "application/zip", "cmvtrial-adam.zip")


@router.get("/exports/adam/{dataset}.csv")
def adam_csv(dataset: Annotated[Literal["ADSL", "ADTTE", "ADLB"], Path()], actor: PageActor, context: ContextDep,
             cutoff: Cutoff = None) -> Response:
    return attachment(adam_files(context, actor, _cutoff(cutoff))[f"{dataset}.csv"], "text/csv; charset=utf-8", f"{dataset}.csv")
