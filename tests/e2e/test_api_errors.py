"""The error contract: every refusal is application/problem+json of one shape, with the status of
its family (one mapping table), a stable code, and errors[] naming the fields; a bug is a 500 with
a request id and nothing else (the traceback goes to the log)."""

from __future__ import annotations

import logging
import os

import pytest
from fastapi import APIRouter
from web_support import web_trial  # noqa: F401

from cmvtrial.adapters.api.problems import FAMILIES, family_of
from cmvtrial.errors import CmvtrialError, ProtocolInvalid, all_error_classes
from cmvtrial.store.tables import Site

PROBLEM_KEYS = {"type", "title", "status", "code", "detail", "errors", "instance", "request_id", "details"}


def assert_problem(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_KEYS
    assert body["status"] == status and body["code"] == code
    assert body["type"] == f"urn:cmvtrial:error:{code}"
    assert body["detail"] and body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    assert all(set(entry) == {"field", "message"} for entry in body["errors"])
    return body


def with_raising_routes(app):
    router = APIRouter(prefix="/api/v1/test-only")

    @router.get("/raise/{code}")
    def raise_error(code: str) -> None:
        cls = next(cls for cls in all_error_classes() if cls.code == code)
        if cls is ProtocolInvalid:
            raise cls("the protocol has problems", problems=[{"location": "arms[0].dose", "message": "must be > 0"}])
        raise cls(f"{code} happened", field="thing", value=3)

    @router.get("/bug")
    def bug() -> None:
        raise RuntimeError("internal secret detail")

    app.include_router(router)
    return app


@pytest.mark.parametrize("error", all_error_classes(), ids=lambda cls: cls.code)
def test_the_mapping_table_agrees_with_each_errors_http_status(error):
    assert family_of(error("x"))[0] == error.http_status


def test_the_table_ends_with_the_base_class():
    assert FAMILIES[-1][0] is CmvtrialError


@pytest.mark.parametrize("error", all_error_classes(), ids=lambda cls: cls.code)
def test_every_domain_error_has_the_problem_shape(web_trial, error):
    client = with_raising_routes(web_trial.app) and web_trial.client()
    body = assert_problem(client.get(f"/api/v1/test-only/raise/{error.code}"), error.http_status, error.code)
    assert body["instance"] == f"/api/v1/test-only/raise/{error.code}"
    if error is ProtocolInvalid:
        assert body["errors"] == [{"field": "arms[0].dose", "message": "must be > 0"}]
    else:
        assert body["errors"] == [{"field": "thing", "message": f"{error.code} happened"}]
        assert body["details"] == {"value": 3}


def test_a_bug_is_a_500_with_a_request_id_and_the_traceback_only_in_the_log(web_trial, caplog):
    client = with_raising_routes(web_trial.app) and web_trial.client()
    with caplog.at_level(logging.ERROR, logger="cmvtrial.web"):
        response = client.get("/api/v1/test-only/bug")
    body = assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "Traceback" not in response.text
    assert body["request_id"] in body["detail"]
    logged = [record for record in caplog.records if body["request_id"] in record.getMessage()]
    assert logged and logged[0].exc_info and "internal secret detail" in str(logged[0].exc_info[1])
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_bug_on_a_page_is_a_page_with_the_request_id(web_trial):
    router = APIRouter()

    @router.get("/test-only-page")
    def page() -> None:
        raise RuntimeError("page secret")

    web_trial.app.include_router(router)
    response = web_trial.client().get("/test-only-page")
    assert response.status_code == 500 and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-request-id"] in response.text and "page secret" not in response.text


def test_invalid_input_names_the_field(web_trial):
    client = web_trial.client()
    body = assert_problem(
        client.post("/api/v1/sites", json={"code": "!", "name": "X"}, headers=web_trial.bearer("admin")),
        422, "invalid_input",
    )
    assert body["errors"][0]["field"] == "code"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Site C"}, "code"),
        ({"code": "SITEC", "name": "Site C", "colour": "red"}, "colour"),
        ({"code": ["SITEC"], "name": "Site C"}, "code"),
    ],
    ids=["missing", "unknown", "wrong-type"],
)
def test_a_body_that_does_not_fit_the_schema_names_each_field(web_trial, payload, field):
    client, admin = web_trial.client(), web_trial.bearer("admin")
    sites, events = web_trial.count(Site), web_trial.audit_count()
    body = assert_problem(client.post("/api/v1/sites", json=payload, headers=admin), 422, "invalid_input")
    assert field in [entry["field"] for entry in body["errors"]]
    assert (web_trial.count(Site), web_trial.audit_count()) == (sites, events)


