"""The dashboard."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.web.dashboard import PENDING, load_panels
from cmvtrial.adapters.web.rendering import render
from cmvtrial.adapters.web.routes.deps import PageActor

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard(request: Request, actor: PageActor, context: ContextDep) -> Response:
    return render(
        request, "dashboard.html", actor=actor, title="Dashboard",
        panels=load_panels(context, actor), pending=PENDING,
    )
