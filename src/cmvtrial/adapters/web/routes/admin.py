"""Administration pages: sites and users (lists for reviewers, forms for admins)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.errors import InvalidInput, NotFound, Refused
from cmvtrial.services import accounts, permissions, trial_setup
from cmvtrial.services.permissions import Actor
from cmvtrial.store.tables import ROLES

router = APIRouter(include_in_schema=False)

SITE_FIELDS = {"code", "name", "reason"}
USER_FIELDS = {"username", "password", "role", "site", "full_name", "reason"}


# --- sites ---------------------------------------------------------------------------------


@router.get("/sites")
def sites_page(
    request: Request, actor: PageActor, context: ContextDep, added: Annotated[str | None, Query()] = None
) -> Response:
    notice = f"Site {added} added." if added else ""
    return _sites(request, actor, context, notice=notice)


@router.post("/sites")
def add_site(request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in SITE_FIELDS}
    try:
        site = trial_setup.add_site(
            context.uow(), actor, values["code"], values["name"], reason=values["reason"] or None
        )
    except (InvalidInput, Refused) as error:
        return _sites(request, actor, context, **_refused(error, values, SITE_FIELDS))
    return RedirectResponse(f"/sites?added={site.code}", status_code=303)


def _sites(request: Request, actor: Actor, context: ContextDep, **form: Any) -> Response:
    sites = trial_setup.list_sites(context.uow(), actor)
    return _list_page(
        request, actor, "sites.html", "Sites", sites=sites, can_add=permissions.allowed(actor, "site.add"), **form
    )


# --- users ---------------------------------------------------------------------------------


@router.get("/users")
def users_page(
    request: Request, actor: PageActor, context: ContextDep, added: Annotated[str | None, Query()] = None
) -> Response:
    notice = f"User {added} added." if added else ""
    return _users(request, actor, context, notice=notice)


@router.post("/users")
def add_user(request: Request, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    values = {name: text_field(form, name) for name in USER_FIELDS - {"password"}}
    password = form.get("password")
    try:
        user = accounts.add_user(
            context.uow(), actor, values["username"], password if isinstance(password, str) else "",
            values["role"], values["site"] or None, full_name=values["full_name"] or None,
            reason=values["reason"] or None,
        )
    except (InvalidInput, Refused, NotFound) as error:
        return _users(request, actor, context, **_refused(error, values, USER_FIELDS))
    return RedirectResponse(f"/users?added={user.username}", status_code=303)


def _users(request: Request, actor: Actor, context: ContextDep, **form: Any) -> Response:
    users = accounts.list_users(context.uow(), actor)
    can_add = permissions.allowed(actor, "user.add")
    sites = trial_setup.list_sites(context.uow(), actor) if can_add else []
    return _list_page(
        request, actor, "users.html", "Users", users=users, can_add=can_add, roles=ROLES, sites=sites, **form
    )


# --- shared by both ------------------------------------------------------------------------


def _list_page(
    request: Request,
    actor: Actor,
    template: str,
    title: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
    **page: Any,
) -> Response:
    """A list with its add form: as first shown, with the notice of an add, or with the refused
    form's values and the errors beside their fields."""
    return render(
        request, template, actor=actor, title=title, status=status, values=values or {}, errors=errors or {},
        notice=notice, **page,
    )


def _refused(error: InvalidInput | Refused | NotFound, values: dict[str, str], fields: set[str]) -> dict[str, Any]:
    """The form shown again after a refusal: what was typed, the errors by field, the family's status."""
    return {"values": values, "errors": field_errors(error, fields), "status": family_of(error)[0]}
