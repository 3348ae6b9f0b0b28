"""Reference tables shipped with cmvtrial as package data (CTCAE v5.0 today).

Why a package of its own: the tables are facts published by others (NCI, MedDRA, LOINC), not a trial's
choices, so they do not belong in a protocol file; and they are data, not code, so a reviewer can check
each number against its source without reading Python. This module only reads the files; the models
that validate them and the engines that use them live in ``cmvtrial.core``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from cmvtrial.errors import InvalidInput, NotFound

CTCAE_V5 = "ctcae_v5.yaml"


def shipped_names() -> list[str]:
    """File names of the shipped reference tables, sorted."""
    return sorted(e.name for e in resources.files(__name__).iterdir() if e.name.endswith(".yaml"))


def read_text(name: str) -> str:
    """The text of one shipped table; NotFound names the ones that exist."""
    if name not in shipped_names():
        raise NotFound(
            f"no shipped reference table '{name}'; known: {', '.join(shipped_names())}",
            field="name",
            value=name,
        )
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load_mapping(name: str) -> dict[str, Any]:
    """One shipped table parsed from YAML into plain data (not yet validated)."""
    import yaml

    try:
        data = yaml.safe_load(read_text(name))
    except yaml.YAMLError as error:  # a broken shipped file is a packaging bug; say where
        raise InvalidInput(f"reference table {name} is not valid YAML: {error}", field="name") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"reference table {name} must be a mapping at the top", field="name")
    return data


@functools.lru_cache(maxsize=1)
def ctcae_v5_mapping() -> dict[str, Any]:
    """The CTCAE v5.0 table as plain data, read once per process."""
    return load_mapping(CTCAE_V5)