def test_malformed_json_is_invalid_input(web_trial):
    client = web_trial.client()
    headers = {**web_trial.bearer("admin"), "content-type": "application/json"}
    body = assert_problem(client.post("/api/v1/sites", content=b'{"code": "SITEC",', headers=headers), 422, "invalid_input")
    assert body["errors"][0]["field"] == "body"
    assert body["errors"][0]["message"].startswith("the body is not valid JSON at character ")


@pytest.mark.parametrize("content", [b'{"code": "\xff", "name": "X"}', b'\xc3\x28'], ids=["invalid-utf8", "truncated-utf8"])
def test_a_body_that_cannot_be_decoded_is_the_documented_422_and_changes_nothing(web_trial, content):
    """FastAPI answers 400 for a body it cannot decode; every operation documents 422 for bad input."""
    client = web_trial.client()
    headers = {**web_trial.bearer("admin"), "content-type": "application/json"}
    sites, events = web_trial.count(Site), web_trial.audit_count()
    body = assert_problem(client.post("/api/v1/sites", content=content, headers=headers), 422, "invalid_input")
    assert body["errors"] == [{"field": "body", "message": "the request body could not be read as JSON in UTF-8"}]
    assert (web_trial.count(Site), web_trial.audit_count()) == (sites, events)


def test_not_found_forbidden_and_refused_from_real_services(web_trial):
    client = web_trial.client()
    admin, coordinator = web_trial.bearer("admin"), web_trial.bearer("coord-a")
    assert_problem(client.delete("/api/v1/tokens/999", headers=admin), 404, "not_found")
    body = assert_problem(client.post("/api/v1/sites", json={"code": "SITEC", "name": "C"}, headers=coordinator), 403, "forbidden")
    assert body["details"]["action"] == "site.add"
    body = assert_problem(client.post("/api/v1/sites", json={"code": "SITEA", "name": "A"}, headers=admin), 409, "already_exists")
    assert body["errors"] == [{"field": "code", "message": "site 'SITEA' already exists"}]
    user = {"username": "new.person", "password": "a-long-enough-password", "role": "coordinator", "site_code": "NOPE"}
    assert_problem(client.post("/api/v1/users", json=user, headers=admin), 404, "not_found")


def test_unknown_routes_and_methods(web_trial):
    client = web_trial.client()
    assert_problem(client.get("/api/v1/no-such-thing"), 404, "not_found")
    assert_problem(client.request("PUT", "/api/v1/sites"), 405, "method_not_allowed")


def test_an_unusable_database_is_a_503_not_a_bug(web_trial):
    client = web_trial.client()
    headers = web_trial.bearer("admin")
    web_trial.database.engine.dispose()
    path = web_trial.database.engine.url.database
    os.replace(path, path + ".moved")
    try:
        body = assert_problem(client.get("/api/v1/sites", headers=headers), 503, "database_not_initialised")
        assert "cmvtrial init" in body["detail"]
    finally:
        web_trial.database.engine.dispose()
        os.replace(path + ".moved", path)


def test_the_codes_of_the_http_layer_are_documented():
    from pathlib import Path

    from cmvtrial.adapters.api.problems import HTTP_ONLY_CODES

    text = (Path(__file__).resolve().parents[2] / "docs" / "web-and-api.md").read_text(encoding="utf-8")
    assert all(f"`{code}`" in text for code in HTTP_ONLY_CODES)
