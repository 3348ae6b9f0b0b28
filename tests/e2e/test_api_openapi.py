"""The OpenAPI schema is the API's contract: it loads, documents every error as problem+json,
shows examples, and every response carries the security headers."""

from __future__ import annotations

import json

from web_support import web_trial  # noqa: F401

from cmvtrial.adapters.api.middleware import SECURITY_HEADERS

PUBLIC = {("post", "/api/v1/auth/login"), ("post", "/api/v1/auth/token"), ("get", "/api/v1/health")}


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_the_schema_loads_and_lists_every_service(web_trial):
    response = web_trial.client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.") and schema["info"]["title"] == "cmvtrial API"
    assert {"/api/v1/sites", "/api/v1/users", "/api/v1/trial", "/api/v1/protocol", "/api/v1/audit/events",
            "/api/v1/audit/verification", "/api/v1/eligibility/check", "/api/v1/ctcae/grade", "/api/v1/tokens",
            "/api/v1/auth/login", "/api/v1/auth/token"} <= set(schema["paths"])
    assert all(path.startswith("/api/v1/") for path in schema["paths"])  # pages stay out of the API schema


def test_every_error_response_is_a_documented_problem(web_trial):
    schema = web_trial.client().get("/api/v1/openapi.json").json()
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in json.dumps(schema["paths"])
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
        if (method, path) not in PUBLIC:
            assert {"401", "403"} <= set(responses), (method, path)
        if operation.get("parameters") or operation.get("requestBody"):
            assert "422" in responses, (method, path)


def test_request_and_response_bodies_show_examples(web_trial):
    schema = web_trial.client().get("/api/v1/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("SiteIn", "UserIn", "LoginRequest", "GradeIn", "SiteOut", "Problem", "EligibilityOut"):
        assert components[name].get("examples"), name
    body = schema["paths"]["/api/v1/eligibility/check"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"].get("examples") or body.get("examples")


def test_every_response_carries_the_security_headers(web_trial):
    client = web_trial.client()
    for path in ("/api/v1/health", "/api/v1/trial", "/login", "/", "/static/app.css", "/api/v1/nothing-here"):
        response = client.get(path)
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value, (path, name)
        assert response.headers["x-request-id"]
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert client.get("/api/v1/health").headers["cache-control"] == "no-store"
    assert client.get("/static/app.js").headers.get("cache-control") != "no-store"


def test_no_interactive_docs_that_would_load_third_party_scripts(web_trial):
    client = web_trial.client()
    assert client.get("/docs").status_code == 404
    assert client.get("/api/v1/docs").status_code == 404
