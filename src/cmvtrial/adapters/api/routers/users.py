"""User accounts: list and create (passwords are never returned)."""

from __future__ import annotations

from fastapi import APIRouter

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.schemas import UserIn, UserOut
from cmvtrial.services import accounts

router = APIRouter(tags=["users"])


@router.get("/users", response_model=list[UserOut], responses=problem_responses(*AUTHENTICATED))
def list_users(actor: ActorDep, context: ContextDep) -> list[UserOut]:
    """The accounts you may review (your site's, or all for sponsor staff)."""
    return [UserOut.model_validate(user, from_attributes=True) for user in accounts.list_users(context.uow(), actor)]


@router.post(
    "/users", status_code=201, response_model=UserOut, responses=problem_responses(*AUTHENTICATED, 404, 409, 422)
)
def add_user(body: UserIn, actor: ActorDep, context: ContextDep) -> UserOut:
    """Create an account with one role, at one site or at all (admins)."""
    user = accounts.add_user(
        context.uow(), actor, body.username, body.password, body.role, body.site_code,
        full_name=body.full_name, reason=body.reason,
    )
    return UserOut.model_validate(user, from_attributes=True)
