"""Safety pages: the adverse-event form (CTCAE wording of each grade shown as the term is typed),
one event with its update form and, when serious, its report clock, submission and report form,
and the safety overview (events, serious events awaiting reports, lab-grade proposals to decide)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.routes.page_support import IdPath, NoticeQuery, SubjectPath, notice_text, now, today
from cmvtrial.core.adverse_events import ActionTaken, Outcome, Relatedness, SeriousnessCriterion
from cmvtrial.errors import InvalidInput, NotFound, Refused
from cmvtrial.services import adverse_events, lab_safety, permissions, sae_reporting, screening
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import ctcae_general_grades, ctcae_term, protocol_in_force

router = APIRouter(include_in_schema=False)

AE_FIELDS = {"term", "verbatim", "start_date", "end_date", "grade", "outcome", "seriousness", "awareness_time",
             "drugs", "narrative", "reason", "meddra_code"}
CHOICES = {
    "outcome": [(o.value, o.value.lower()) for o in Outcome],
    "relatedness": [(r.value, r.value.replace("_", " ")) for r in Relatedness],
    "action": [(a.value, a.value.lower()) for a in ActionTaken],
    "seriousness": [(c.value, c.label) for c in SeriousnessCriterion],
}


# --- the overview --------------------------------------------------------------------------


@router.get("/safety")
def safety_page(request: Request, actor: PageActor, context: ContextDep, notice: NoticeQuery = None) -> Response:
    uow = context.uow
    events = adverse_events.list_adverse_events(uow(), actor)
    serious = sae_reporting.list_serious_events(uow(), actor, now=now(context))
    proposals = lab_safety.list_proposals(uow(), actor)
    return render(request, "safety.html", actor=actor, title="Safety", events=events, serious=serious,
                  proposals=proposals, can_decide=permissions.allowed(actor, "lab_safety.decide"),
                  drugs=_drugs(context, actor), choices=CHOICES, error="", notice=notice_text(notice))


def _drugs(context: ContextDep, actor: Actor) -> list[str]:
    return adverse_events.study_drugs(protocol_in_force(context.uow(), actor).protocol)


# --- the AE form ---------------------------------------------------------------------------


def _event_data(form: Any, drugs: list[str], *, partial: bool = False) -> dict[str, Any]:
    """The AE form's answers as the service's AE record (blank fields left out)."""
    data: dict[str, Any] = {}
    for name in ("term", "verbatim", "start_date", "end_date", "outcome", "narrative"):
        if text_field(form, name):
            data[name] = text_field(form, name)
    grade = text_field(form, "grade")
    if grade:
        data["grade"] = int(grade) if grade.isdigit() else grade
    chosen = [value for value in form.getlist("seriousness") if isinstance(value, str) and value]
    if chosen or not partial:
        data["seriousness"] = chosen
    aware = text_field(form, "awareness_time")
    if aware:
        try:
            data["awareness_time"] = datetime.fromisoformat(aware).replace(tzinfo=UTC).isoformat()
        except ValueError:
            raise InvalidInput(f"'{aware}' is not a date and time", field="awareness_time", value=aware) from None
    assessments = []
    for index, drug in enumerate(drugs):
        relatedness, action = text_field(form, f"drug_{index}_relatedness"), text_field(form, f"drug_{index}_action")
        if relatedness or action:
            assessments.append({"drug": drug, "relatedness": relatedness, "action_taken": action})
    if assessments or not partial:
        data["drugs"] = assessments
    return data


def _grades(actor: Actor, term: str) -> tuple[str | None, dict[int, str | None]]:
    """The CTCAE term a name refers to and the wording of each grade (general wording for free text)."""
    found = ctcae_term(actor, term) if term else None
    if found is not None:
        return found.term, {grade: found.grade_text(grade) for grade in range(1, 6)}
    return None, dict(ctcae_general_grades(actor))


@router.get("/subjects/{subject_id}/adverse-events/new")
def new_event(request: Request, subject_id: SubjectPath, actor: PageActor, context: ContextDep) -> Response:
    return _form(request, actor, context, subject_id, values={"start_date": today(context).isoformat()}, errors={})


def _form(request: Request, actor: Actor, context: ContextDep, subject_id: int, *, values: dict[str, Any],
          errors: dict[str, str], status: int = 200) -> Response:
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    permissions.require(actor, "adverse_event.record", site=detail.subject.site_id)
    term, grades = _grades(actor, str(values.get("term", "")))
    return render(request, "adverse_event_form.html", actor=actor, title="Record an adverse event", status=status,
                  view=detail.subject, values=values, errors=errors, drugs=_drugs(context, actor), choices=CHOICES,
                  ctcae=term, grades=grades, chosen_grade=str(values.get("grade", "")))


@router.post("/adverse-events/grade-text")
def grade_text(request: Request, actor: PageActor, form: CheckedForm) -> Response:
    """The CTCAE wording of each grade for the term typed so far (the form's live panel)."""
    term, grades = _grades(actor, text_field(form, "term"))
    return render(request, "_ae_grades.html", actor=actor, title="Grades", ctcae=term, grades=grades,
                  chosen_grade=text_field(form, "grade"), typed=text_field(form, "term"))


@router.post("/subjects/{subject_id}/adverse-events")
def record_event(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
                 context: ContextDep) -> Response:
    drugs = _drugs(context, actor)
    values = _form_values(form, drugs)
    try:
        data = _event_data(form, drugs)
        view = adverse_events.record_adverse_event(context.uow(), actor, subject_id, data, today=today(context),
                                                   reason=text_field(form, "reason") or None)
    except (InvalidInput, Refused) as error:
        return _form(request, actor, context, subject_id, values=values, errors=field_errors(error, AE_FIELDS),
                     status=family_of(error)[0])
    return RedirectResponse(f"/adverse-events/{view.id}?notice=ae_recorded", status_code=303)


def _form_values(form: Any, drugs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {name: text_field(form, name) for name in AE_FIELDS if name not in ("seriousness", "drugs")}
    values["seriousness"] = [v for v in form.getlist("seriousness") if isinstance(v, str)]
    for index in range(len(drugs)):
        for part in ("relatedness", "action"):
            values[f"drug_{index}_{part}"] = text_field(form, f"drug_{index}_{part}")
    return values


# --- one event -----------------------------------------------------------------------------


@router.get("/adverse-events/{event_id}")
def event_page(request: Request, event_id: IdPath, actor: PageActor, context: ContextDep,
               notice: NoticeQuery = None) -> Response:
    return _event(request, actor, context, event_id, notice=notice_text(notice))


def _event(request: Request, actor: Actor, context: ContextDep, event_id: int, *, notice: str = "",
           section: str = "", values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
           status: int = 200) -> Response:
    event = adverse_events.get_adverse_event(context.uow(), actor, event_id)
    clock = sae_reporting.sae_status(context.uow(), actor, event_id, now=now(context)) if event.serious else None
    return render(
        request, "adverse_event.html", actor=actor, title=event.label, status=status, event=event, clock=clock,
        notice=notice, section=section, values=values or {}, errors=errors or {}, choices=CHOICES,
        can_update=permissions.allowed(actor, "adverse_event.record", site=event.site_id),
        can_submit=event.serious and not event.report_submitted_at
        and permissions.allowed(actor, "sae.submit_report", site=event.site_id),
    )


@router.post("/adverse-events/{event_id}")
def update_event(request: Request, event_id: IdPath, actor: PageActor, form: CheckedForm,
                 context: ContextDep) -> Response:
    changes: dict[str, Any] = {}
    for name in ("end_date", "outcome", "narrative"):
        if text_field(form, name):
            changes[name] = text_field(form, name)
    if text_field(form, "grade"):
        grade = text_field(form, "grade")
        changes["grade"] = int(grade) if grade.isdigit() else grade
    values = {name: text_field(form, name) for name in ("end_date", "outcome", "narrative", "grade", "reason")}
    try:
        adverse_events.update_adverse_event(context.uow(), actor, event_id, changes, reason=text_field(form, "reason"),
                                            today=today(context))
    except (InvalidInput, Refused) as error:
        return _event(request, actor, context, event_id, section="update", values=values,
                      errors=field_errors(error, set(values) | {"changes"}), status=family_of(error)[0])
    return RedirectResponse(f"/adverse-events/{event_id}?notice=ae_updated", status_code=303)


@router.post("/adverse-events/{event_id}/sae-report")
def submit_report(request: Request, event_id: IdPath, actor: PageActor, form: CheckedForm,
                  context: ContextDep) -> Response:
    reference = text_field(form, "reference")
    try:
        sae_reporting.submit_report(context.uow(), actor, event_id, reference=reference or None)
    except (InvalidInput, Refused) as error:
        return _event(request, actor, context, event_id, section="sae", values={"reference": reference},
                      errors=field_errors(error, {"reference"}), status=family_of(error)[0])
    return RedirectResponse(f"/adverse-events/{event_id}?notice=sae_submitted", status_code=303)


# --- lab-grade proposals -------------------------------------------------------------------


@router.post("/lab-proposals/{proposal_id}/confirm")
def confirm(request: Request, proposal_id: IdPath, actor: PageActor, form: CheckedForm,
            context: ContextDep) -> Response:
    drugs = _drugs(context, actor)
    try:
        details = _event_data(form, drugs, partial=True)
        decision = lab_safety.confirm_proposal(context.uow(), actor, proposal_id, details,
                                               reason=text_field(form, "reason") or None, today=today(context))
    except (InvalidInput, Refused, NotFound) as error:
        return _proposal_refused(request, actor, context, error)
    target = f"/adverse-events/{decision.event.id}?notice=confirmed" if decision.event else "/safety"
    return RedirectResponse(target, status_code=303)


@router.post("/lab-proposals/{proposal_id}/dismiss")
def dismiss(request: Request, proposal_id: IdPath, actor: PageActor, form: CheckedForm,
            context: ContextDep) -> Response:
    try:
        lab_safety.dismiss_proposal(context.uow(), actor, proposal_id, reason=text_field(form, "reason"))
    except (InvalidInput, Refused, NotFound) as error:
        return _proposal_refused(request, actor, context, error)
    return RedirectResponse("/safety?notice=dismissed", status_code=303)


def _proposal_refused(request: Request, actor: Actor, context: ContextDep, error: Any) -> Response:
    uow = context.uow
    return render(request, "safety.html", actor=actor, title="Safety", status=family_of(error)[0],
                  events=adverse_events.list_adverse_events(uow(), actor),
                  serious=sae_reporting.list_serious_events(uow(), actor, now=now(context)),
                  proposals=lab_safety.list_proposals(uow(), actor),
                  can_decide=permissions.allowed(actor, "lab_safety.decide"), drugs=_drugs(context, actor),
                  choices=CHOICES, error=error.message, notice="")
