"""Administration pages: sites and users (lists for reviewers, forms for admins)."""

from __future__ import annotations

from typing import Annotated

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
        return _sites(
            request, actor, context, values=values, errors=field_errors(error, SITE_FIELDS),
            status=family_of(error)[0],
        )
    return RedirectResponse(f"/sites?added={site.code}", status_code=303)


def _sites(
    request: Request,
    actor: Actor,
    context: ContextDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
) -> Response:
    sites = trial_setup.list_sites(context.uow(), actor)
    return render(
        request, "sites.html", actor=actor, title="Sites", status=status, sites=sites,
        can_add=permissions.allowed(actor, "site.add"), values=values or {}, errors=errors or {}, notice=notice,
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
        return _users(
            request, actor, context, values=values, errors=field_errors(error, USER_FIELDS),
            status=family_of(error)[0],
        )
    return RedirectResponse(f"/users?added={user.username}", status_code=303)


def _users(
    request: Request,
    actor: Actor,
    context: ContextDep,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str = "",
    status: int = 200,
) -> Response:
    users = accounts.list_users(context.uow(), actor)
    can_add = permissions.allowed(actor, "user.add")
    sites = trial_setup.list_sites(context.uow(), actor) if can_add else []
    return render(
        request, "users.html", actor=actor, title="Users", status=status, users=users, can_add=can_add,
        roles=ROLES, sites=sites, values=values or {}, errors=errors or {}, notice=notice,
    )
