"""The protocol files shipped with cmvtrial, read as package data (the adapters and services use this)."""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from cmvtrial.errors import InvalidInput, NotFound

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


if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol


@functools.lru_cache(maxsize=8)
def load_shipped_protocol(protocol_id: str) -> tuple[Protocol, str]:
    """A shipped protocol, validated, with its text (the text is what a trial database stores and
    hashes). Cached: the model is frozen, so every caller can share it."""
    from cmvtrial.core.protocol_parsing import parse_protocol

    text = read_shipped_text(protocol_id)
    return parse_protocol(text, source=protocol_id + SUFFIX), text


def load_protocol(reference: str | os.PathLike[str]) -> tuple[Protocol, str]:
    """A protocol from a file path or a shipped id, with its text.

    Why both: `cmvtrial protocol validate` and `init --protocol` take either an author's draft file or
    the id of a shipped protocol. A reference that names an existing file is read as a file; a shipped
    id is looked up next; anything else is NotFound naming both possibilities.
    """
    path = Path(reference)
    if path.is_file():
        from cmvtrial.core.protocol_parsing import parse_protocol

        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidInput(f"cannot read protocol file {path}: {error}", field="protocol", value=str(path)) from None
        return parse_protocol(text, source=str(path)), text
    if str(reference) in shipped_ids():
        return load_shipped_protocol(str(reference))
    raise NotFound(
        f"'{reference}' is neither a protocol file nor a shipped protocol id; "
        f"shipped: {', '.join(shipped_ids()) or 'none'}",
        field="protocol",
        value=str(reference),
    )
