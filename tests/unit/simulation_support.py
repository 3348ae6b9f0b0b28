"""Shared loaders for the simulation tests (plain functions, cached: protocols and scenarios are frozen)."""

from __future__ import annotations

import functools

from cmvtrial.protocols import load_shipped_protocol
from cmvtrial.simulation.design import TrialDesign, design_from_protocol
from cmvtrial.simulation.scenario import Scenario
from cmvtrial.simulation.scenarios import load_shipped_scenario

PROTOCOLS = ("sle-cmv-il2", "nct04225780")


@functools.cache
def scenario(protocol_id: str, name: str = "default") -> Scenario:
    return load_shipped_scenario(protocol_id, name)


@functools.cache
def design(protocol_id: str, name: str = "default") -> TrialDesign:
    protocol, _text = load_shipped_protocol(protocol_id)
    return design_from_protocol(protocol, scenario(protocol_id, name))


def protocol(protocol_id: str):  # noqa: ANN201 - the Protocol model
    return load_shipped_protocol(protocol_id)[0]
