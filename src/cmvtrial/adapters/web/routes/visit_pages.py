"""A visit's page: its window and status, recording it done or missed, each of its forms generated
from the protocol (units, limits and edit-check messages beside the fields, checked as you type),
the visit's signatures and the investigator's signature, and a monitor's query on a stored value.

Each form posts on its own (a visit such as baseline has eleven), through the same data-entry
service as the CLI and the API; the answer is shown on the page itself, so its findings (each a
query), deviations, invalidated signatures and lab-safety proposals sit where the data were typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, is_fragment_request, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.routes.page_support import (
    FormPath,
    NoticeQuery,
    SubjectPath,
    VisitPath,
    form_date,
    notice_text,
    today,
)
from cmvtrial.adapters.web.visit_form import (
    VisitField,
    field_names,
    parse_visit_form,
    stored_answers,
    visit_fields,
)
from cmvtrial.errors import AuthenticationFailed, InvalidInput, NotFound, Refused
from cmvtrial.services import data_entry, permissions, queries, signatures, visit_data, visits
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import check_form, protocol_in_force
from cmvtrial.services.signatures import MEANINGS

router = APIRouter(include_in_schema=False)


@dataclass
class FormCopy:
    """One form (or one copy of a repeating form) as the page shows it."""

    form_id: str
    name: str
    repeat: int
    status: str | None
    fields: tuple[VisitField, ...]
    values: dict[str, Any]
    repeating: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # item path -> open query texts
    findings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.form_id}-{self.repeat}"


@dataclass
class Outcome:
    """What a post did, to show on the page it answers with."""

    form_key: str = ""
    values: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    entry: data_entry.VisitEntry | None = None
    section: str = ""
    section_errors: dict[str, str] = field(default_factory=dict)
    section_values: dict[str, str] = field(default_factory=dict)


@router.get("/subjects/{subject_id}/visits/{visit}")
def visit_page(request: Request, subject_id: SubjectPath, visit: VisitPath, actor: PageActor, context: ContextDep,
               notice: NoticeQuery = None) -> Response:
    return _page(request, actor, context, subject_id, visit, notice=notice_text(notice))


def _page(request: Request, actor: Actor, context: ContextDep, subject_id: int, visit: str, *, notice: str = "",
          outcome: Outcome | None = None, status: int = 200) -> Response:
    outcome = outcome or Outcome()
    uow = context.uow
    calendar = visits.subject_calendar(uow(), actor, subject_id, today=today(context))
    stored = visit_data.visit_values(uow(), actor, subject_id, visit)
    scheduled = next((v for v in calendar.calendar.visits if v.label == stored.visit), None)
    if scheduled is None:
        raise NotFound(f"subject {calendar.subject} has no visit {visit}", field="visit", value=visit)
    protocol = protocol_in_force(uow(), actor).protocol
    open_queries = [q for q in queries.list_queries(uow(), actor, subject_id=subject_id)
                    if q.visit == stored.visit and q.status != "closed"] if permissions.allowed(actor, "query.list") else []
    copies = []
    for form_id in scheduled.forms:
        form = protocol.form(form_id)
        fields = visit_fields(protocol, form_id)
        saved = stored.form(form_id)
        repeats = [copy.repeat for copy in saved] + ([len(saved)] if form.repeating or not saved else [])
        for repeat in repeats:
            copy = next((c for c in saved if c.repeat == repeat), None)
            shown = FormCopy(form_id, form.name, repeat, copy.status if copy else None, fields,
                             stored_answers(fields, copy.values if copy else {}), form.repeating)
            for query in open_queries:
                if query.form == form_id and query.item:
                    shown.notes.setdefault(query.item, []).append(f"Query {query.id} ({query.status}): {query.text}")
            if outcome.form_key == shown.key:
                shown.values = outcome.values or shown.values
                shown.errors = outcome.errors
            if outcome.entry is not None:
                for result in outcome.entry.forms:
                    if (result.form_id, result.form_repeat) == (form_id, repeat):
                        shown.findings = [finding.message for finding in result.findings]
            copies.append(shown)
    try:
        signed = signatures.visit_signatures(uow(), actor, subject_id, visit)
    except NotFound:
        signed = []
    subject_site = stored.site_id
    stored_items = [(f"{c.form_id}.{path}#{c.repeat}", f"{c.name}{f' #{c.repeat + 1}' if c.repeat else ''}: "
                     f"{path} = {value} {c.values.get(path + '__unit', '')}".rstrip())
                    for c in copies if c.status is not None for path, value in sorted(c.values.items())
                    if not path.endswith("__unit")]
    return render(
        request, "visit.html", actor=actor, title=f"{calendar.subject} {stored.visit}", status=status,
        calendar=calendar, scheduled=scheduled, stored=stored, copies=copies, signatures=signed, notice=notice,
        outcome=outcome, meanings=MEANINGS, stored_items=stored_items, today=today(context),
        can={action: permissions.allowed(actor, action, site=subject_site) for action in (
            "form.enter", "visit.record", "form.sign", "query.open")},
    )


# --- recording the visit -------------------------------------------------------------------


@router.post("/subjects/{subject_id}/visits/{visit}")
def record_visit(request: Request, subject_id: SubjectPath, visit: VisitPath, actor: PageActor, form: CheckedForm,
                 context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in ("visit_date", "missed", "reason")}
    try:
        missed = values["missed"] == "yes"
        on_date = None if missed else form_date(form, "visit_date", required=True)
        visits.record_visit(context.uow(), actor, subject_id, visit, today=today(context), on_date=on_date,
                            missed=missed, reason=values["reason"] or None)
    except (InvalidInput, Refused) as error:
        errors = {("visit_date" if k == "date" else k): v for k, v in field_errors(error).items()}
        return _page(request, actor, context, subject_id, visit, status=family_of(error)[0],
                     outcome=Outcome(section="record", section_errors=errors, section_values=values))
    return RedirectResponse(f"/subjects/{subject_id}/visits/{visit}?notice=visit", status_code=303)


# --- entering a form -----------------------------------------------------------------------


def _submission(context: ContextDep, actor: Actor, subject_id: int, visit: str, form_id: str, repeat: int,
                form: Any) -> tuple[Any, dict[str, Any], bool]:
    """(parsed answers, the forms argument of enter_visit_data, whether the form is repeating)."""
    protocol = protocol_in_force(context.uow(), actor).protocol
    definition = protocol.form(form_id)
    stored = visit_data.visit_values(context.uow(), actor, subject_id, visit)
    copy = next((c for c in stored.form(form_id) if c.repeat == repeat), None)
    fields = visit_fields(protocol, form_id)
    parsed = parse_visit_form(fields, form, copy.values if copy else {})
    if definition.repeating:
        earlier = [{} for _ in range(repeat)]  # copies before this one: unchanged
        return parsed, {form_id: [*earlier, parsed.submission]}, True
    return parsed, {form_id: parsed.submission}, False


def _repeat(form: Any) -> int:
    text = text_field(form, "repeat")
    return int(text) if text.isdigit() and int(text) < 1000 else 0


@router.post("/subjects/{subject_id}/visits/{visit}/forms/{form_id}")
def enter_form(request: Request, subject_id: SubjectPath, visit: VisitPath, form_id: FormPath, actor: PageActor,
               form: CheckedForm, context: ContextDep) -> Response:
    repeat = _repeat(form)
    key = f"{form_id}-{repeat}"
    reason = text_field(form, "reason") or None
    try:
        parsed, forms, _ = _submission(context, actor, subject_id, visit, form_id, repeat, form)
    except (InvalidInput, NotFound) as error:
        raise NotFound(f"visit {visit} has no form '{form_id}'", field="form", value=form_id) from error
    values = {**parsed.values, "visit_date": text_field(form, "visit_date"), "reason": reason or ""}
    if parsed.errors:
        return _page(request, actor, context, subject_id, visit, status=422,
                     outcome=Outcome(form_key=key, values=values, errors=parsed.errors))
    try:
        entry = data_entry.enter_visit_data(
            context.uow(), actor, subject_id, visit, forms, today=today(context),
            visit_date=form_date(form, "visit_date"), complete=[form_id] if text_field(form, "complete") == "yes" else False,
            reason=reason)
    except (InvalidInput, Refused) as error:
        known = field_names(visit_fields(protocol_in_force(context.uow(), actor).protocol, form_id))
        errors = field_errors(error, known | {"reason", "visit_date", "complete"})
        if "date" in field_errors(error):
            errors["visit_date"] = field_errors(error)["date"]
        return _page(request, actor, context, subject_id, visit, status=family_of(error)[0],
                     outcome=Outcome(form_key=key, values=values, errors=errors))
    return _page(request, actor, context, subject_id, visit, notice="Form saved." if entry.changed else
                 "Nothing changed.", outcome=Outcome(form_key=key, entry=entry))


@router.post("/subjects/{subject_id}/visits/{visit}/forms/{form_id}/check")
def check_visit_form(request: Request, subject_id: SubjectPath, visit: VisitPath, form_id: FormPath, actor: PageActor,
                     form: CheckedForm, context: ContextDep) -> Response:
    """Check the answers as typed (units, limits, edit checks) and store nothing: the page script
    posts here on every change and shows each message beside its field."""
    repeat = _repeat(form)
    try:
        parsed, _, _ = _submission(context, actor, subject_id, visit, form_id, repeat, form)
    except (InvalidInput, NotFound) as error:
        raise NotFound(f"visit {visit} has no form '{form_id}'", field="form", value=form_id) from error
    messages: dict[str, str] = dict(parsed.errors)
    missing: tuple[str, ...] = ()
    if not messages:
        submission = {k: v for k, v in parsed.submission.items() if v is not None}
        try:
            checked = check_form(context.uow(), actor, form_id, submission)
        except InvalidInput as error:
            messages = field_errors(error, field_names(visit_fields(protocol_in_force(context.uow(), actor).protocol,
                                                                    form_id)))
        else:
            missing = checked.missing_required
            for finding in checked.findings:
                for item in finding.items[:1]:
                    messages.setdefault(item, f"Check: {finding.message}")
    if not is_fragment_request(request):
        return RedirectResponse(f"/subjects/{subject_id}/visits/{visit}", status_code=303)
    return render(request, "_visit_check.html", actor=actor, title="Check", messages=messages, missing=missing)


# --- signing -------------------------------------------------------------------------------


@router.post("/subjects/{subject_id}/visits/{visit}/sign")
def sign(request: Request, subject_id: SubjectPath, visit: VisitPath, actor: PageActor, form: CheckedForm,
         context: ContextDep) -> Response:
    password = form.get("password")
    meaning = text_field(form, "meaning") or "approval"
    try:
        signatures.sign_visit(context.uow(), actor, subject_id, visit,
                              password=password if isinstance(password, str) else "", meaning=meaning)
    except (InvalidInput, Refused, AuthenticationFailed) as error:
        errors = field_errors(error, {"password", "meaning"})
        if isinstance(error, AuthenticationFailed):
            errors = {"password": error.message}
        return _page(request, actor, context, subject_id, visit, status=family_of(error)[0],
                     outcome=Outcome(section="sign", section_errors=errors, section_values={"meaning": meaning}))
    return RedirectResponse(f"/subjects/{subject_id}/visits/{visit}?notice=signed", status_code=303)


# --- a monitor's query on a stored value ---------------------------------------------------


@router.post("/subjects/{subject_id}/visits/{visit}/queries")
def open_query(request: Request, subject_id: SubjectPath, visit: VisitPath, actor: PageActor, form: CheckedForm,
               context: ContextDep) -> Response:
    target = text_field(form, "target")
    text = text_field(form, "text")
    form_id, _, rest = target.partition(".")
    item, _, repeat = rest.partition("#")
    try:
        if not form_id or not item:
            raise InvalidInput("choose the value the query is about", field="target")
        queries.open_query(context.uow(), actor, subject_id, visit, form_id, item, text,
                           form_repeat=int(repeat) if repeat.isdigit() else 0)
    except (InvalidInput, NotFound, Refused) as error:
        errors = {("text" if k == "query" else k): v for k, v in field_errors(error).items()}
        if "item" in errors:
            errors["target"] = errors.pop("item")
        return _page(request, actor, context, subject_id, visit, status=family_of(error)[0],
                     outcome=Outcome(section="query", section_errors=errors,
                                     section_values={"target": target, "text": text}))
    return RedirectResponse(f"/subjects/{subject_id}/visits/{visit}?notice=query_opened", status_code=303)
