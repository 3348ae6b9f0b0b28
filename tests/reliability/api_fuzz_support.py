"""A trial behind the API for the fuzzers: one per database for a whole module, with an admin and
site staff holding bearer tokens, and the law every request must obey (``check_response``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conftest import TEST_SECRET_KEY
from reliability_support import fresh_database_url
from sqlalchemy import func, select

from cmvtrial.adapters.api.app import create_app
from cmvtrial.config import Settings
from cmvtrial.services import accounts, api_tokens, subjects, trial_setup
from cmvtrial.services.trial_setup import initialise_trial
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.database import Database, open_database
from cmvtrial.store.tables import AuditEvent, Base

#: Who calls: the administrator, and site staff (the coordinator and investigator of site PKUPH).
ROLES = ("admin", "coord", "inv")
#: Audit events a refused request may still (and must) leave: the failed sign-in attempt (E6-04).
AUDITED_REFUSALS = frozenset({"user.login_failed"})
PASSWORD = "a-long-enough-password"


@dataclass
class FuzzedTrial:
    database: Database
    app: Any
    tokens: dict[str, str]

    def state(self) -> tuple[dict[str, int], list[str]]:
        """Rows per table (the audit trail apart), and the audit actions in order."""
        with self.database.engine.connect() as connection:
            counts = {table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                      for table in Base.metadata.sorted_tables if table.name not in ("audit_events", "audit_chain_head")}
            actions = list(connection.scalars(select(AuditEvent.action).order_by(AuditEvent.sequence)))
        return counts, actions

    def fresh_token(self, username: str) -> None:
        uow = UnitOfWork(self.database.session_factory)
        actor = accounts.actor_for(uow, username)
        self.tokens[username] = api_tokens.create_token(uow, actor, "fuzz", lifetime=timedelta(days=1)).token


@contextmanager
def fuzzed_trial_on(backend: str, folder: Path) -> Iterator[FuzzedTrial]:
    """A site, its coordinator and investigator, a registered candidate, and everyone's token."""
    with fresh_database_url(backend, folder) as url:
        settings = Settings(database_url=url, secret_key=TEST_SECRET_KEY, login_attempts_per_minute=100_000)
        database = open_database(url, settings, create=True, require_current=False)
        try:
            initialise_trial(database, "sle-cmv-il2", "admin", PASSWORD, now=datetime.now(UTC))
            uow = UnitOfWork(database.session_factory)
            admin = accounts.actor_for(uow, "admin")
            trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
            for name, role in (("coord", "coordinator"), ("inv", "investigator")):
                accounts.add_user(uow, admin, name, PASSWORD, role, "PKUPH")
            subjects.register_subject(uow, accounts.actor_for(uow, "coord"), "PKUPH", "S001")
            trial = FuzzedTrial(database, create_app(settings, database=database), {})
            for username in ROLES:
                trial.fresh_token(username)
            yield trial
        finally:
            database.dispose()


def check_response(trial: FuzzedTrial, before: tuple[dict[str, int], list[str]], status: int,
                   content_type: str, body: bytes, what: str) -> None:
    """No 5xx; a refusal is problem+json with a code and changed nothing but the failed-sign-in record."""
    assert status < 500, f"{what}: {status} {body[:500]!r}"
    if status < 400:
        return
    assert content_type.startswith("application/problem+json"), f"{what}: {content_type} {body[:200]!r}"
    import json

    assert "code" in json.loads(body)
    after_counts, after_actions = trial.state()
    before_counts, before_actions = before
    assert after_counts == before_counts, f"{what} was refused ({status}) but changed rows"
    assert after_actions[: len(before_actions)] == before_actions
    assert set(after_actions[len(before_actions):]) <= AUDITED_REFUSALS, after_actions[len(before_actions):]
