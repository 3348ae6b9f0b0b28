"""Signing in and out, and API tokens: /api/v1/auth/… and /api/v1/tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cmvtrial.adapters.api.auth import (
    SESSION_COOKIE,
    clear_session_cookie,
    client_address,
    csrf_token_for,
    set_session_cookie,
    signed_in,
)
from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import (
    IssuedTokenOut,
    LoginRequest,
    MeOut,
    NewTokenRequest,
    SessionOut,
    TokenOut,
    TokenWithPasswordRequest,
)
from cmvtrial.services import api_tokens, sessions

router = APIRouter(tags=["sign-in"])


@router.post("/auth/login", response_model=SessionOut, responses=problem_responses(401, 422, 429, 503))
def login(body: LoginRequest, request: Request, response: Response, context: ContextDep) -> SessionOut:
    """Sign in with a password; sets the session cookie and returns the CSRF token to send as
    ``X-CSRF-Token`` on every state-changing call. Any earlier session of this browser ends."""
    context.login_throttle.check(client_address(request))
    issued = sessions.sign_in(
        context.uow(), body.username, body.password,
        policy=context.session_policy, lockout=context.lockout, replacing=request.cookies.get(SESSION_COOKIE),
    )
    set_session_cookie(response, request, issued.token)
    actor = issued.actor
    return SessionOut(
        username=actor.username, role=actor.role, site_id=actor.site_id,
        csrf_token=csrf_token_for(issued.token), expires_at=issued.expires_at,
    )


@router.post("/auth/logout", status_code=204, responses=problem_responses(*AUTHENTICATED))
def logout(actor: ActorDep, request: Request, context: ContextDep) -> Response:
    """End this browser's session (a bearer token stays valid; revoke it with DELETE /tokens/{id})."""
    caller = signed_in(request)
    if caller.session_token:
        sessions.sign_out(context.uow(), caller.session_token)
    response = Response(status_code=204)
    clear_session_cookie(response)
    return response


@router.get("/auth/me", response_model=MeOut, responses=problem_responses(*AUTHENTICATED))
def me(actor: ActorDep, request: Request) -> MeOut:
    """Who the credentials sign in."""
    return MeOut(
        user_id=actor.user_id, username=actor.username, role=actor.role, site_id=actor.site_id,
        via=signed_in(request).via,
    )


@router.post(
    "/auth/token", status_code=201, response_model=IssuedTokenOut, responses=problem_responses(401, 422, 429, 503)
)
def token_with_password(body: TokenWithPasswordRequest, request: Request, context: ContextDep) -> IssuedTokenOut:
    """A script's first token: user name and password in, a bearer token out (shown once)."""
    context.login_throttle.check(client_address(request))
    issued = api_tokens.create_token_with_password(
        context.uow(), body.username, body.password, body.name,
        lifetime=context.token_lifetime, lockout=context.lockout,
    )
    return IssuedTokenOut.model_validate(issued, from_attributes=True)


@router.get("/tokens", response_model=list[TokenOut], responses=problem_responses(*AUTHENTICATED, 422))
def list_tokens(
    actor: ActorDep,
    context: ContextDep,
    everyone: Annotated[bool, Query(alias="all", description="All users' tokens (admins only).")] = False,
) -> list[TokenOut]:
    """Your API tokens, newest first (never the tokens themselves)."""
    now = context.clock()
    return [_token_out(view, now) for view in api_tokens.list_tokens(context.uow(), actor, everyone=everyone)]


@router.post(
    "/tokens", status_code=201, response_model=IssuedTokenOut,
    responses=problem_responses(*AUTHENTICATED, 422),
)
def create_token(body: NewTokenRequest, actor: ActorDep, context: ContextDep) -> IssuedTokenOut:
    """Make a bearer token for yourself; it is shown this once."""
    issued = api_tokens.create_token(
        context.uow(), actor, body.name, lifetime=context.token_lifetime, reason=body.reason
    )
    return IssuedTokenOut.model_validate(issued, from_attributes=True)


@router.delete(
    "/tokens/{token_id}", response_model=TokenOut, responses=problem_responses(*AUTHENTICATED, 404, 409, 422)
)
def revoke_token(
    token_id: int,
    actor: ActorDep,
    context: ContextDep,
    reason: Annotated[str | None, Query(max_length=2000, description="Kept in the audit trail.")] = None,
) -> TokenOut:
    """Revoke one of your tokens (an admin: anyone's); it stops working at once."""
    view = api_tokens.revoke_token(context.uow(), actor, token_id, reason=reason)
    return _token_out(view, context.clock())


def _token_out(view: api_tokens.ApiTokenView, now: object) -> TokenOut:
    return TokenOut(
        id=view.id, username=view.username, name=view.name, prefix=view.prefix, created_at=view.created_at,
        expires_at=view.expires_at, last_used_at=view.last_used_at, revoked_at=view.revoked_at,
        active=view.active_at(now),  # type: ignore[arg-type]
    )
