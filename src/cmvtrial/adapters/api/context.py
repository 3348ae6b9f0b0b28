"""What every request needs, built once by the app factory: settings, database, clock, policies.

Kept on ``app.state.cmvtrial`` (never a module global), so tests build as many apps as they like,
each on its own database and clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Request

from cmvtrial.adapters.api.auth import LoginThrottle
from cmvtrial.config import Settings
from cmvtrial.services.accounts import Lockout
from cmvtrial.services.sessions import SessionPolicy
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database

if TYPE_CHECKING:
    from starlette.templating import Jinja2Templates


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AppContext:
    settings: Settings
    database: Database
    clock: Callable[[], datetime]
    session_policy: SessionPolicy
    lockout: Lockout
    token_lifetime: timedelta
    login_throttle: LoginThrottle
    templates: Jinja2Templates | None = None
    owns_database: bool = False

    @classmethod
    def build(
        cls,
        settings: Settings,
        database: Database,
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] | None = None,
        owns_database: bool = False,
    ) -> AppContext:
        throttle_options: dict[str, Any] = {"clock": monotonic} if monotonic is not None else {}
        return cls(
            settings=settings,
            database=database,
            clock=clock,
            session_policy=SessionPolicy(
                idle=timedelta(minutes=settings.session_idle_minutes),
                lifetime=timedelta(hours=settings.session_max_hours),
            ),
            lockout=Lockout(
                max_failures=settings.login_max_failures,
                duration=timedelta(minutes=settings.login_lockout_minutes),
            ),
            token_lifetime=timedelta(days=settings.api_token_days),
            login_throttle=LoginThrottle(settings.login_attempts_per_minute, **throttle_options),
            owns_database=owns_database,
        )

    def uow(self) -> UnitOfWork:
        """A fresh unit of work (one per use case; they are cheap)."""
        return UnitOfWork(self.database.session_factory, clock=self.clock)


async def app_context(request: Request) -> AppContext:
    """FastAPI dependency: the context of the app serving ``request``. A coroutine because it only
    reads an attribute: FastAPI runs a plain function dependency in its thread pool, a hop that costs
    more than the work on every request."""
    return request.app.state.cmvtrial  # type: ignore[no-any-return]
