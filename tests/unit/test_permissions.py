"""The role × action table and site isolation (services/permissions.py); no database needed."""

from __future__ import annotations

import pytest

from cmvtrial.errors import Forbidden
from cmvtrial.services.permissions import PERMISSIONS, Actor, allowed, require
from cmvtrial.store.tables import ROLES

SITE_A, SITE_B = 1, 2


def actor(role: str, site_id: int | None = None) -> Actor:
    return Actor(user_id=7, username=f"{role}-user", role=role, site_id=site_id)


def test_the_table_names_only_known_roles_and_every_role_can_do_something():
    assert all(roles <= set(ROLES) for roles in PERMISSIONS.values())
    assert {role for roles in PERMISSIONS.values() for role in roles} == set(ROLES)


@pytest.mark.parametrize("action", sorted(PERMISSIONS))
@pytest.mark.parametrize("role", ROLES)
def test_require_follows_the_table(role, action):
    if role in PERMISSIONS[action]:
        require(actor(role), action)
    else:
        with pytest.raises(Forbidden, match="may not") as refusal:
            require(actor(role), action)
        assert refusal.value.details["action"] == action


def test_only_an_admin_adds_sites_and_users():
    for action in ("site.add", "user.add"):
        assert [role for role in ROLES if allowed(actor(role), action)] == ["admin"]


def test_site_staff_act_only_on_their_own_site():
    investigator = actor("investigator", SITE_A)
    require(investigator, "randomize", site=SITE_A)
    with pytest.raises(Forbidden, match="another site") as refusal:
        require(investigator, "randomize", site=SITE_B)
    assert refusal.value.details["site"] == SITE_B


def test_users_of_all_sites_act_on_any_site():
    require(actor("data-manager"), "query.open", site=SITE_B)
    require(actor("investigator", None), "randomize", site=SITE_B)


def test_an_unknown_action_is_a_bug_not_a_refusal():
    with pytest.raises(LookupError, match="unknown action"):
        require(actor("admin"), "launch.rocket")


def test_an_unknown_role_may_do_nothing():
    assert not any(allowed(actor("janitor"), action) for action in PERMISSIONS)
