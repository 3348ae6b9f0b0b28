"""Who may do what, where: the role × action table, and site isolation.

The table is data (one dict) so it can be reviewed at a glance and printed in documentation; every
service calls ``require`` before it changes or reveals anything. A user bound to a site acts only on
that site's data; a user without a site (sponsor staff: admin, data manager, statistician, central
monitor) acts on all sites. Authority checks of this kind are what 21 CFR 11.10(g) and ICH E6(R3)
§4.3.8 ask for (reference/standards.md P11-07, E6-18).
"""

from __future__ import annotations

from dataclasses import dataclass

from cmvtrial.errors import Forbidden
from cmvtrial.store.tables import ROLES

ADMIN, INVESTIGATOR, COORDINATOR, MONITOR, DATA_MANAGER, STATISTICIAN = ROLES
EVERYONE = frozenset(ROLES)
SITE_STAFF = frozenset({INVESTIGATOR, COORDINATOR})
DATA_REVIEW = frozenset({ADMIN, MONITOR, DATA_MANAGER})

#: action -> the roles allowed to do it. Later use cases add their actions here.
PERMISSIONS: dict[str, frozenset[str]] = {
    # setting up the trial
    "trial.status": EVERYONE,
    "site.add": frozenset({ADMIN}),
    "site.list": EVERYONE,
    "user.add": frozenset({ADMIN}),
    "user.deactivate": frozenset({ADMIN}),
    "user.list": DATA_REVIEW,
    "protocol.load": frozenset({ADMIN}),
    "protocol.view": EVERYONE,
    # calculators on the protocol in force: they read no trial data and store nothing
    "eligibility.check": EVERYONE,
    "ctcae.grade": EVERYONE,
    # sign-in credentials: everyone manages their own API tokens; an admin may revoke anyone's
    "api_token.revoke_any": frozenset({ADMIN}),
    # the audit trail
    "audit.read": DATA_REVIEW,
    "audit.verify": DATA_REVIEW,
    # a backup copies every record (and is audited): administrators only (issue 10)
    "trial.backup": frozenset({ADMIN}),
    # screening and randomization (DESIGN.md §3 steps 2-3)
    "subject.register": SITE_STAFF,
    "subject.view": EVERYONE - {STATISTICIAN},
    "screening.enter": SITE_STAFF,
    "consent.record": SITE_STAFF,
    "randomize": SITE_STAFF,
    "randomization.export_list": frozenset({ADMIN}),
    "randomization.balance": frozenset({ADMIN, DATA_MANAGER, STATISTICIAN}),
    # the scheme's secret seed is created (and its hash committed) by an admin, or on first use
    "randomization.setup": frozenset({ADMIN}),
    "randomization.verify": frozenset({ADMIN, DATA_MANAGER, STATISTICIAN}),
    # the CONSORT screening log: counts and statuses, no clinical values
    "screening.log": EVERYONE,
    # enrollment against the target by site (and by arm where arms may be shown): the dashboard
    "enrollment.view": EVERYONE,
    # treatment, visits and data (steps 4-7)
    "dose.record": SITE_STAFF,
    "visit.record": SITE_STAFF,
    "form.enter": SITE_STAFF,
    "adverse_event.record": SITE_STAFF,
    # safety (issue 5): who sees events, who turns a lab proposal into an event, who reports SAEs
    "adverse_event.view": EVERYONE - {STATISTICIAN},
    "lab_safety.review": SITE_STAFF,
    "lab_safety.decide": frozenset({INVESTIGATOR}),
    "sae.submit_report": frozenset({INVESTIGATOR}),
    "query.list": EVERYONE - {STATISTICIAN},
    "query.open": frozenset({MONITOR, DATA_MANAGER}),
    "query.answer": SITE_STAFF,
    "query.close": frozenset({MONITOR, DATA_MANAGER}),
    "form.sign": frozenset({INVESTIGATOR}),
    # a subject's end of study (withdrawal, completion) is the investigator's record: ICH E6 asks the
    # investigator to ascertain why a subject withdraws; it becomes the CDISC DS disposition event
    "subject.withdraw": frozenset({INVESTIGATOR}),
    "subject.complete": frozenset({INVESTIGATOR}),
    # analysis and export (step 8)
    "data.export": frozenset({DATA_MANAGER, STATISTICIAN}),
    "analysis.run": frozenset({STATISTICIAN, DATA_MANAGER}),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated person a use case runs for; ``site_id`` None means all sites."""

    user_id: int
    username: str
    role: str
    site_id: int | None = None

    @property
    def all_sites(self) -> bool:
        return self.site_id is None


def allowed(actor: Actor, action: str, *, site: int | None = None) -> bool:
    """Whether ``actor`` may do ``action`` (on data of ``site``, when the data belong to one)."""
    if action not in PERMISSIONS:
        raise LookupError(f"unknown action '{action}': add it to PERMISSIONS")
    if actor.role not in PERMISSIONS[action]:
        return False
    return site is None or actor.site_id is None or actor.site_id == site


def require(actor: Actor, action: str, *, site: int | None = None) -> None:
    """Raise Forbidden unless ``actor`` may do ``action`` (on ``site``'s data)."""
    if allowed(actor, action, site=site):
        return
    if actor.role not in PERMISSIONS[action]:
        roles = ", ".join(sorted(PERMISSIONS[action]))
        raise Forbidden(
            f"{actor.username} ({actor.role}) may not {action}; allowed roles: {roles}",
            action=action,
            role=actor.role,
        )
    raise Forbidden(
        f"{actor.username} works at another site and may not {action} for site {site}",
        action=action,
        site=site,
    )


def site_scope(actor: Actor) -> int | None:
    """The one site whose data the actor sees, or None for all sites."""
    return actor.site_id
