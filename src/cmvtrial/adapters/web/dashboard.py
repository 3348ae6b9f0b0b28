"""The dashboard as a list of panels, each loaded from one service and drawn by one partial template.

Why panels: the dashboard grows as services arrive (issue 9: enrollment against target by site and
arm, visits due and overdue, open queries, serious adverse events awaiting reports). A new panel is
one ``Panel`` in ``PANELS`` and one template in ``templates/panels/``; nothing else changes. A
panel's ``load`` returns None when the user may not see it (it checks ``permissions.allowed``; the
service still enforces the rule), so each role sees what concerns it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cmvtrial.adapters.api.context import AppContext
from cmvtrial.adapters.web.routes import dashboard_panels as panels
from cmvtrial.services import permissions, trial_setup
from cmvtrial.services.audit_verification import recent_events
from cmvtrial.services.permissions import Actor
from cmvtrial.services.protocol_in_force import protocol_in_force

#: How many audit events the dashboard shows (the audit page shows more).
RECENT_AUDIT_EVENTS = 8


class Sources:
    """What panels load from, for one actor and one page view; the trial status is read once."""

    def __init__(self, context: AppContext, actor: Actor) -> None:
        self.context = context
        self.actor = actor

    def uow(self) -> Any:
        return self.context.uow()

    @functools.cached_property
    def status(self) -> trial_setup.TrialStatus:
        return trial_setup.trial_status(self.uow(), self.actor)

    def allowed(self, action: str) -> bool:
        return permissions.allowed(self.actor, action)


@dataclass(frozen=True)
class Panel:
    id: str
    title: str
    template: str
    load: Callable[[Sources], Any | None]


@dataclass(frozen=True)
class Pending:
    """A panel the dashboard will have once its service exists (shown as such, so nobody wonders)."""

    title: str
    comes_with: str


def _trial(sources: Sources) -> Any:
    protocol = protocol_in_force(sources.uow(), sources.actor).protocol
    return {"status": sources.status, "target": protocol.population.target_enrollment, "arms": protocol.arms}


def _subjects(sources: Sources) -> Any:
    if not sources.allowed("subject.view"):
        return None
    by_status = sources.status.subjects_by_status
    return {"by_status": by_status, "total": sum(by_status.values())}


def _sites(sources: Sources) -> Any:
    return trial_setup.list_sites(sources.uow(), sources.actor)


def _users(sources: Sources) -> Any:
    return sources.status.users_by_role if sources.allowed("user.list") else None


def _audit(sources: Sources) -> Any:
    if not sources.allowed("audit.read"):
        return None
    return recent_events(sources.uow(), sources.actor, RECENT_AUDIT_EVENTS)


PANELS: tuple[Panel, ...] = (
    Panel("trial", "The trial", "panels/trial.html", _trial),
    Panel("enrollment", "Enrollment against target by site and arm", "panels/enrollment.html", panels.load_enrollment),
    Panel("visits", "Visits due and overdue", "panels/visits.html", panels.load_visits),
    Panel("queries", "Open queries", "panels/queries.html", panels.load_queries),
    Panel("saes", "Serious adverse events awaiting reports", "panels/saes.html", panels.load_saes),
    Panel("subjects", "Subjects by status", "panels/subjects.html", _subjects),
    Panel("sites", "Sites", "panels/sites.html", _sites),
    Panel("users", "Active users by role", "panels/users.html", _users),
    Panel("audit", "Latest audit events", "panels/audit.html", _audit),
)

#: Panels still to come; remove an entry when its Panel is added above.
PENDING: tuple[Pending, ...] = ()


def load_panels(context: AppContext, actor: Actor) -> list[tuple[Panel, Any]]:
    """The panels ``actor`` may see, each with its data."""
    sources = Sources(context, actor)
    shown = []
    for panel in PANELS:
        data = panel.load(sources)
        if data is not None:
            shown.append((panel, data))
    return shown
