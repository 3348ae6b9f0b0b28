"""The protocol a subject is under, parsed from the exact text the database stored.

Why from the database and not from the shipped file: a subject is enrolled under one protocol
version (DESIGN.md §2 "an amendment is a new protocol version"); the stored text and its SHA-256
are what was approved, whatever the installed package now ships. Parsing a protocol takes tens of
milliseconds, so parsed versions are cached by their SHA-256 (the model is frozen; sharing is safe).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from cmvtrial.errors import DatabaseNotInitialised

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.protocol import Protocol
    from cmvtrial.services.unit_of_work import UnitOfWork
    from cmvtrial.store.tables import ProtocolVersion

_CACHE: dict[str, Protocol] = {}
_CACHE_LOCK = threading.Lock()


def parsed(version: ProtocolVersion) -> Protocol:
    """The protocol model of a stored protocol version (cached by its SHA-256)."""
    with _CACHE_LOCK:
        found = _CACHE.get(version.sha256)
    if found is not None:
        return found
    from cmvtrial.core.protocol_parsing import parse_protocol

    protocol = parse_protocol(version.text, source=f"{version.protocol_id} version {version.version} (stored)")
    with _CACHE_LOCK:
        _CACHE[version.sha256] = protocol
    return protocol


def version_in_force(uow: UnitOfWork) -> ProtocolVersion:
    """The protocol version new subjects are enrolled under (inside an open unit of work)."""
    trial = uow.trial.current()
    if trial is None:
        raise DatabaseNotInitialised("this database has no trial yet; run `cmvtrial init --protocol ID`")
    return uow.protocols.require(trial.protocol_version_id)


def protocol_of_version(uow: UnitOfWork, protocol_version_id: int) -> Protocol:
    """The parsed protocol of a stored version (inside an open unit of work). Only the version's
    SHA-256 is read when it is already parsed: the text is the same whatever the database."""
    from sqlalchemy import select

    from cmvtrial.store.tables import ProtocolVersion

    digest = uow.session.scalar(select(ProtocolVersion.sha256).where(ProtocolVersion.id == protocol_version_id))
    return protocol_with_digest(uow, protocol_version_id, digest)


def protocol_with_digest(uow: UnitOfWork, protocol_version_id: int, digest: str | None) -> Protocol:
    """``protocol_of_version`` for a caller that has read the version's SHA-256 already."""
    if digest is not None:
        with _CACHE_LOCK:
            found = _CACHE.get(digest)
        if found is not None:
            return found
    return parsed(uow.protocols.require(protocol_version_id))
