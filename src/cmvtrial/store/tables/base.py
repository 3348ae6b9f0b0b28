"""What every table shares: the declarative base with its constraint naming, the UTC time type, and
the roles and audit markers the columns refer to."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator


#: The roles of DESIGN.md §3 step 1; the services' permission table is keyed by these.
ROLES: tuple[str, ...] = ("admin", "investigator", "coordinator", "monitor", "data-manager", "statistician")

#: Column ``info`` marker: the value never goes into the audit trail (an Argon2 hash, a secret seed).
WITHHELD = {"audit": "withheld"}
#: Column ``info`` marker: bookkeeping of the database rather than data of the trial (a row's version
#: counter); the audit trail leaves it out like a withheld value.
BOOKKEEPING = {"audit": "withheld"}

# Explicit constraint names so migrations can drop what they create on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite has no time zones; it stores UTC naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("refusing a naive datetime: store times in UTC with a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)

    #: How the audit trail names this kind of entity (``entity_type``).
    __audit_entity__: str = ""
