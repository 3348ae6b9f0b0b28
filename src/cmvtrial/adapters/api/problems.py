"""Errors as ``application/problem+json`` (RFC 9457): one shape for every refusal the API gives.

Why one shape: a script handles every error the same way — a stable ``code`` to branch on (the
codes of docs/errors.md), a human ``detail``, and ``errors[]`` naming each offending field. The
domain error families map to HTTP statuses through ONE table (``FAMILIES``); a test checks it
agrees with each error class's ``http_status``. A 5xx is a bug: the body carries only a request
id, and the traceback goes to the server log (see middleware.py).

A few codes exist only at the HTTP edge (a route or method that does not exist, a body that is
not valid JSON); they are listed in ``HTTP_ONLY_CODES`` and documented in docs/web-and-api.md.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from cmvtrial.errors import (
    AuditChainBroken,
    AuthenticationFailed,
    CmvtrialError,
    DatabaseError,
    Forbidden,
    InvalidInput,
    NotFound,
    Refused,
    TooManyAttempts,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:cmvtrial:error:"

#: The one mapping table: domain error family -> (HTTP status, title). Most specific first.
FAMILIES: tuple[tuple[type[CmvtrialError], int, str], ...] = (
    (TooManyAttempts, 429, "Too many attempts"),
    (InvalidInput, 422, "Invalid input"),
    (NotFound, 404, "Not found"),
    (Forbidden, 403, "Forbidden"),
    (Refused, 409, "Refused in the current state"),
    (AuthenticationFailed, 401, "Authentication required"),
    (DatabaseError, 503, "Database unavailable"),
    (AuditChainBroken, 500, "Audit trail broken"),
    (CmvtrialError, 500, "Internal error"),
)

#: Codes raised by the HTTP layer itself rather than by a domain error.
HTTP_ONLY_CODES: dict[str, str] = {
    "not_found": "no such route (404)",
    "method_not_allowed": "the route exists but not for this HTTP method (405)",
    "invalid_input": "the request body or parameters do not fit the endpoint's schema (422)",
    "internal_error": "a bug: the response carries a request id; the traceback is in the server log (500)",
}


class FieldProblem(BaseModel):
    """One offending field: a dotted path into the request (``cmv_dna.unit``) and what is wrong."""

    field: str
    message: str


class Problem(BaseModel):
    """An error response (RFC 9457 problem details, with cmvtrial's ``code`` and ``errors``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:cmvtrial:error:invalid_input",
                    "title": "Invalid input",
                    "status": 422,
                    "code": "invalid_input",
                    "detail": "site code 'a' is not valid: 2-16 characters, letters, digits, '-' or '_'",
                    "errors": [{"field": "code", "message": "site code 'a' is not valid"}],
                    "instance": "/api/v1/sites",
                    "request_id": "5f0c2a9e8b7d4c1a9e3f2b6d8a0c4e1f",
                    "details": {"value": "A"},
                }
            ]
        }
    )

    type: str = Field(description="urn:cmvtrial:error:<code>")
    title: str = Field(description="The error family in words.")
    status: int
    code: str = Field(description="Stable snake_case code (docs/errors.md).")
    detail: str = Field(description="What went wrong, for a person.")
    errors: list[FieldProblem] = Field(default_factory=list, description="Each offending field.")
    instance: str | None = Field(None, description="The request path.")
    request_id: str | None = Field(None, description="Quote it when reporting a problem.")
    details: dict[str, Any] = Field(default_factory=dict, description="Further facts (value, limit, retry_after).")


def family_of(error: CmvtrialError) -> tuple[int, str]:
    """(HTTP status, title) for a domain error, from ``FAMILIES``."""
    for family, status, title in FAMILIES:
        if isinstance(error, family):
            return status, title
    raise AssertionError("CmvtrialError closes the table")  # pragma: no cover


