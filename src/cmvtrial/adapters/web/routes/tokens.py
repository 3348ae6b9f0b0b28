"""API tokens: each user makes and revokes their own; a new token is shown once."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.errors import InvalidInput
from cmvtrial.services import api_tokens
from cmvtrial.services.api_tokens import IssuedToken
from cmvtrial.services.permissions import Actor

router = APIRouter(include_in_schema=False)


@router.get("/tokens")
def tokens_page(request: Request, actor: PageActor, context: ContextDep, revoked: int | None = None) -> Response:
    notice = f"Token {revoked} revoked; it no longer works." if revoked else ""
    return _tokens(request, actor, context, notice=notice)


@router.post("/tokens")
def create_token(request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    name = text_field(form, "name")
    try:
        issued = api_tokens.create_token(context.uow(), actor, name, lifetime=context.token_lifetime)
    except InvalidInput as error:
        return _tokens(
            request, actor, context, values={"name": name}, errors=field_errors(error, {"name"}),
            status=family_of(error)[0],
        )
    return _tokens(request, actor, context, issued=issued, status=201)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(token_id: int, request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    api_tokens.revoke_token(context.uow(), actor, token_id, reason=text_field(form, "reason") or None)
    return RedirectResponse(f"/tokens?revoked={token_id}", status_code=303)


def _tokens(
    request: Request,
    actor: Actor,
    context: ContextDep,
    *,
    issued: IssuedToken | None = None,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
) -> Response:
    now = context.clock()
    tokens = [(token, token.active_at(now)) for token in api_tokens.list_tokens(context.uow(), actor)]
    return render(
        request, "tokens.html", actor=actor, title="API tokens", status=status, tokens=tokens, issued=issued,
        values=values or {}, errors=errors or {}, notice=notice,
    )
