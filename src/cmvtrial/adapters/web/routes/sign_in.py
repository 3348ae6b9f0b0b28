"""Signing in and out in the browser."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.auth import (
    PRESESSION_COOKIE,
    SESSION_COOKIE,
    clear_session_cookie,
    client_address,
    set_session_cookie,
    signed_in,
)
from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.web.rendering import render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm
from cmvtrial.errors import AuthenticationFailed, TooManyAttempts
from cmvtrial.services import sessions

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//evil.example`` or a full URL): no open redirect."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


@router.get("/login")
def login_page(
    request: Request,
    next_path: Annotated[str | None, Query(alias="next")] = None,
    expired: bool = False,
    signed_out: bool = False,
) -> Response:
    if SESSION_COOKIE in request.cookies:
        try:
            signed_in(request, allow_bearer=False)
            return RedirectResponse(safe_next(next_path), status_code=303)
        except AuthenticationFailed:
            pass
    notice = ""
    if expired:
        notice = "Your session has ended. Please sign in again."
    elif signed_out:
        notice = "You are signed out."
    return _login_form(request, next_path=safe_next(next_path), notice=notice)


@router.post("/login")
def login(request: Request, form: CheckedForm, context: ContextDep) -> Response:
    username = text_field(form, "username")
    password = form.get("password")
    target = safe_next(text_field(form, "next"))
    try:
        context.login_throttle.check(client_address(request))
        if not username or not isinstance(password, str) or not password:
            raise AuthenticationFailed("enter your user name and password")
        issued = sessions.sign_in(
            context.uow(), username, password, policy=context.session_policy, lockout=context.lockout,
            replacing=request.cookies.get(SESSION_COOKIE),
        )
    except AuthenticationFailed as refusal:
        status = 429 if isinstance(refusal, TooManyAttempts) else 401
        return _login_form(request, next_path=target, error=refusal.message, username=username, status=status)
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, issued.token)
    return response


@router.post("/logout")
def logout(request: Request, form: CheckedForm, context: ContextDep) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        sessions.sign_out(context.uow(), token)
    response = RedirectResponse("/login?signed_out=1", status_code=303)
    clear_session_cookie(response)
    return response


def _login_form(
    request: Request, *, next_path: str, notice: str = "", error: str = "", username: str = "", status: int = 200
) -> Response:
    # A pre-session secret binds the login form's CSRF token to this browser (login CSRF).
    presession = request.cookies.get(PRESESSION_COOKIE) or sessions.new_secret()
    request.state.presession = presession
    response = render(
        request, "login.html", actor=None, title="Sign in", status=status,
        next_path=next_path, notice=notice, error=error, username=username,
    )
    if SESSION_COOKIE not in request.cookies:
        response.set_cookie(
            PRESESSION_COOKIE, presession, httponly=True, samesite="lax",
            secure=request.url.scheme == "https", path="/",
        )
    return response
