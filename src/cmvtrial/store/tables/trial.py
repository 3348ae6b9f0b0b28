"""The trial this database runs, its protocol versions, sites and user accounts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cmvtrial.store.tables.base import ROLES, WITHHELD, Base, UtcDateTime


class Site(Base):
    __tablename__ = "sites"
    __audit_entity__ = "site"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class User(Base):
    """A person with one role, at one site or (site_id NULL) at all sites. Never deleted, only deactivated
    (an account is never re-assigned: 21 CFR 11.100(a), reference/standards.md P11-15)."""

    __tablename__ = "users"
    __audit_entity__ = "user"
    __table_args__ = (CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255), info=WITHHELD)
    role: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_login_count: Mapped[int] = mapped_column(Integer, default=0)
    #: Sign-in refused until then after repeated failures (settings login_max_failures/login_lockout_minutes).
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ProtocolVersion(Base):
    """A protocol file exactly as loaded: its text and SHA-256, so any later reading can be checked."""

    __tablename__ = "protocol_versions"
    __audit_entity__ = "protocol_version"
    __table_args__ = (UniqueConstraint("protocol_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    protocol_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(500))
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    loaded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    loaded_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class Trial(Base):
    """The one trial this database runs (a single row) and the protocol version now in force."""

    __tablename__ = "trial"
    __audit_entity__ = "trial"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_versions.id"))
    initialised_at: Mapped[datetime] = mapped_column(UtcDateTime)
    initialised_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
