"""A candidate's screening form: the protocol's screening items, eligibility shown criterion by
criterion as values are typed (nothing stored until Save), and saving them to the subject.

The live check judges the answers on the page (which start from what is stored) with the same
engine the save uses; Save stores them through ``screening.enter_screening_data``, which judges
again and records a screen failure when a criterion excludes. A value emptied on the page that was
stored is removed (with a reason, as every change of recorded data).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, is_fragment_request, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.routes.page_support import NoticeQuery, SubjectPath, notice_text
from cmvtrial.adapters.web.routes.reference import _labels
from cmvtrial.adapters.web.screening_form import (
    GROUP_GIVEN,
    GROUP_NONE,
    NONE_OF_THESE,
    field_paths,
    parse_answers,
    record_values,
    screening_fields,
)
from cmvtrial.core.eligibility import EligibilityResult
from cmvtrial.errors import InvalidInput, Refused
from cmvtrial.services import permissions, screening
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import check_eligibility, protocol_in_force

router = APIRouter(include_in_schema=False)


@router.get("/subjects/{subject_id}/screening")
def screening_page(request: Request, subject_id: SubjectPath, actor: PageActor, context: ContextDep,
                   notice: NoticeQuery = None) -> Response:
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    fields = screening_fields(protocol_in_force(context.uow(), actor).protocol)
    return _page(request, actor, context, detail, values=record_values(fields, detail.screening_data), errors={},
                 result=detail.eligibility, notice=notice_text(notice))


@router.post("/subjects/{subject_id}/screening/check")
def screening_check(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
                    context: ContextDep) -> Response:
    """The verdict on the answers as they stand (the page script posts here as values are typed)."""
    detail = screening.subject_detail(context.uow(), actor, subject_id)  # the subject must be visible
    fields = screening_fields(protocol_in_force(context.uow(), actor).protocol)
    parsed = parse_answers(fields, form)
    result, errors = None, dict(parsed.errors)
    if not errors:
        try:
            result = check_eligibility(context.uow(), actor, parsed.record)
        except InvalidInput as error:
            errors = field_errors(error, field_paths(fields))
    if is_fragment_request(request):
        return render(request, "_eligibility_result.html", actor=actor, title="Eligibility", result=result,
                      errors=errors, labels=_labels(fields))
    return _page(request, actor, context, detail, values=parsed.values, errors=errors, result=result,
                 status=422 if errors else 200)


@router.post("/subjects/{subject_id}/screening")
def screening_save(request: Request, subject_id: SubjectPath, actor: PageActor, form: CheckedForm,
                   context: ContextDep) -> Response:
    detail = screening.subject_detail(context.uow(), actor, subject_id)
    fields = screening_fields(protocol_in_force(context.uow(), actor).protocol)
    parsed = parse_answers(fields, form)
    reason = text_field(form, "reason")
    errors = dict(parsed.errors)
    if not errors:
        record: dict[str, Any] = dict(parsed.record)
        groups = {one.path for one in fields if one.kind == "group"}
        for key in detail.screening_data:
            if key not in record and key not in groups:
                record[key] = None  # emptied on the page: remove the stored value
        try:
            screening.enter_screening_data(context.uow(), actor, subject_id, record, reason=reason or None)
        except (InvalidInput, Refused) as error:
            errors = field_errors(error, field_paths(fields) | {"reason"})
            return _page(request, actor, context, detail, values={**parsed.values, "reason": reason}, errors=errors,
                         result=None, status=family_of(error)[0])
        return RedirectResponse(f"/subjects/{subject_id}?notice=screening_saved", status_code=303)
    return _page(request, actor, context, detail, values={**parsed.values, "reason": reason}, errors=errors,
                 result=None, status=422)


def _page(request: Request, actor: Actor, context: ContextDep, detail: screening.SubjectDetail, *,
          values: dict[str, Any], errors: dict[str, str], result: EligibilityResult | None, notice: str = "",
          status: int = 200) -> Response:
    protocol = protocol_in_force(context.uow(), actor).protocol
    fields = screening_fields(protocol)
    view = detail.subject
    return render(
        request, "screening.html", actor=actor, title=f"Screening {view.site_code}:{view.screening_number}",
        status=status, view=view, protocol=protocol, fields=fields, values=values, errors=errors, result=result,
        labels=_labels(fields), notice=notice, has_data=bool(detail.screening_data),
        can_enter=permissions.allowed(actor, "screening.enter", site=view.site_id),
        NONE_OF_THESE=NONE_OF_THESE, GROUP_NONE=GROUP_NONE, GROUP_GIVEN=GROUP_GIVEN,
    )
