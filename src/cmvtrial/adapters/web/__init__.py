"""The web pages: server-rendered Jinja2, plain CSS, one small hand-written script, no build step.

``install_web(app, context)`` adds the template engine, the static files and the page routes to
the app built by ``cmvtrial.adapters.api.app.create_app``. Pages call the same services as the API,
so both enforce the same permissions; a page only parses a form, calls one service and renders.
To add a page, see docs/web-and-api.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from cmvtrial.adapters.api.context import AppContext

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


def install_web(app: FastAPI, context: AppContext) -> None:
    from fastapi.staticfiles import StaticFiles

    from cmvtrial.adapters.web.rendering import make_templates
    from cmvtrial.adapters.web.routes import web_routers

    context.templates = make_templates(TEMPLATES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in web_routers():
        app.include_router(router)
