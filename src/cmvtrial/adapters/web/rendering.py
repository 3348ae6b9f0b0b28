"""Rendering pages: the template engine, the context every page gets, and form helpers.

Every page template extends ``base.html`` and receives ``title``, ``actor``, ``menu`` and
``csrf_token`` (put it in every form as the hidden field ``csrf_token``). Templates are
autoescaped and strict: an undefined name is an error in tests, not an empty string on a page.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from cmvtrial.adapters.api.auth import PRESESSION_COOKIE, SESSION_COOKIE, check_form_csrf, csrf_token_for
from cmvtrial.adapters.web.navigation import menu
from cmvtrial.errors import CmvtrialError
from cmvtrial.services.permissions import Actor

#: Request header the page script sends when it wants only a fragment of a page back.
FRAGMENT_HEADER = "X-Fragment"


def display_unit(code: str | None) -> str:
    """A UCUM code as people write it: ``[IU]/mL`` → ``IU/mL``, ``10*9/L`` → ``10^9/L``."""
    if not code:
        return ""
    return code.replace("[", "").replace("]", "").replace("10*", "10^").replace("{", "").replace("}", "")


def utc_time(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def make_templates(directory: Path) -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["unit"] = display_unit
    environment.filters["utc"] = utc_time
    environment.filters["number"] = number
    return Jinja2Templates(env=environment)


def is_fragment_request(request: Request) -> bool:
    return request.headers.get(FRAGMENT_HEADER) == "1"


def csrf_for(request: Request) -> str:
    """The CSRF token for forms on this page: bound to the session, or to the pre-session cookie."""
    secret = request.cookies.get(SESSION_COOKIE) or getattr(request.state, "presession", None) or request.cookies.get(
        PRESESSION_COOKIE
    )
    return csrf_token_for(secret) if secret else ""


def render(
    request: Request,
    template: str,
    *,
    actor: Actor | None,
    title: str,
    status: int = 200,
    **values: Any,
) -> HTMLResponse:
    """A page (or fragment) with the common context."""
    context: dict[str, Any] = {
        "title": title,
        "actor": actor,
        "menu": menu(actor, request.url.path) if actor is not None else [],
        "csrf_token": csrf_for(request),
        **values,
    }
    templates: Jinja2Templates = request.app.state.cmvtrial.templates
    return templates.TemplateResponse(request, template, context, status_code=status)


async def checked_form(request: Request) -> FormData:
    """FastAPI dependency of every page POST: the form, after its CSRF token was checked."""
    form = await request.form()
    check_form_csrf(request, form)
    return form


def text_field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def field_errors(error: CmvtrialError, known: set[str] | None = None) -> dict[str, str]:
    """Messages by form field for an error, to show next to the fields. A field the form does not
    have (or none) goes under ``"_form"`` and shows above the form."""
    errors: dict[str, str] = {}
    problems = error.details.get("problems") or []
    pairs = [(str(p.get("location") or p.get("field") or ""), str(p.get("message", ""))) for p in problems]
    if not pairs:
        pairs = [(str(error.details.get("field") or ""), error.message)]
    for field, message in pairs:
        target = _match_field(field, known)
        errors.setdefault(target, message)
    return errors


def _match_field(field: str, known: set[str] | None) -> str:
    if not field:
        return "_form"
    if known is None:
        return field
    candidate = field
    while candidate:
        if candidate in known:
            return candidate
        candidate = candidate.rpartition(".")[0]
    return "_form"
