"""The main menu: one entry per page, shown only to users whose role may use it.

Adding a page to the menu is one line in ``NAV``; ``action`` is the permission (services/
permissions.py) that the page's service checks, so the menu never offers a page that would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from cmvtrial.services import permissions
from cmvtrial.services.permissions import Actor


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    path: str
    action: str | None  # None: every signed-in user


NAV: tuple[NavItem, ...] = (
    NavItem("Dashboard", "/", "trial.status"),
    NavItem("Subjects", "/subjects", "subject.view"),
    NavItem("Queries", "/queries", "query.list"),
    NavItem("Safety", "/safety", "adverse_event.view"),
    NavItem("Reports", "/reports", "analysis.run"),
    NavItem("Eligibility check", "/eligibility", "eligibility.check"),
    NavItem("Protocol", "/protocol", "protocol.view"),
    NavItem("Sites", "/sites", "site.list"),
    NavItem("Users", "/users", "user.list"),
    NavItem("Audit trail", "/audit", "audit.read"),
    NavItem("API tokens", "/tokens", None),
)


@dataclass(frozen=True, slots=True)
class MenuEntry:
    label: str
    path: str
    current: bool


def menu(actor: Actor, current_path: str) -> list[MenuEntry]:
    """The entries ``actor`` may use, with the one for ``current_path`` marked."""
    entries = []
    for item in NAV:
        if item.action is not None and not permissions.allowed(actor, item.action):
            continue
        current = current_path == item.path or (item.path != "/" and current_path.startswith(item.path + "/"))
        entries.append(MenuEntry(item.label, item.path, current))
    return entries
