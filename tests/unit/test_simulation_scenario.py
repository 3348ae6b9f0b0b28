"""Scenario files: the shipped ones load, every number carries a source, bad files are refused
with every problem listed, and the code holds none of the trial's numbers."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from cmvtrial.errors import InvalidInput, NotFound, ScenarioInvalid
from cmvtrial.simulation import distributions
from cmvtrial.simulation import scenario as model
from cmvtrial.simulation.design import design_from_protocol
from cmvtrial.simulation.scenarios import load_shipped_scenario, read_shipped_text, shipped_names
from simulation_support import PROTOCOLS, protocol

SIMULATION = Path(model.__file__).parent


def default_data(protocol_id: str = "sle-cmv-il2") -> dict:
    return yaml.safe_load(read_shipped_text(protocol_id, "default"))


def parse(data: dict) -> model.Scenario:
    return model.parse_scenario(yaml.safe_dump(data), "test.yaml")


@pytest.mark.parametrize("protocol_id", PROTOCOLS)
def test_default_and_null_ship_for_every_protocol(protocol_id):
    assert {"default", "null"} <= set(shipped_names(protocol_id))
    default = load_shipped_scenario(protocol_id, "default")
    null = load_shipped_scenario(protocol_id, "null")
    assert default.protocol == null.protocol == protocol_id
    assert null.kinetics.nk.share_of_infected_cell_loss.value == 0
    assert set(null.null_endpoints) == {"viremia_duration", "cmv_decline"}
    # null inherits everything else from default
    assert null.population == default.population and null.gcv_toxicity == default.gcv_toxicity
    design_from_protocol(protocol(protocol_id), default)  # names arms and visits the protocol has


def _sources(node: object, path: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, BaseModel):
        if "source" in type(node).model_fields:
            found.append((path, node.source))  # type: ignore[attr-defined]
        for name in type(node).model_fields:
            found += _sources(getattr(node, name), f"{path}.{name}")
    elif isinstance(node, dict):
        for key, value in node.items():
            found += _sources(value, f"{path}.{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            found += _sources(value, f"{path}[{index}]")
    return found


@pytest.mark.parametrize("protocol_id", PROTOCOLS)
def test_every_number_has_a_source(protocol_id):
    scenario = load_shipped_scenario(protocol_id, "default")
    sources = _sources(scenario)
    assert len(sources) > 100
    for path, source in sources:
        assert source.strip(), path
        assert "ASSUMPTION" in source or any(mark in source for mark in ("domain.md", "seed", "protocol", "null")), (path, source)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["kinetics"].update(unknown_rate={"value": 1, "source": "x"}), "kinetics.unknown_rate"),
        (lambda d: d["dropout"]["weekly_hazard"].update(value=1.5), "dropout.weekly_hazard.value"),
        (lambda d: d["population"]["female"].pop("source"), "population.female.source"),
        (lambda d: d["population"]["diagnosis"]["probabilities"].update(SLE=0.7), "population.diagnosis"),
        (lambda d: d["kinetics"]["gcv_efficacy"].update(dist="weibull"), "kinetics.gcv_efficacy"),
        (lambda d: d["population"]["age_years"].update(low=80, high=18), "population.age_years"),
        (lambda d: d["calibration"]["event_rates"][0].update(event="nosebleed"), "(top)"),
        (lambda d: d["screening"]["failures"][0].update(overrides={"shoe_size": {"dist": "constant", "value": 1, "source": "x"}}),
         "screening.failures.0"),
    ],
    ids=["unknown-field", "probability-above-1", "missing-source", "probabilities-not-summing", "unknown-distribution",
         "bounds-reversed", "unknown-calibration-event", "unknown-override"],
)
def test_bad_scenarios_are_refused_with_their_location(change, where):
    data = default_data()
    change(data)
    with pytest.raises(ScenarioInvalid) as raised:
        parse(data)
    locations = [problem["location"] for problem in raised.value.problems]
    assert any(location.startswith(where) for location in locations), locations
    assert raised.value.exit_code == 2


def test_every_problem_is_listed_at_once():
    data = default_data()
    data["dropout"]["weekly_hazard"]["value"] = -1
    data["assay"]["noise_sd_log10"].pop("source")
    with pytest.raises(ScenarioInvalid) as raised:
        parse(data)
    assert len(raised.value.problems) == 2


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ScenarioInvalid) as raised:
        model.parse_scenario("name: [unclosed\n", "broken.yaml")
    assert raised.value.problems[0]["location"].startswith("broken.yaml:")


def test_extends_must_resolve_and_not_loop():
    with pytest.raises(ScenarioInvalid, match="cannot be looked up"):
        model.parse_scenario("extends: default\nname: x\n", "x.yaml")

    def resolve(name: str) -> str:
        if name == "a":
            return "name: a\nextends: b\n"
        if name == "b":
            return "name: b\nextends: a\n"
        raise NotFound(f"no scenario '{name}'")

    with pytest.raises(ScenarioInvalid, match="extends itself"):
        model.parse_scenario("name: c\nextends: a\n", "c.yaml", resolve)
    with pytest.raises(ScenarioInvalid, match="no scenario 'zzz'"):
        model.parse_scenario("name: c\nextends: zzz\n", "c.yaml", resolve)


def test_unknown_scenario_and_protocol_are_not_found():
    with pytest.raises(NotFound, match="known: default, null"):
        load_shipped_scenario("sle-cmv-il2", "optimistic")
    with pytest.raises(NotFound, match="no scenarios are shipped"):
        load_shipped_scenario("no-such-protocol", "default")


def test_scenario_for_another_protocol_or_arm_is_refused():
    scenario = load_shipped_scenario("nct04225780", "default")
    with pytest.raises(InvalidInput, match="written for protocol 'nct04225780'"):
        design_from_protocol(protocol("sle-cmv-il2"), scenario)
    data = default_data()
    data["arms"]["il2"] = "il2_only"
    with pytest.raises(InvalidInput, match="does not have"):
        design_from_protocol(protocol("sle-cmv-il2"), parse(data))
    data = default_data()
    data["visit_codes"]["week12"] = "W13"
    with pytest.raises(InvalidInput, match="W13"):
        design_from_protocol(protocol("sle-cmv-il2"), parse(data))


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(-5, 5),
    sd=st.floats(0.01, 3),
    low_z=st.floats(-3, 1),
    width=st.floats(0.05, 4),
    seed=st.integers(0, 1000),
)
def test_truncated_normal_stays_in_bounds(mean, sd, low_z, width, seed):
    low = mean + low_z * sd
    high = low + width * sd
    draws = distributions.Normal(dist="normal", mean=mean, sd=sd, low=low, high=high, source="test").sample(
        np.random.default_rng(seed), 500
    )
    assert draws.min() >= low - 1e-9 and draws.max() <= high + 1e-9


def test_distributions_have_their_stated_centre():
    rng = np.random.default_rng(3)
    assert np.median(distributions.LogNormal(dist="lognormal", median=54, sigma=0.15, source="test").sample(rng, 20000)) == pytest.approx(54, rel=0.01)
    assert np.median(distributions.LogitNormal(dist="logitnormal", median=0.915, sigma=0.3, source="test").sample(rng, 20000)) == pytest.approx(0.915, abs=0.003)
    gamma = distributions.Gamma(dist="gamma", mean=10, sd=3.5, source="test").sample(rng, 20000)
    assert gamma.mean() == pytest.approx(10, rel=0.02) and gamma.std() == pytest.approx(3.5, rel=0.03)
    categorical = distributions.Categorical(probabilities={"a": 0.2, "b": 0.8}, source="test").sample(rng, 20000)
    assert np.mean(categorical == "a") == pytest.approx(0.2, abs=0.01)


# Numbers of the trial and its references that must live in scenario or protocol files, never in code.
_TRIAL_NUMBERS = {0.915, 0.62, 0.85, 72, 140, 88.4, 137, 1.1, 0.44, 0.31, 0.138, 0.103, 0.22, 84, 1000, 1.69, 4.3, 0.7, 14, 21}


def test_no_trial_number_in_simulation_code():
    found = []
    for path in sorted(SIMULATION.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in _TRIAL_NUMBERS:
                found.append(f"{path.name}:{node.lineno} {node.value}")
    assert found == []
