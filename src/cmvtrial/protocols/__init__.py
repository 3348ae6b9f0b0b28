"""The protocol files shipped with cmvtrial, read as package data (the adapters and services use this)."""

from __future__ import annotations

from importlib import resources

from cmvtrial.errors import NotFound

SUFFIX = ".yaml"


def shipped_ids() -> list[str]:
    """Ids of the shipped protocol files, sorted."""
    folder = resources.files(__name__)
    return sorted(
        entry.name[: -len(SUFFIX)] for entry in folder.iterdir() if entry.name.endswith(SUFFIX)
    )


def read_shipped_text(protocol_id: str) -> str:
    """The YAML text of a shipped protocol; NotFound names the ones that exist."""
    if protocol_id not in shipped_ids():
        raise NotFound(
            f"no shipped protocol '{protocol_id}'; known: {', '.join(shipped_ids()) or 'none'}",
            field="protocol",
            value=protocol_id,
        )
    return resources.files(__name__).joinpath(protocol_id + SUFFIX).read_text(encoding="utf-8")
