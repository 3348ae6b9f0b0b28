"""The scenario files shipped with cmvtrial: ``<protocol-id>/<name>.yaml``, read as package data.

Reading lives here, beside the files (as for the protocols); parsing and validation live in
:mod:`cmvtrial.simulation.scenario`.
"""

from __future__ import annotations

from importlib import resources

from cmvtrial.errors import NotFound
from cmvtrial.simulation.scenario import Scenario, parse_scenario

SUFFIX = ".yaml"


def _folder(protocol_id: str):  # noqa: ANN202 - an importlib Traversable
    return resources.files(__name__).joinpath(protocol_id)


def protocols_with_scenarios() -> list[str]:
    """Protocol ids that have a scenario folder, sorted."""
    return sorted(
        entry.name
        for entry in resources.files(__name__).iterdir()
        if entry.is_dir() and any(child.name.endswith(SUFFIX) for child in entry.iterdir())
    )


def shipped_names(protocol_id: str) -> list[str]:
    """The scenario names shipped for a protocol, sorted (empty if it has none)."""
    folder = _folder(protocol_id)
    if not folder.is_dir():
        return []
    return sorted(entry.name[: -len(SUFFIX)] for entry in folder.iterdir() if entry.name.endswith(SUFFIX))


def read_shipped_text(protocol_id: str, name: str) -> str:
    """The YAML text of a shipped scenario; NotFound names the ones that exist."""
    names = shipped_names(protocol_id)
    if name not in names:
        if not names:
            raise NotFound(
                f"no scenarios are shipped for protocol '{protocol_id}'; "
                f"protocols with scenarios: {', '.join(protocols_with_scenarios()) or 'none'}",
                field="protocol",
                value=protocol_id,
            )
        raise NotFound(
            f"no scenario '{name}' for protocol '{protocol_id}'; known: {', '.join(names)}",
            field="scenario",
            value=name,
        )
    return _folder(protocol_id).joinpath(name + SUFFIX).read_text(encoding="utf-8")


def load_shipped_scenario(protocol_id: str, name: str) -> Scenario:
    """A shipped scenario, validated, with its ``extends`` resolved in the same folder."""
    return parse_scenario(
        read_shipped_text(protocol_id, name),
        source=f"{protocol_id}/{name}{SUFFIX}",
        resolve=lambda base: read_shipped_text(protocol_id, base),
    )
