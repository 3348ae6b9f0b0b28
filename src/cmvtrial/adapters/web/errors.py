"""Domain errors on pages: a signed-out user goes to the login page; anything else is a page
saying what was refused, with the same status the API would give (problems.FAMILIES).

Forms catch their own InvalidInput to show the message next to the field; what reaches these
handlers is a refusal of the page as a whole (wrong role, another site's data, not found).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from markupsafe import escape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cmvtrial.adapters.api.auth import SESSION_COOKIE, clear_session_cookie
from cmvtrial.adapters.api.problems import family_of, request_id_of
from cmvtrial.adapters.web.rendering import is_fragment_request, render
from cmvtrial.errors import AuthenticationFailed, CmvtrialError, TooManyAttempts


def page_for_domain_error(request: Request, error: CmvtrialError) -> Response:
    if isinstance(error, AuthenticationFailed) and not isinstance(error, TooManyAttempts):
        return _to_login(request, expired=SESSION_COOKIE in request.cookies)
    status, title = family_of(error)
    actor = getattr(getattr(request.state, "signed_in", None), "actor", None)
    if is_fragment_request(request):
        return HTMLResponse(f'<p class="notice error" role="alert">{escape(error.message)}</p>', status_code=status)
    return render(
        request, "error.html", actor=actor, title=title, status=status,
        message=error.message, code=error.code, request_id=request_id_of(request),
    )


def page_for_http_error(request: Request, status: int, detail: str) -> Response:
    actor = getattr(getattr(request.state, "signed_in", None), "actor", None)
    message = "There is no such page." if status == 404 else detail
    return render(
        request, "error.html", actor=actor, title="Not found" if status == 404 else "Error", status=status,
        message=message, code=f"http_{status}", request_id=request_id_of(request),
    )


def _to_login(request: Request, *, expired: bool) -> Response:
    if is_fragment_request(request):
        response: Response = HTMLResponse(
            '<p class="notice error" role="alert">Your session has ended. '
            '<a href="/login">Sign in again</a>.</p>',
            status_code=401,
        )
    else:
        target = request.url.path if request.method == "GET" else "/"
        if request.url.query and request.method == "GET":
            target += "?" + request.url.query
        query = "next=" + quote(target, safe="")
        if expired:
            query += "&expired=1"
        response = RedirectResponse("/login?" + query, status_code=303)
    if expired:
        clear_session_cookie(response)
    return response

