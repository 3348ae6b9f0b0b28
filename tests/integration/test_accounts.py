"""User accounts: Argon2 hashes only, the password policy, roles and sites, sign-in, all audited."""

from __future__ import annotations

import pytest
from sqlalchemy import String, Text, select

from cmvtrial.errors import AlreadyExists, AuthenticationFailed, Forbidden, InvalidInput, NotFound
from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import Base, User

PASSWORD = "a-long-enough-password"
PRODUCTION_HASHER = accounts._hasher  # captured before conftest swaps in the cheap one


def test_production_hashes_are_argon2id_at_full_cost(monkeypatch):
    monkeypatch.setattr(accounts, "_hasher", PRODUCTION_HASHER)
    digest = accounts.hash_password(PASSWORD)
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert accounts.verify_password(digest, PASSWORD) and not accounts.verify_password(digest, "wrong")
    assert not accounts.verify_password("not-a-hash", PASSWORD)


def state(uow: UnitOfWork) -> tuple[list[str], int]:
    with uow.reading():
        return [user.username for user in uow.users.list()], uow.audit_events.count()


@pytest.fixture
def site(uow, admin):
    return trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")


def test_a_user_is_created_with_an_argon2_hash_and_an_audit_event(uow, admin, site):
    view = accounts.add_user(uow, admin, "Ivy.Chen", PASSWORD, "investigator", "pkuph", full_name="Ivy Chen")
    assert (view.username, view.role, view.site_code, view.active) == ("ivy.chen", "investigator", "PKUPH", True)
    with uow.reading():
        stored = uow.users.by_username("ivy.chen")
        assert stored.password_hash.startswith("$argon2id$")
        assert accounts.verify_password(stored.password_hash, PASSWORD)
        event = uow.audit_events.latest(1)[0]
    assert (event.action, event.entity_type, event.entity_id, event.site_id) == ("user.create", "user", str(view.id), site.id)
    assert '"role":"investigator"' in event.after and "password_hash" not in event.after and "$argon2" not in event.after


def test_the_password_is_stored_nowhere_in_plain_text(uow, admin, site, trial_database):
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    accounts.authenticate(uow, "ivy", PASSWORD)
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(uow, "ivy", PASSWORD + "-wrong")
    with trial_database.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            text_columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            for row in connection.execute(select(*text_columns)) if text_columns else []:
                assert not any(value and PASSWORD in value for value in row), table.name


@pytest.mark.parametrize(
    ("username", "password", "role", "site_code", "field"),
    [
        ("ivy", "short", "investigator", "PKUPH", "password"),
        ("ivy", "x" * 1025, "investigator", "PKUPH", "password"),
        ("ivy-is-long", "IVY-IS-LONG", "investigator", "PKUPH", "password"),
        ("ivy", PASSWORD, "nurse", "PKUPH", "role"),
        ("root", PASSWORD, "admin", "PKUPH", "site"),
        ("9lives", PASSWORD, "investigator", "PKUPH", "username"),
        ("x", PASSWORD, "investigator", "PKUPH", "username"),
        ("ivy chen", PASSWORD, "investigator", "PKUPH", "username"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(uow, admin, site, username, password, role, site_code, field):
    before = state(uow)
    with pytest.raises(InvalidInput) as refusal:
        accounts.add_user(uow, admin, username, password, role, site_code)
    assert refusal.value.details["field"] == field
    assert state(uow) == before


def test_an_unknown_site_is_not_found(uow, admin, site):
    before = state(uow)
    with pytest.raises(NotFound, match="known: PKUPH"):
        accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "NOWHERE")
    assert state(uow) == before


def test_user_names_are_unique_whatever_their_case(uow, admin, site):
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    before = state(uow)
    with pytest.raises(AlreadyExists):
        accounts.add_user(uow, admin, "IVY", PASSWORD, "coordinator", "PKUPH")
    assert state(uow) == before


def test_only_an_admin_adds_users_and_a_refusal_changes_nothing(uow, admin, site):
    accounts.add_user(uow, admin, "dm", PASSWORD, "data-manager")
    data_manager = accounts.actor_for(uow, "dm")
    before = state(uow)
    with pytest.raises(Forbidden):
        accounts.add_user(uow, data_manager, "eve", PASSWORD, "admin")
    assert state(uow) == before


def test_signing_in_returns_the_actor_and_is_audited(uow, admin, site):
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    actor = accounts.authenticate(uow, " Ivy ", PASSWORD)
    assert (actor.username, actor.role, actor.site_id) == ("ivy", "investigator", site.id)
    with uow.reading():
        assert uow.users.by_username("ivy").last_login_at is not None
        assert uow.audit_events.latest(1)[0].action == "user.login"


@pytest.mark.parametrize("who", ["ivy", "nobody"])
def test_a_failed_sign_in_says_the_same_for_any_cause_and_is_audited(uow, admin, site, who):
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    with pytest.raises(AuthenticationFailed, match="wrong user name or password"):
        accounts.authenticate(uow, who, "not-the-password")
    with uow.reading():
        event = uow.audit_events.latest(1)[0]
        assert (event.action, event.user_id) == ("user.login_failed", None)
        if who == "ivy":
            assert uow.users.by_username("ivy").failed_login_count == 1
    assert verify_audit(uow).ok


def test_a_deactivated_account_cannot_sign_in_or_act(uow, admin, site):
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    with uow:
        uow.users.by_username("ivy").active = False
        uow.commit()
    with pytest.raises(AuthenticationFailed):
        accounts.authenticate(uow, "ivy", PASSWORD)
    with pytest.raises(Forbidden, match="deactivated"):
        accounts.actor_for(uow, "ivy")
    with pytest.raises(NotFound):
        accounts.actor_for(uow, "nobody")


def test_a_site_monitor_lists_only_users_of_their_site(uow, admin, site):
    trial_setup.add_site(uow, admin, "OTHER", "Another hospital")
    accounts.add_user(uow, admin, "mona", PASSWORD, "monitor", "PKUPH")
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    accounts.add_user(uow, admin, "olaf", PASSWORD, "investigator", "OTHER")
    monitor = accounts.actor_for(uow, "mona")
    assert [u.username for u in accounts.list_users(uow, monitor)] == ["ivy", "mona"]
    assert [u.username for u in accounts.list_users(uow, admin)] == ["admin", "ivy", "mona", "olaf"]
    with uow.reading():
        assert isinstance(uow.users.by_username("olaf"), User)
