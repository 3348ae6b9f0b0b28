"""Initialising a trial, sites, the demo set-up and the status summary."""

from __future__ import annotations

import hashlib

import pytest

from cmvtrial.errors import AlreadyExists, AlreadyInitialised, Forbidden, InvalidInput, NotFound
from cmvtrial.protocols import read_shipped_text
from cmvtrial.services import accounts, trial_setup
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.store import schema

PASSWORD = "a-long-enough-password"


def test_initialising_stores_the_protocol_text_and_hash_and_creates_the_admin(trial_database, uow, protocol_id, now):
    text = read_shipped_text(protocol_id)
    with uow.reading():
        trial = uow.trial.current()
        version = uow.protocols.require(trial.protocol_version_id)
        assert (version.protocol_id, version.text) == (protocol_id, text)
        assert version.sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()
        admin = uow.users.by_username("admin")
        assert (admin.role, admin.site_id, trial.initialised_by_user_id) == ("admin", None, admin.id)
        assert trial.initialised_at == now
        actions = [event.action for event in uow.audit_events.in_order()]
    assert actions == ["user.create", "protocol_version.load", "trial.initialise"]
    assert verify_audit(uow).ok and trial_setup.is_initialised(trial_database)


def test_initialising_twice_is_refused_and_changes_nothing(trial_database, uow, protocol_id, now):
    before = verify_audit(uow).count
    with pytest.raises(AlreadyInitialised, match="nothing was changed"):
        trial_setup.initialise_trial(trial_database, protocol_id, "other", PASSWORD, now=now)
    assert verify_audit(uow).count == before


@pytest.mark.parametrize(
    ("protocol", "username", "password", "error"),
    [
        ("sle-cmv-il2", "admin", "short", InvalidInput),
        ("sle-cmv-il2", "Not Valid", PASSWORD, InvalidInput),
        ("no-such-protocol", "admin", PASSWORD, NotFound),
    ],
)
def test_bad_input_to_init_leaves_the_database_untouched(database, now, protocol, username, password, error):
    with pytest.raises(error):
        trial_setup.initialise_trial(database, protocol, username, password, now=now)
    assert not trial_setup.is_initialised(database)
    if not database.is_missing_file():
        assert schema.current_revision(database.engine) is None


def test_sites_are_added_with_a_normalized_code_and_audited(uow, admin):
    site = trial_setup.add_site(uow, admin, " pkuph ", "Peking  University People's Hospital", reason="first site")
    assert (site.code, site.name) == ("PKUPH", "Peking University People's Hospital")
    with uow.reading():
        event = uow.audit_events.latest(1)[0]
    assert (event.action, event.site_id, event.reason) == ("site.create", site.id, "first site")


@pytest.mark.parametrize(("code", "name"), [("P", "x"), ("PK UPH", "x"), ("PKUPH!", "x"), ("A" * 17, "x"), ("PKUPH", "  ")])
def test_bad_site_input_is_refused_and_changes_nothing(uow, admin, code, name):
    with pytest.raises(InvalidInput):
        trial_setup.add_site(uow, admin, code, name)
    assert trial_setup.list_sites(uow, admin) == []


def test_a_duplicate_site_is_refused(uow, admin):
    trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    with pytest.raises(AlreadyExists):
        trial_setup.add_site(uow, admin, "pkuph", "Again")
    assert len(trial_setup.list_sites(uow, admin)) == 1


def test_site_users_see_only_their_site(uow, admin):
    trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    trial_setup.add_site(uow, admin, "OTHER", "Another hospital")
    accounts.add_user(uow, admin, "ivy", PASSWORD, "coordinator", "PKUPH")
    coordinator = accounts.actor_for(uow, "ivy")
    assert [site.code for site in trial_setup.list_sites(uow, coordinator)] == ["PKUPH"]
    with pytest.raises(Forbidden):
        trial_setup.add_site(uow, coordinator, "MINE", "Not allowed")
    assert [site.code for site in trial_setup.trial_status(uow, coordinator).sites] == ["PKUPH"]


def test_the_demo_set_up_adds_the_seed_site_and_one_user_per_role(uow, admin):
    passwords = iter(f"demo-password-{n:04d}" for n in range(10))
    site, users = trial_setup.add_demo_accounts(uow, admin, make_password=lambda: next(passwords))
    assert (site.code, site.name) == trial_setup.DEMO_SITE
    assert {(user.role, user.site_code) for user, _ in users} == {
        ("investigator", "PKUPH"),
        ("coordinator", "PKUPH"),
        ("monitor", "PKUPH"),
        ("data-manager", None),
        ("statistician", None),
    }
    for user, password in users:
        assert accounts.authenticate(uow, user.username, password).role == user.role


def test_the_status_counts_what_the_database_holds(uow, admin, protocol_id):
    trial_setup.add_site(uow, admin, "PKUPH", "Peking University People's Hospital")
    accounts.add_user(uow, admin, "ivy", PASSWORD, "investigator", "PKUPH")
    status = trial_setup.trial_status(uow, admin)
    assert (status.protocol_id, [s.code for s in status.sites]) == (protocol_id, ["PKUPH"])
    assert status.users_by_role == {"admin": 1, "investigator": 1}
    assert (status.subjects_by_status, status.audit_events) == ({}, 5)


def test_the_command_line_acts_as_the_initialising_admin(uow):
    assert trial_setup.default_actor(uow).username == "admin"
