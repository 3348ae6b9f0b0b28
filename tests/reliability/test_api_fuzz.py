"""Schemathesis against the REST API's own OpenAPI schema (/api/v1/openapi.json), in-process (issue 10).

Every operation the schema lists is called with generated requests — valid ones and, in negative
mode, requests that break the schema — by an administrator or by site staff (bearer tokens). The
law (api_fuzz_support.check_response):

- no 5xx, ever (a 5xx is a bug: STYLE.md "Errors");
- a refused request (4xx) changes nothing: every table's row count is the same afterwards and the
  audit trail grew by nothing but the record of a failed sign-in (which must be audited: E6-04);
- every error is application/problem+json with a ``code``.

On SQLite and, when CMVTRIAL_TEST_PG_URL is set, PostgreSQL. Derandomized, so a failure replays; a
request that once broke the law is kept in tests/reliability/corpus/ (test_fuzz_corpus.py).
CMVTRIAL_FUZZ_EXAMPLES raises the number of requests per operation for a deeper hunt.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator

import pytest
import schemathesis
from api_fuzz_support import ROLES, FuzzedTrial, check_response, fuzzed_trial_on
from hypothesis import HealthCheck, settings
from reliability_support import backend_params
from schemathesis import GenerationMode
from sqlalchemy import create_engine

from cmvtrial.adapters.api.app import OPENAPI_URL, create_app
from cmvtrial.config import Settings
from cmvtrial.store.database import Database, make_session_factory

DEEP = os.environ.get("CMVTRIAL_FUZZ_EXAMPLES")
EXAMPLES = int(DEEP or 10)


@pytest.fixture(scope="module", params=backend_params())
def fuzzed_trial(request, tmp_path_factory) -> Iterator[FuzzedTrial]:
    with fuzzed_trial_on(request.param, tmp_path_factory.mktemp("api-fuzz")) as trial:
        yield trial


def _schema() -> schemathesis.BaseSchema:
    """The schema the app serves, loaded once at collection from an app on an unused in-memory
    database (the schema does not depend on the data); each test calls its own app."""
    engine = create_engine("sqlite://")
    app = create_app(Settings(), database=Database(engine=engine, session_factory=make_session_factory(engine)))
    loaded = schemathesis.openapi.from_asgi(OPENAPI_URL, app)
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    engine.dispose()
    return loaded


schema = _schema()


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DEEP is None, suppress_health_check=list(HealthCheck))
def test_no_endpoint_crashes_or_half_writes_on_generated_requests(case, fuzzed_trial):
    # Alternate the caller by request (stable across runs): an admin and site staff reach other code.
    username = ROLES[zlib.crc32(repr((case.method, case.path_parameters, case.query, case.body)).encode()) % len(ROLES)]
    before = fuzzed_trial.state()
    response = case.call(app=fuzzed_trial.app, headers={"Authorization": f"Bearer {fuzzed_trial.tokens[username]}"})
    content_type = {name.lower(): values for name, values in response.headers.items()}.get("content-type", [""])[0]
    check_response(fuzzed_trial, before, response.status_code, content_type, response.content,
                   f"{case.method} {case.formatted_path} as {username}")
    if response.status_code == 401 or (case.method == "DELETE" and case.formatted_path.startswith("/api/v1/tokens")):
        fuzzed_trial.fresh_token(username)  # the fuzzer may revoke the token it uses; carry on with a new one
