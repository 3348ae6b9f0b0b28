"""The dashboard panels of issues 3-8: enrollment against target by site and arm, visits due and
overdue, open queries, serious adverse events awaiting their report. Each ``load`` reads one service
for the signed-in user and returns None when their role may not see the panel (web/dashboard.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cmvtrial.services import enrollment, queries, sae_reporting, trial_setup, visits

if TYPE_CHECKING:
    from cmvtrial.adapters.web.dashboard import Sources

#: How many rows a panel lists before it links to the full page.
SHOWN = 8
#: SAE report states that still need the investigator.
AWAITING = ("due", "overdue")


def load_enrollment(sources: Sources) -> Any:
    if not sources.allowed("enrollment.view"):
        return None
    return enrollment.enrollment(sources.uow(), sources.actor)


@dataclass(frozen=True)
class VisitRow:
    kind: str  # due, overdue, missed
    subject: str
    site: str
    visit: str
    target: Any
    window_start: Any
    window_end: Any


def load_visits(sources: Sources) -> Any:
    if not sources.allowed("subject.view"):
        return None
    today = sources.context.clock().date()
    rows: list[VisitRow] = []
    for site in trial_setup.list_sites(sources.uow(), sources.actor):
        worklist = visits.visits_due(sources.uow(), sources.actor, site.code, today=today).worklist
        for kind, entries in (("overdue", worklist.overdue), ("due", worklist.due_this_week),
                              ("missed", worklist.missed)):
            rows.extend(VisitRow(kind, e.subject, e.site, e.visit.label, e.visit.target_date, e.visit.window_start,
                                 e.visit.window_end) for e in entries)
    order = {"overdue": 0, "due": 1, "missed": 2}
    rows.sort(key=lambda row: (order[row.kind], str(row.target), row.subject))
    counts = {kind: sum(1 for row in rows if row.kind == kind) for kind in order}
    return {"rows": rows[:SHOWN], "counts": counts, "more": max(0, len(rows) - SHOWN), "today": today}


def load_queries(sources: Sources) -> Any:
    if not sources.allowed("query.list"):
        return None
    found = queries.list_queries(sources.uow(), sources.actor, status=queries.OPEN)
    return {"rows": found[:SHOWN], "total": len(found)}


def load_saes(sources: Sources) -> Any:
    if not sources.allowed("adverse_event.view"):
        return None
    found = [status for status in sae_reporting.list_serious_events(sources.uow(), sources.actor,
                                                                    now=sources.context.clock())
             if status.status in AWAITING]
    return {"rows": found[:SHOWN], "total": len(found), "overdue": sum(1 for s in found if s.overdue)}
