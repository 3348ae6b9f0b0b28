"""Settings: read once at the edge (CLI callback, app factory) and passed down; core never sees them.

Trial numbers do not belong here; they live in protocol files.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///cmvtrial.db"


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


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit values (e.g. --db) taking precedence."""
    clean = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**clean)  # type: ignore[arg-type]
