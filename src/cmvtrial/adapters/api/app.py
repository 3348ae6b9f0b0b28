"""The app factory: one FastAPI app serving the REST API (/api/v1) and the web pages (/).

``create_app(settings)`` opens the database named by the settings (or takes one already open, for
tests), builds the request context (clock, session and lockout policies, login throttle) and wires
routers, pages, error handlers and the request middleware. Nothing is created at import time, so
tests build one app per database and `cmvtrial serve` builds exactly one.

Errors: domain errors become problem+json on /api/… (problems.py) and a page with the message on
the web (web/errors.py); anything else is a bug, answered 500 with a request id (middleware.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from cmvtrial import __version__
from cmvtrial.adapters.api.context import AppContext, utc_now
from cmvtrial.adapters.api.middleware import RequestContextMiddleware, WriteTurns
from cmvtrial.adapters.api.problems import PROBLEM_MEDIA_TYPE, domain_problem, http_problem, validation_problem
from cmvtrial.adapters.api.routers import api_routers
from cmvtrial.config import Settings, load_settings
from cmvtrial.errors import CmvtrialError
from cmvtrial.store.database import Database, open_database

API_PREFIX = "/api/v1"
OPENAPI_URL = f"{API_PREFIX}/openapi.json"

DESCRIPTION = """\
The REST API of cmvtrial, the system that runs the low-dose IL-2 + ganciclovir trial for CMV
viremia in rheumatic disease.

**Signing in.** Scripts send `Authorization: Bearer <token>`; get a token with
`POST /api/v1/auth/token` (user name, password) or on the web page *API tokens*. Browsers sign in
with `POST /api/v1/auth/login`, which sets a session cookie and returns a CSRF token that every
POST and DELETE must carry as the `X-CSRF-Token` header.

**Permissions** follow the user's role and site; the same rules apply to the web pages.

**Errors** are `application/problem+json` with a stable `code` (docs/errors.md), a `detail`, and
`errors[]` naming each offending field. A 500 is a bug; quote its `request_id`.
"""


def is_api_path(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX + "/") or request.url.path == API_PREFIX


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    clock: Callable[[], datetime] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> FastAPI:
    """The cmvtrial web app and API.

    ``settings`` default to the environment (CMVTRIAL_…). ``database`` is an already opened trial
    database (tests); otherwise the one at ``settings.database_url`` is opened now — a missing or
    unmigrated database is refused here with a one-line domain error — and disposed at shutdown.
    ``clock`` (UTC now) and ``monotonic`` (the login throttle's clock) are for tests.
    """
    settings = settings or load_settings()
    owns_database = database is None
    if database is None:
        database = open_database(settings.database_url, settings)
    context = AppContext.build(
        settings, database, clock=clock or utc_now, monotonic=monotonic, owns_database=owns_database
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if context.owns_database:
            context.database.dispose()

    app = FastAPI(
        title="cmvtrial API",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=OPENAPI_URL,
        docs_url=None,  # Swagger UI would load third-party scripts; the schema is the contract
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.cmvtrial = context

    # Each router straight on the app: one router level less to match on every request.
    for router in api_routers():
        app.include_router(router, prefix=API_PREFIX)

    from cmvtrial.adapters.web import install_web

    install_web(app, context)
    _install_error_handlers(app)
    app.add_middleware(WriteTurns, concurrent=settings.server_concurrent_writes)
    app.add_middleware(RequestContextMiddleware)  # outermost: it also answers for what fails inside
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _install_error_handlers(app: FastAPI) -> None:
    from cmvtrial.adapters.web.errors import page_for_domain_error, page_for_http_error

    async def on_domain_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, CmvtrialError)
        if is_api_path(request):
            return domain_problem(request, error)
        return page_for_domain_error(request, error)

    async def on_validation_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        if is_api_path(request):
            return validation_problem(request, error)
        return page_for_http_error(request, 422, "The request could not be read; go back and check the form.")

    async def on_http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        if is_api_path(request):
            return http_problem(request, error)
        return page_for_http_error(request, error.status_code, str(error.detail))

    app.add_exception_handler(CmvtrialError, on_domain_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema, with every error response as application/problem+json only."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if str(status).startswith(("4", "5")) and PROBLEM_MEDIA_TYPE in content:
                    content.pop("application/json", None)
    app.openapi_schema = schema
    return schema
