"""Fuzzing every parser and input path with hypothesis (issue 10): protocol files, screening records,
visit forms, simulation scenarios, FHIR lab bundles, CSV analysis input (the function and
`cmvtrial analyze tte`); backup files are fuzzed in test_backup_restore.py, the API in
test_api_fuzz.py.

The law is the same everywhere: any input is either accepted or refused with a domain error of the
``InvalidInput`` family (exit 2 on the command line) — never a crash. Inputs are random text and,
more usefully, *mutations* of the real shipped files (a key dropped, a value replaced by a random
one, a list emptied), which reach deep into the validators. Any input that once crashed a parser is
kept under tests/reliability/corpus/ and replayed by test_fuzz_corpus.py.

Seeded (derandomized) so that a failure replays; the example counts keep the file to seconds.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import cli

from cmvtrial.adapters.interop.fhir_import import read_bundle
from cmvtrial.analysis.time_to_event import analyze_time_to_event
from cmvtrial.core.form_entry import validate_form
from cmvtrial.core.protocol_parsing import parse_protocol
from cmvtrial.core.screening_record import parse_screening_record, screening_record_from_data
from cmvtrial.errors import CmvtrialError, InvalidInput
from cmvtrial.protocols import load_shipped_protocol, read_shipped_text
from cmvtrial.simulation.scenario import parse_scenario

#: A deeper, unseeded hunt: CMVTRIAL_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/reliability
DEEP = os.environ.get("CMVTRIAL_FUZZ_EXAMPLES")
FUZZ = settings(max_examples=int(DEEP or 60), deadline=None, derandomize=DEEP is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FIXTURES = Path(__file__).parents[1] / "fixtures"
SCENARIOS = Path(__file__).parents[2] / "src" / "cmvtrial" / "simulation" / "scenarios"
PROTOCOL_IDS = ["sle-cmv-il2", "nct04225780"]
PROTOCOLS = {pid: load_shipped_protocol(pid)[0] for pid in PROTOCOL_IDS}
#: Read once: hypothesis replays an example and needs the same starting file every time.
PROTOCOL_TEXTS = {pid: read_shipped_text(pid) for pid in PROTOCOL_IDS}

#: Values a mutation puts in place of a real one.
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "NaN", "1e309", "-0", "mg/dL", "10^9/L", "every other day", "2024-02-30", "{{x}}",
                     "__import__('os')", "a" * 300, "💊", "true", "null", "-1", "0"]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)


def refused_or_accepted(call: Callable[[], object]) -> None:
    """The fuzzing law: accepted, or refused with InvalidInput (which names what is wrong)."""
    try:
        call()
    except InvalidInput as error:
        assert error.message and error.code
    except CmvtrialError as error:  # pragma: no cover - a refusal of the wrong family is a bug too
        raise AssertionError(f"bad input refused as {type(error).__name__}, not InvalidInput: {error}") from error


def mutate(data: Any, draw: Callable[[st.SearchStrategy[Any]], Any], depth: int = 0) -> Any:
    """``data`` with one random change somewhere down a random path."""
    if isinstance(data, dict) and data and depth < 12 and draw(st.integers(0, 4)) > 0:
        key = draw(st.sampled_from(sorted(data, key=str)))
        changed = dict(data)
        action = draw(st.sampled_from(["descend", "descend", "descend", "drop", "rename"]))
        if action == "drop":
            del changed[key]
        elif action == "rename":
            changed[f"{key}_x"] = changed.pop(key)
        else:
            changed[key] = mutate(data[key], draw, depth + 1)
        return changed
    if isinstance(data, list) and data and depth < 12 and draw(st.integers(0, 4)) > 0:
        index = draw(st.integers(0, len(data) - 1))
        changed = list(data)
        action = draw(st.sampled_from(["descend", "descend", "drop", "duplicate", "empty"]))
        if action == "drop":
            del changed[index]
        elif action == "duplicate":
            changed.append(copy.deepcopy(changed[index]))
        elif action == "empty":
            changed = []
        else:
            changed[index] = mutate(data[index], draw, depth + 1)
        return changed
    return draw(VALUES)


# --- protocol files --------------------------------------------------------------------------------


@FUZZ
@given(text=st.text(max_size=400))
def test_fuzz_protocol_text(text):
    refused_or_accepted(lambda: parse_protocol(text, "fuzz.yaml"))


@FUZZ
@given(protocol_id=st.sampled_from(PROTOCOL_IDS), data=st.data())
def test_fuzz_mutated_protocol_files(protocol_id, data):
    original = yaml.safe_load(PROTOCOL_TEXTS[protocol_id])
    mutated = mutate(original, data.draw)
    text = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
    refused_or_accepted(lambda: parse_protocol(text, f"{protocol_id}-mutated.yaml"))


@FUZZ
@given(protocol_id=st.sampled_from(PROTOCOL_IDS), cut=st.integers(0, 10**6), junk=st.text(max_size=30))
def test_fuzz_truncated_and_spliced_protocol_files(protocol_id, cut, junk):
    text = PROTOCOL_TEXTS[protocol_id]
    at = cut % len(text)
    refused_or_accepted(lambda: parse_protocol(text[:at] + junk + text[at + len(junk):], "spliced.yaml"))


# --- screening records -----------------------------------------------------------------------------


@FUZZ
@given(text=st.one_of(st.text(max_size=300), VALUES.map(json.dumps)))
def test_fuzz_screening_record_text(text):
    refused_or_accepted(lambda: parse_screening_record(text, "fuzz.json"))


def _json_or_empty(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}


RECORDS = {path.name: _json_or_empty(path) for path in sorted((FIXTURES / "screening").glob("*.json"))}


@FUZZ
@given(name=st.sampled_from(sorted(RECORDS)), data=st.data())
def test_fuzz_mutated_screening_records(name, data):
    original = RECORDS[name]
    refused_or_accepted(lambda: screening_record_from_data(mutate(original, data.draw)))


# --- visit forms -----------------------------------------------------------------------------------


def submissions(protocol_id: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    protocol = PROTOCOLS[protocol_id]

    def for_form(form_id: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        items = [item.id for item in protocol.form(form_id).items] or ["x"]
        quantity = st.fixed_dictionaries({"value": LEAVES, "unit": LEAVES})
        value = st.one_of(LEAVES, quantity, VALUES)
        keys = st.one_of(st.sampled_from(items), st.text(max_size=10))
        return st.tuples(st.just(form_id), st.dictionaries(keys, value, max_size=len(items) + 2))

    return st.sampled_from([form.id for form in protocol.forms]).flatmap(for_form)


@FUZZ
@given(protocol_id=st.sampled_from(PROTOCOL_IDS), data=st.data())
def test_fuzz_visit_form_submissions(protocol_id, data):
    form_id, submission = data.draw(submissions(protocol_id))
    refused_or_accepted(lambda: validate_form(PROTOCOLS[protocol_id], form_id, submission))


@FUZZ
@given(protocol_id=st.sampled_from(PROTOCOL_IDS), submission=VALUES)
def test_fuzz_visit_form_not_even_an_object(protocol_id, submission):
    form_id = PROTOCOLS[protocol_id].forms[0].id
    refused_or_accepted(lambda: validate_form(PROTOCOLS[protocol_id], form_id, submission))


# --- simulation scenarios --------------------------------------------------------------------------


SCENARIO_FILES = sorted(SCENARIOS.glob("*/*.yaml"))
SCENARIO_TEXTS = {path: path.read_text(encoding="utf-8") for path in SCENARIO_FILES}


def resolver(folder: Path) -> Callable[[str], str]:
    def resolve(name: str) -> str:
        path = folder / f"{name}.yaml"
        if not path.is_file():
            raise InvalidInput(f"no scenario '{name}'", field="extends")
        return path.read_text(encoding="utf-8")

    return resolve


@FUZZ
@given(path=st.sampled_from(SCENARIO_FILES), data=st.data())
def test_fuzz_mutated_scenario_files(path, data):
    mutated = mutate(yaml.safe_load(SCENARIO_TEXTS[path]), data.draw)
    text = yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False)
    refused_or_accepted(lambda: parse_scenario(text, path.name, resolver(path.parent)))


@FUZZ
@given(text=st.text(max_size=300))
def test_fuzz_scenario_text(text):
    refused_or_accepted(lambda: parse_scenario(text, "fuzz.yaml", resolver(SCENARIO_FILES[0].parent)))


# --- FHIR bundles (lab import) ---------------------------------------------------------------------


FHIR_BUNDLES = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted((FIXTURES / "fhir").glob("*.json"))}


@FUZZ
@given(name=st.sampled_from(sorted(FHIR_BUNDLES)), data=st.data())
def test_fuzz_mutated_fhir_bundles(name, data):
    text = json.dumps(mutate(FHIR_BUNDLES[name], data.draw), allow_nan=True)
    refused_or_accepted(lambda: read_bundle(text))


@FUZZ
@given(text=st.one_of(st.text(max_size=300), VALUES.map(lambda v: json.dumps({"resourceType": "Bundle", "entry": v}))))
def test_fuzz_fhir_bundle_text(text):
    refused_or_accepted(lambda: read_bundle(text))


# --- CSV analysis input ----------------------------------------------------------------------------


CELLS = st.one_of(st.sampled_from(["0", "1", "2", "-1", "", "NA", "nan", "inf", "1e400", "a", "il2", "gcv", " ", '"']),
                  st.integers(-5, 400).map(str), st.floats(allow_nan=True).map(repr), st.text(max_size=5))


@st.composite
def csv_texts(draw: Callable[[st.SearchStrategy[Any]], Any]) -> str:
    header = draw(st.lists(st.sampled_from(["time", "event", "arm", "stratum", "other", "time"]), min_size=0, max_size=5))
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=len(header) + 1), max_size=12))
    return "\n".join([",".join(header)] + [",".join(row) for row in rows])


def read(text: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return pd.DataFrame()


@FUZZ
@given(text=csv_texts(), strata=st.sampled_from([None, "stratum", "missing"]), reference=st.sampled_from([None, "il2", "x"]))
def test_fuzz_time_to_event_tables(text, strata, reference):
    frame = read(text)
    refused_or_accepted(lambda: analyze_time_to_event(frame, time="time", event="event", arm="arm", strata=strata,
                                                      reference=reference))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.one_of(csv_texts(), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzz_analyze_tte_command(tmp_path, text):
    path = tmp_path / "input.csv"
    path.write_text(text, encoding="utf-8")
    result = cli("analyze", "tte", str(path), "--time", "time", "--event", "event", "--arm", "arm", "--json")
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.stderr.startswith("error [") and result.stdout == ""
    else:
        json.loads(result.stdout)


def test_the_fuzzed_inputs_include_the_real_files():
    """The mutation fuzzers start from files that are themselves accepted (else they test little)."""
    for protocol_id in PROTOCOL_IDS:
        parse_protocol(read_shipped_text(protocol_id))
    for path in SCENARIO_FILES:
        parse_scenario(path.read_text(encoding="utf-8"), path.name, resolver(path.parent))
    assert screening_record_from_data(json.loads((FIXTURES / "screening" / "eligible.json").read_text(encoding="utf-8")))
    assert all(read_bundle(json.dumps(bundle)) for bundle in FHIR_BUNDLES.values())


@pytest.mark.parametrize("protocol_id", PROTOCOL_IDS)
def test_every_form_accepts_an_empty_submission_or_names_what_is_missing(protocol_id):
    for form in PROTOCOLS[protocol_id].forms:
        refused_or_accepted(lambda form=form: validate_form(PROTOCOLS[protocol_id], form.id, {}))
