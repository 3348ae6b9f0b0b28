"""Web sessions and API tokens: only hashes of their secrets are stored."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cmvtrial.store.tables.base import WITHHELD, Base, UtcDateTime


class WebSession(Base):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored, so a copy
    of the database cannot be replayed as a session. A session ends at its absolute expiry, after a
    period without requests (checked against ``last_seen_at``), at logout, or when a new sign-in in
    the same browser rotates it (end_reason: logout | rotated | expired | deactivated)."""

    __tablename__ = "web_sessions"
    __audit_entity__ = "web_session"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, info=WITHHELD)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    end_reason: Mapped[str | None] = mapped_column(String(32))


class ApiToken(Base):
    """A bearer token a user made for a script. Shown once at creation; stored as its SHA-256 (the
    token is 256 random bits, so a fast hash suffices) with a short prefix to tell tokens apart."""

    __tablename__ = "api_tokens"
    __audit_entity__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True, info=WITHHELD)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
