"""Settings: read once at the edge (CLI callback, app factory) and passed down; core never sees them.

Trial numbers do not belong here; they live in protocol files.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///cmvtrial.db"
#: The shortest CMVTRIAL_SECRET_KEY accepted.
MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseSettings):
    """Everything an operator can set, each from an environment variable prefixed ``CMVTRIAL_``."""

    model_config = SettingsConfigDict(env_prefix="CMVTRIAL_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the trial database. The default is an SQLite file "
        "`cmvtrial.db` in the working folder; use postgresql+psycopg://… in production.",
    )
    admin_password: SecretStr | None = Field(
        default=None,
        description="Password of the first administrator created by `cmvtrial init`. "
        "When unset, init asks for it at the terminal.",
    )
    admin_username: str = Field(
        default="admin",
        description="User name of the first administrator created by `cmvtrial init`.",
    )
    sqlite_busy_timeout_ms: int = Field(
        default=5000,
        ge=0,
        description="How long an SQLite writer waits for a lock before giving up (milliseconds).",
    )
    server_concurrent_writes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Write requests (POST, PUT, PATCH, DELETE) one server process works on at once; the others "
                    "wait their turn in arrival order. The database takes one writer at a time anyway, and more "
                    "threads of one process would only compete for Python's interpreter lock: spread load over "
                    "processes with `cmvtrial serve --workers N` instead.",
    )
    session_idle_minutes: int = Field(
        default=30,
        ge=1,
        description="A web session ends after this many minutes without a request; the user signs in again.",
    )
    session_max_hours: int = Field(
        default=12,
        ge=1,
        description="A web session ends this many hours after sign-in, however active (absolute lifetime).",
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed sign-ins after which an account is locked for login_lockout_minutes.",
    )
    login_lockout_minutes: int = Field(
        default=15,
        ge=1,
        description="How long an account stays locked after login_max_failures failed sign-ins.",
    )
    login_attempts_per_minute: int = Field(
        default=20,
        ge=1,
        description="Sign-in attempts the web app and API accept from one client address per minute "
        "(rate limit against password guessing across accounts); more are refused with HTTP 429.",
    )
    api_token_days: int = Field(
        default=90,
        ge=1,
        description="Lifetime of a new API bearer token in days; the user makes a new one when it expires.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key (at least 32 characters) that seals the randomization seed at rest and keys "
        "subject pseudonyms in exports. Unset means the published development key, accepted only for "
        "local use (an SQLite database, serve on loopback); PostgreSQL and serve beyond loopback refuse it. "
        "Keep it outside the database and its backups: without it the seed cannot be read.",
    )

    @field_validator("secret_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # 32 characters of a random token carry well over 128 bits; a short word would not.
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_KEY_LENGTH} characters (a random token, not a word)")
        return value


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit values (e.g. --db) taking precedence."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**clean)  # type: ignore[arg-type]
