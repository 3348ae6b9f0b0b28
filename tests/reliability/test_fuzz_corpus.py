"""Replays every input that once broke a fuzzing law (tests/reliability/corpus/*.json): a bug the
fuzzers found stays fixed. Each file says what found it and what was wrong.

Kinds: ``api`` — requests replayed against the app (in-process, on SQLite and PostgreSQL) under the
law of test_api_fuzz.py; ``protocol``, ``screening``, ``form``, ``scenario``, ``fhir`` — texts and objects
replayed through their parser under the law of test_fuzz_inputs.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from api_fuzz_support import FuzzedTrial, check_response, fuzzed_trial_on
from reliability_support import backend_params

from cmvtrial.adapters.interop.fhir_import import read_bundle
from cmvtrial.core.form_entry import validate_form
from cmvtrial.core.protocol_parsing import parse_protocol
from cmvtrial.core.screening_record import screening_record_from_data
from cmvtrial.errors import InvalidInput
from cmvtrial.protocols import load_shipped_protocol
from cmvtrial.simulation.scenario import parse_scenario

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(CORPUS.glob("*.json"))


def entries(kind: str) -> list[Any]:
    found = []
    for path in FILES:
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document.get("found_by") and document.get("bug"), f"{path.name}: say what found it and what broke"
        if document["kind"] == kind:
            found.extend(pytest.param(item, id=f"{path.stem}-{index}") for index, item in
                         enumerate(document.get("requests") or document.get("inputs") or []))
    return found


def test_the_corpus_is_not_empty_and_every_file_is_known():
    assert FILES
    kinds = {json.loads(path.read_text(encoding="utf-8"))["kind"] for path in FILES}
    assert kinds <= {"api", *PARSERS}


@pytest.fixture(scope="module", params=backend_params())
def corpus_trial(request, tmp_path_factory) -> Iterator[FuzzedTrial]:
    with fuzzed_trial_on(request.param, tmp_path_factory.mktemp("corpus")) as trial:
        yield trial


def send(app: Any, method: str, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
            return await client.request(method, path, headers=headers, json=body)

    return anyio.run(call)


@pytest.mark.parametrize("request_", entries("api"))
def test_api_corpus(corpus_trial, request_):
    before = corpus_trial.state()
    token = corpus_trial.tokens[request_.get("as", "admin")]
    response = send(corpus_trial.app, request_["method"], request_["path"], {"Authorization": f"Bearer {token}"},
                    request_.get("json"))
    check_response(corpus_trial, before, response.status_code, response.headers.get("content-type", ""),
                   response.content, f"{request_['method']} {request_['path']}")


PARSERS = {
    "protocol": lambda item: parse_protocol(item["text"], "corpus.yaml"),
    "screening": lambda item: screening_record_from_data(item["data"]),
    "form": lambda item: validate_form(load_shipped_protocol(item["protocol"])[0], item["form"], item["submission"]),
    "scenario": lambda item: parse_scenario(item["text"], "corpus.yaml"),
    "fhir": lambda item: read_bundle(item["text"]),
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_parser_corpus(kind):
    for item in entries(kind):
        try:
            PARSERS[kind](item.values[0])
        except InvalidInput:
            pass