def field_errors(error: CmvtrialError) -> list[dict[str, str]]:
    """The fields an error names: every listed problem, or the one ``field`` of its details."""
    problems = error.details.get("problems") or []
    if problems:
        return [
            {
                "field": str(problem.get("location") or problem.get("loc") or problem.get("field") or ""),
                "message": str(problem.get("message", problem)),
            }
            for problem in problems
        ]
    field = error.details.get("field")
    return [{"field": str(field), "message": error.message}] if field else []


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    kept = {key: value for key, value in details.items() if key not in ("problems", "field")}
    return json.loads(json.dumps(kept, default=str))


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def problem_response(
    request: Request,
    *,
    status: int,
    title: str,
    code: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {
        "type": TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "errors": errors or [],
        "instance": request.url.path,
        "request_id": request_id_of(request),
        "details": details or {},
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def domain_problem(request: Request, error: CmvtrialError) -> JSONResponse:
    status, title = family_of(error)
    headers: dict[str, str] = {}
    if isinstance(error, TooManyAttempts) and error.details.get("retry_after"):
        headers["Retry-After"] = str(error.details["retry_after"])
    elif isinstance(error, AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="cmvtrial"'
    return problem_response(
        request,
        status=status,
        title=title,
        code=error.code,
        detail=error.message,
        errors=field_errors(error),
        details=_plain(error.details),
        headers=headers,
    )


def validation_problem(request: Request, error: RequestValidationError) -> JSONResponse:
    """A request that does not fit the schema, with one entry per offending field."""
    errors = []
    for item in error.errors():
        if item.get("type") == "json_invalid":  # its location is a character position, not a field
            position = next((part for part in item.get("loc", ()) if isinstance(part, int)), None)
            reason = (item.get("ctx") or {}).get("error")
            where = f" at character {position}" if position is not None else ""
            errors.append({"field": "body", "message": f"the body is not valid JSON{where}" + (f" ({reason})" if reason else "")})
            continue
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path", "header")]
        errors.append({"field": ".".join(location) or "body", "message": str(item.get("msg", "invalid"))})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return problem_response(
        request,
        status=422,
        title="Invalid input",
        code="invalid_input",
        detail=f"{first['field']}: {first['message']}",
        errors=errors,
    )


def http_problem(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 400:
        # FastAPI's answer to a body it cannot even decode (not UTF-8, say): bad input like any
        # other, so the same 422 every operation documents, not an undocumented 400.
        return problem_response(request, status=422, title="Invalid input", code="invalid_input",
                                detail="body: the request body could not be read as JSON in UTF-8",
                                errors=[{"field": "body", "message": "the request body could not be read as JSON in UTF-8"}])
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(error.status_code, f"http_{error.status_code}")
    detail = {404: f"no API route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    return problem_response(
        request,
        status=error.status_code,
        title=str(error.detail) if error.status_code not in detail else code.replace("_", " ").capitalize(),
        code=code,
        detail=detail.get(error.status_code, str(error.detail)),
        headers=dict(error.headers or {}),
    )


def internal_error_body(request_id: str, path: str) -> dict[str, Any]:
    return {
        "type": TYPE_PREFIX + "internal_error",
        "title": "Internal error",
        "status": 500,
        "code": "internal_error",
        "detail": f"an unexpected error occurred; it was logged with request id {request_id}",
        "errors": [],
        "instance": path,
        "request_id": request_id,
        "details": {},
    }


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status it may refuse with, documented as a Problem."""
    described = {
        400: "Bad request",
        401: "Not signed in, or the credentials are not valid",
        403: "The role or site does not allow it, or the CSRF token is missing",
        404: "Not found",
        409: "Refused in the current state",
        422: "Invalid input; `errors` names each field",
        429: "Too many sign-in attempts; see Retry-After",
        503: "The database cannot serve the request",
    }
    return {
        status: {
            "model": Problem,
            "description": described.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


#: What every authenticated endpoint may answer besides its own refusals.
AUTHENTICATED = (401, 403, 503)
