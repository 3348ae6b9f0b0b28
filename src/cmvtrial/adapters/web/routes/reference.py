"""The protocol in force, and the eligibility checker on its screening form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.web.rendering import field_errors, is_fragment_request, render
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.screening_form import (
    GROUP_GIVEN,
    GROUP_NONE,
    NONE_OF_THESE,
    FormField,
    field_paths,
    parse_answers,
    screening_fields,
)
from cmvtrial.core.eligibility import EligibilityResult
from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import InvalidInput
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import check_eligibility, protocol_in_force

router = APIRouter(include_in_schema=False)


@router.get("/protocol")
def protocol_page(request: Request, actor: PageActor, context: ContextDep) -> Response:
    current = protocol_in_force(context.uow(), actor)
    protocol = current.protocol
    codelists = {codelist.id: codelist for codelist in protocol.codelists}
    return render(
        request, "protocol.html", actor=actor, title=f"Protocol {protocol.id}", protocol=protocol,
        sha256=current.sha256, codelists=codelists,
    )


@router.get("/eligibility")
def eligibility_page(request: Request, actor: PageActor, context: ContextDep) -> Response:
    protocol = protocol_in_force(context.uow(), actor).protocol
    return _eligibility(request, actor, protocol, values={}, errors={}, result=None)


@router.post("/eligibility/check")
def eligibility_check(request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    """Judge the answers so far. The page script posts here on every change and swaps in the
    result fragment; without JavaScript the button posts the whole form and gets the whole page."""
    protocol = protocol_in_force(context.uow(), actor).protocol
    fields = screening_fields(protocol)
    parsed = parse_answers(fields, form)
    result = None
    errors = dict(parsed.errors)
    if not errors:
        try:
            result = check_eligibility(context.uow(), actor, parsed.record)
        except InvalidInput as error:
            errors = field_errors(error, field_paths(fields))
    status = 422 if errors else 200
    if is_fragment_request(request):
        # A fragment with problems is still the answer the script asked for (200); the problems
        # travel in it, to be shown next to their fields.
        return render(
            request, "_eligibility_result.html", actor=actor, title="Eligibility",
            result=result, errors=errors, labels=_labels(fields),
        )
    return _eligibility(request, actor, protocol, values=parsed.values, errors=errors, result=result, status=status)


def _labels(fields: Sequence[FormField]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for one in fields:
        labels[one.path] = one.label
        for child in one.children:
            labels[child.path] = f"{one.label}: {child.label}"
    return labels


def _eligibility(
    request: Request,
    actor: Actor,
    protocol: Protocol,
    *,
    values: dict[str, Any],
    errors: dict[str, str],
    result: EligibilityResult | None,
    status: int = 200,
) -> Response:
    fields = screening_fields(protocol)
    return render(
        request, "eligibility.html", actor=actor, title="Eligibility check", status=status,
        protocol=protocol, fields=fields, values=values, errors=errors, result=result, labels=_labels(fields),
        NONE_OF_THESE=NONE_OF_THESE, GROUP_NONE=GROUP_NONE, GROUP_GIVEN=GROUP_GIVEN,
    )
