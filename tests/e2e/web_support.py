"""A trial behind the web app for the API, page and browser tests: two sites, one user per role.

``AsgiClient`` is a synchronous httpx client that calls the ASGI app in-process (no server, no
socket), through an anyio blocking portal — what Starlette's TestClient does, without its
deprecated httpx coupling. The clock (``Clock``) and the login throttle's clock (``Ticker``) are
fakes the tests move forward; everything else is real: services, SQLite, Argon2 (cheap in tests).

Test modules import the fixture they use: ``from web_support import web_trial  # noqa: F401``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from sqlalchemy import func, select

from cmvtrial.adapters.api.app import create_app
from cmvtrial.config import load_settings
from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database, open_database
from cmvtrial.store.tables import AuditEvent, Base

PASSWORD = "a-long-enough-password"
PROTOCOL = "sle-cmv-il2"
#: user name -> (role, site code or None)
USERS: dict[str, tuple[str, str | None]] = {
    "coord-a": ("coordinator", "SITEA"),
    "inv-a": ("investigator", "SITEA"),
    "mon-a": ("monitor", "SITEA"),
    "coord-b": ("coordinator", "SITEB"),
    "dm": ("data-manager", None),
    "stat": ("statistician", None),
}
CLIENT_ADDRESS = ("203.0.113.7", 50000)


class Clock:
    """The app's UTC clock, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Ticker:
    """The login throttle's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class AsgiClient:
    """Synchronous requests to an ASGI app in-process; keeps cookies like a browser."""

    def __init__(self, app: Any, *, client: tuple[str, int] = CLIENT_ADDRESS) -> None:
        self._portal_context: AbstractContextManager[Any] = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_context.__enter__()
        transport = httpx.ASGITransport(app=app, client=client)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver", follow_redirects=False)

    @property
    def cookies(self) -> httpx.Cookies:
        return self._client.cookies

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        return self._portal.call(functools.partial(self._client.request, method, url, **options))

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def delete(self, url: str, **options: Any) -> httpx.Response:
        return self.request("DELETE", url, **options)

    def close(self) -> None:
        self._portal.call(self._client.aclose)
        self._portal_context.__exit__(None, None, None)


@dataclass
class WebTrial:
    app: Any
    database: Database
    clock: Clock
    ticker: Ticker
    sites: dict[str, int]
    clients: list[AsgiClient] = field(default_factory=list)

    def client(self, **options: Any) -> AsgiClient:
        made = AsgiClient(self.app, **options)
        self.clients.append(made)
        return made

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.database.session_factory, clock=self.clock)

    def api_login(self, client: AsgiClient, username: str, password: str = PASSWORD) -> str:
        """Sign in through the API; the CSRF token to send as X-CSRF-Token."""
        response = client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["csrf_token"])

    def bearer(self, username: str) -> dict[str, str]:
        """An Authorization header with a fresh API token of ``username``."""
        from cmvtrial.services import api_tokens

        actor = accounts.actor_for(self.uow(), username)
        issued = api_tokens.create_token(self.uow(), actor, "test", lifetime=timedelta(days=90))
        return {"Authorization": f"Bearer {issued.token}"}

    def web_login(self, client: AsgiClient, username: str, password: str = PASSWORD) -> httpx.Response:
        """Sign in through the login page, as a browser does."""
        page = client.get("/login")
        response = client.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": csrf_in(page.text), "next": "/"},
        )
        return response

    def count(self, table: type[Base]) -> int:
        with self.database.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

    def audit_count(self) -> int:
        return self.count(AuditEvent)


def csrf_in(html: str) -> str:
    """The CSRF token of the first form on a page."""
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def make_web_trial(folder: Path, now: datetime, **settings: Any) -> WebTrial:
    url = f"sqlite:///{folder / 'web.db'}"
    database = open_database(url, create=True, require_current=False)
    trial_setup.initialise_trial(database, PROTOCOL, "admin", PASSWORD, now=now)
    clock, ticker = Clock(now), Ticker()
    uow = UnitOfWork(database.session_factory, clock=clock)
    admin = accounts.actor_for(uow, "admin")
    sites = {code: trial_setup.add_site(uow, admin, code, f"Site {code[-1]}").id for code in ("SITEA", "SITEB")}
    for username, (role, site) in USERS.items():
        accounts.add_user(uow, admin, username, PASSWORD, role, site)
    app = create_app(load_settings(database_url=url, **settings), database=database, clock=clock, monotonic=ticker)
    return WebTrial(app=app, database=database, clock=clock, ticker=ticker, sites=sites)


@pytest.fixture
def web_trial(tmp_path: Path, now: datetime) -> Iterator[WebTrial]:
    trial = make_web_trial(tmp_path, now)
    yield trial
    for client in trial.clients:
        client.close()
    trial.database.dispose()
