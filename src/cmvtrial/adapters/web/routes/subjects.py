"""Subject pages: the list (status, search, registering a candidate), one subject (screening
verdict, consent, randomization with a confirmation step, then the visit calendar, the CMV-DNA plot,
doses given and held, labs and adverse events, and the end of study: "Withdraw from study" on a page
of its own with a confirmation step, "Record completion" once the final visit is done), and the
forms posted from it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import display_unit, field_errors, render, text_field
from cmvtrial.adapters.web.routes.cmv_plot import cmv_plot_svg
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.routes.page_support import NoticeQuery, SubjectPath, form_date, notice_text, today
from cmvtrial.core.disposition import ENDED, WITHDRAWAL_REASONS, exit_reason, final_visit
from cmvtrial.errors import InvalidInput, NotFound, Refused
from cmvtrial.services import (
    adverse_events,
    dosing_records,
    end_of_study,
    permissions,
    queries,
    randomizing,
    screening,
    subjects,
    trial_setup,
    visit_data,
    visits,
)
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import protocol_in_force

router = APIRouter(include_in_schema=False)

REGISTER_FIELDS = {"site", "screening_number", "reason"}
STATUSES = ("screening", "eligible", "screen_failed", "randomized", "on_treatment", "in_follow_up", "completed",
            "withdrawn", "lost_to_follow_up", "died")
WITHDRAWAL_FIELDS = {"date", "reason", "details", "confirm"}
DOSE_FIELDS = {"drug", "status", "dose", "unit", "route", "date", "given_by", "reason", "weight_kg", "crcl_ml_min"}


# --- the list ------------------------------------------------------------------------------


@router.get("/subjects")
def subjects_page(
    request: Request,
    actor: PageActor,
    context: ContextDep,
    search: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    return _list(request, actor, context, search=search or "", status=status or "")


@router.post("/subjects")
def register(request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in REGISTER_FIELDS}
    try:
        view = subjects.register_subject(context.uow(), actor, values["site"], values["screening_number"],
                                         reason=values["reason"] or None)
    except (InvalidInput, Refused, NotFound) as error:
        return _list(request, actor, context, values=values, errors=field_errors(error, REGISTER_FIELDS),
                     status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{view.id}/screening?notice=registered", status_code=303)


def _list(request: Request, actor: Actor, context: ContextDep, *, search: str = "", status: str = "",
          values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
          status_code: int = 200) -> Response:
    shown = subjects.list_subjects(context.uow(), actor, status=status if status in STATUSES else None,
                                   search=search or None)
    can_register = permissions.allowed(actor, "subject.register")
    sites = trial_setup.list_sites(context.uow(), actor) if can_register else []
    return render(
        request, "subjects.html", actor=actor, title="Subjects", status=status_code, subjects=shown, search=search,
        status_filter=status, statuses=STATUSES, can_register=can_register, sites=sites,
        values=values or {"site": sites[0].code if len(sites) == 1 else ""}, errors=errors or {},
    )


# --- one subject ---------------------------------------------------------------------------


@router.get("/subjects/{subject_id}")
def subject_page(request: Request, subject_id: SubjectPath, actor: PageActor, context: ContextDep,
                 notice: NoticeQuery = None) -> Response:
    return _subject(request, actor, context, subject_id, notice=notice_text(notice))


def _subject(request: Request, actor: Actor, context: ContextDep, subject_id: int, *, notice: str = "",
             values: dict[str, str] | None = None, errors: dict[str, str] | None = None, error_form: str = "",
             status_code: int = 200) -> Response:
    uow = context.uow
    detail = screening.subject_detail(uow(), actor, subject_id)
    site = detail.subject.site_id
    treatment: dict[str, Any] = {}
    if detail.allocation is not None:
        series = visit_data.cmv_series(uow(), actor, subject_id)
        calendar = visits.subject_calendar(uow(), actor, subject_id, today=today(context))
        last = final_visit(calendar.calendar)
        treatment = {
            "calendar": calendar,
            "final_visit": last,
            "completable": last is not None and last.status == "done" and detail.subject.status not in ENDED,
            "series": series,
            "plot": cmv_plot_svg(series, unit_label=display_unit(series.unit)),
            "doses": dosing_records.list_administrations(uow(), actor, subject_id),
            "labs": visit_data.latest_labs(uow(), actor, subject_id),
        }
    events = (adverse_events.list_adverse_events(uow(), actor, subject_id=subject_id)
              if permissions.allowed(actor, "adverse_event.view") else [])
    open_queries = ([q for q in queries.list_queries(uow(), actor, subject_id=subject_id) if q.status != "closed"]
                    if permissions.allowed(actor, "query.list") else [])
    protocol = protocol_in_force(uow(), actor).protocol
    return render(
        request, "subject.html", actor=actor, title=f"Subject {detail.subject.subject_number or detail.subject.screening_number}",
        status=status_code, detail=detail, view=detail.subject, treatment=treatment, events=events,
        open_queries=open_queries, notice=notice, values=values or {}, errors=errors or {}, error_form=error_form,
        can=_abilities(actor, site), arms={arm.id: arm.label for arm in protocol.arms},
        ended=detail.subject.status in ENDED, exit_reason=exit_reason(detail.subject.end_of_study_reason),
        drug_options=[(drug, drug) for drug in adverse_events.study_drugs(protocol)],
    )


def _abilities(actor: Actor, site: int) -> dict[str, bool]:
    return {action: permissions.allowed(actor, action, site=site) for action in (
        "screening.enter", "consent.record", "randomize", "dose.record", "visit.record", "adverse_event.record",
        "subject.withdraw", "subject.complete")}


@router.post("/subjects/{subject_id}/consent")
def consent(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
            context: ContextDep) -> Response:
    values = {"consent_date": text_field(form, "consent_date"), "consent_reason": text_field(form, "consent_reason")}
    try:
        signed = form_date(form, "consent_date", required=True)
        assert signed is not None
        screening.record_consent(context.uow(), actor, subject_id, signed, reason=values["consent_reason"] or None)
    except (InvalidInput, Refused) as error:
        errors = {("consent_" + k if k in ("date", "reason") else k): v for k, v in field_errors(error).items()}
        return _subject(request, actor, context, subject_id, values=values, errors=errors, error_form="consent",
                        status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=consent", status_code=303)


@router.post("/subjects/{subject_id}/screen-failure")
def screen_failure(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
                   context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in ("category", "detail")}
    try:
        screening.record_screen_failure(context.uow(), actor, subject_id, values["category"], values["detail"])
    except (InvalidInput, Refused) as error:
        return _subject(request, actor, context, subject_id, values=values, errors=field_errors(error),
                        error_form="screen_failure", status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=screen_failure", status_code=303)


# --- randomization, with a confirmation step -----------------------------------------------


@router.get("/subjects/{subject_id}/randomize")
def randomize_page(request: Request, subject_id: SubjectPath, actor: PageActor, context: ContextDep) -> Response:
    return _confirm(request, actor, context, subject_id)


def _confirm(request: Request, actor: Actor, context: ContextDep, subject_id: int, *, error: str = "",
             status_code: int = 200) -> Response:
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    permissions.require(actor, "randomize", site=detail.subject.site_id)
    return render(request, "randomize.html", actor=actor, title="Randomize", status=status_code, detail=detail,
                  view=detail.subject, error=error)


@router.post("/subjects/{subject_id}/randomize")
def randomize(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
              context: ContextDep) -> Response:
    if text_field(form, "confirm") != "yes":
        return _confirm(request, actor, context, subject_id, error="Tick the box to confirm the randomization.",
                        status_code=422)
    try:
        randomizing.randomize_subject(context.uow(), actor, subject_id, reason=text_field(form, "reason") or None)
    except (InvalidInput, Refused) as error:
        return _confirm(request, actor, context, subject_id, error=error.message, status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=randomized", status_code=303)


# --- the end of study: withdrawal (with a confirmation step) and completion ------------------


@router.get("/subjects/{subject_id}/withdraw")
def withdraw_page(request: Request, subject_id: SubjectPath, actor: PageActor, context: ContextDep) -> Response:
    return _withdrawal(request, actor, context, subject_id)


def _withdrawal(request: Request, actor: Actor, context: ContextDep, subject_id: int, *,
                values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
                status_code: int = 200) -> Response:
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    permissions.require(actor, "subject.withdraw", site=detail.subject.site_id)
    return render(request, "withdraw.html", actor=actor, title="Withdraw from study", status=status_code,
                  detail=detail, view=detail.subject, reasons=WITHDRAWAL_REASONS, ended=detail.subject.status in ENDED,
                  exit_reason=exit_reason(detail.subject.end_of_study_reason),
                  values=values or {"date": today(context).isoformat()}, errors=errors or {})


@router.post("/subjects/{subject_id}/withdraw")
def withdraw(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
             context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in WITHDRAWAL_FIELDS}
    try:
        if values["confirm"] != "yes":
            raise InvalidInput("Tick the box to confirm the withdrawal.", field="confirm")
        on_date = form_date(form, "date", required=True)
        assert on_date is not None
        end_of_study.withdraw_subject(context.uow(), actor, subject_id, reason=values["reason"], on_date=on_date,
                                      today=today(context), details=values["details"] or None)
    except (InvalidInput, Refused) as error:
        return _withdrawal(request, actor, context, subject_id, values=values,
                           errors=field_errors(error, WITHDRAWAL_FIELDS), status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=withdrawn", status_code=303)


@router.post("/subjects/{subject_id}/complete")
def complete(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
             context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in ("details", "confirm")}
    try:
        if values["confirm"] != "yes":
            raise InvalidInput("Tick the box to confirm the completion.", field="confirm")
        end_of_study.complete_subject(context.uow(), actor, subject_id, today=today(context),
                                      details=values["details"] or None)
    except (InvalidInput, Refused) as error:
        return _subject(request, actor, context, subject_id, values=values,
                        errors=field_errors(error, {"details", "confirm"}), error_form="complete",
                        status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=completed", status_code=303)


# --- doses ---------------------------------------------------------------------------------


@router.post("/subjects/{subject_id}/doses")
def record_dose(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
                context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in DOSE_FIELDS}
    record: dict[str, Any] = {name: values[name] for name in ("drug", "status", "unit", "route", "date", "given_by",
                                                              "reason") if values[name]}
    try:
        numbers = {name: _number(values[name], name) for name in ("dose", "weight_kg", "crcl_ml_min") if values[name]}
        if "dose" in numbers:
            record["dose"] = numbers.pop("dose")
        if numbers:
            record["basis"] = numbers
        parsed = dosing_records.parse_administration(record)
        dosing_records.record_administration(context.uow(), actor, subject_id, parsed, today=today(context))
    except (InvalidInput, Refused) as error:
        return _subject(request, actor, context, subject_id, values=values, errors=field_errors(error, DOSE_FIELDS),
                        error_form="dose", status_code=family_of(error)[0])
    return RedirectResponse(f"/subjects/{subject_id}?notice=dose#doses", status_code=303)


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInput(f"'{text}' is not a number", field=name, value=text) from None

