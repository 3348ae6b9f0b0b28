"""Serious adverse events: the expedited-report clock, the overdue list, submission, the report form.

Issue 5: serious events are "flagged for expedited reporting with the 24-hour clock from
awareness". The window is the protocol's (``safety.sae_report_within_hours``, read from the version
the subject was enrolled under), never a number in code; the clock itself is
``core.adverse_events.expedited_report_clock``. An event is serious when it meets an ICH E2A
criterion, which the AE record derives, so every serious event is on the list from the moment it
is recorded (or revised into a serious one).

Marking a report as submitted is a change of the event, audited like any other; an event has one
initial expedited report, so a second submission is refused (follow-up information goes into the
event itself, which is audited). The SAE report form is assembled here as plain data
(``SaeReportForm``); the adapters render it as an HTML page or a PDF.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from cmvtrial.core import adverse_events as core
from cmvtrial.core.protocol import Protocol
from cmvtrial.errors import AlreadyExists, InvalidInput, Refused
from cmvtrial.services import permissions
from cmvtrial.services.adverse_events import (
    AdverseEventView,
    arm_label,
    event_row_for,
    event_view,
    protocol_of,
)
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.safety_repositories import AdverseEventRepository
from cmvtrial.store.tables import AdverseEvent, Site, Subject

MAX_REFERENCE_LENGTH = 100  # the column's width


def report_window(protocol: Protocol) -> timedelta | None:
    """The protocol's expedited-reporting window, or None when it names none (then no deadline
    can be judged, and the listing says so instead of inventing one)."""
    hours = getattr(protocol.safety, "sae_report_within_hours", None) if protocol.safety else None
    return timedelta(hours=hours) if hours else None


@dataclass(frozen=True)
class SaeStatus:
    """A serious event and where it stands against its reporting deadline."""

    event: AdverseEventView
    window: timedelta | None
    clock: core.ReportClock | None

    @property
    def overdue(self) -> bool:
        return self.clock is not None and self.clock.overdue

    @property
    def status(self) -> str:
        if self.clock is None:
            return "reported" if self.event.report_submitted_at else "no_window_in_protocol"
        return str(self.clock.status)

    def to_dict(self) -> dict[str, Any]:
        from cmvtrial.core.audit_chain import to_jsonable

        clock = self.clock
        return dict(to_jsonable({
            "adverse_event": self.event.to_dict(),
            "status": self.status,
            "window_hours": self.window.total_seconds() / 3600 if self.window else None,
            "due_time": clock.due_time if clock else None,
            "remaining_hours": round(clock.remaining.total_seconds() / 3600, 2) if clock else None,
        }))


def _clock(row: AdverseEvent, window: timedelta | None, now: datetime) -> core.ReportClock | None:
    if window is None or row.awareness_time is None:
        return None
    # A deadline is judged at the latest known moment: a site clock slightly ahead of the server's
    # must not turn a listing into an error.
    moments = [now, row.awareness_time, *([row.sae_report_submitted_at] if row.sae_report_submitted_at else [])]
    return core.expedited_report_clock(row.awareness_time, max(moments), report_within=window,
                                       reported_time=row.sae_report_submitted_at)


def _status(uow: UnitOfWork, row: AdverseEvent, subject: Subject, now: datetime) -> SaeStatus:
    window = report_window(protocol_of(uow, subject))
    return SaeStatus(event_view(uow, row, subject), window, _clock(row, window, now))


def _aware(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise InvalidInput(f"{name} must be a date and time with its time zone", field=name)
    return moment


def list_serious_events(
    uow: UnitOfWork,
    actor: Actor,
    *,
    now: datetime,
    site_id: int | None = None,
    overdue_only: bool = False,
) -> list[SaeStatus]:
    """Every serious event the actor may see with its report clock; ``overdue_only`` keeps the ones
    past their deadline without a report. Most urgent first (earliest deadline)."""
    _aware(now, "now")
    permissions.require(actor, "adverse_event.view")
    with uow.reading():
        if site_id is not None:
            permissions.require(actor, "adverse_event.view", site=site_id)
        scope = site_id if site_id is not None else permissions.site_scope(actor)
        rows = AdverseEventRepository(uow.session).listing(site_id=scope, serious_only=True)
        statuses = [_status(uow, row, subject, now) for row, subject in rows]
    if overdue_only:
        statuses = [s for s in statuses if s.overdue]
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(statuses, key=lambda s: (s.clock.due_time if s.clock else far, s.event.id))


def overdue_reports(uow: UnitOfWork, actor: Actor, *, now: datetime, site_id: int | None = None) -> list[SaeStatus]:
    """Serious events whose expedited report is past its deadline and not submitted."""
    return list_serious_events(uow, actor, now=now, site_id=site_id, overdue_only=True)


def sae_status(uow: UnitOfWork, actor: Actor, event_id: int, *, now: datetime) -> SaeStatus:
    _aware(now, "now")
    with uow.reading():
        row, subject = event_row_for(uow, actor, "adverse_event.view", event_id)
        _require_serious(row)
        return _status(uow, row, subject, now)


def _require_serious(row: AdverseEvent) -> None:
    if not row.serious:
        raise Refused(f"adverse event {row.id} ('{row.term}') is not serious: no expedited report is due",
                      adverse_event=row.id)


def submit_report(
    uow: UnitOfWork,
    actor: Actor,
    event_id: int,
    *,
    submitted_at: datetime | None = None,
    reference: str | None = None,
    reason: str | None = None,
) -> SaeStatus:
    """Record that the expedited report of a serious event was sent (when, and its reference).

    ``submitted_at`` defaults to now; it cannot precede awareness or lie in the future. A second
    submission is refused (AlreadyExists) and changes nothing.
    """
    reference = " ".join(reference.split()) if reference else None
    if reference is not None and len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidInput(f"the report reference has at most {MAX_REFERENCE_LENGTH} characters",
                           field="reference")
    with uow:
        row, subject = event_row_for(uow, actor, "sae.submit_report", event_id, lock=True)
        _require_serious(row)
        if row.sae_report_submitted_at is not None:
            raise AlreadyExists(f"the SAE report of adverse event {row.id} was already submitted at "
                                f"{row.sae_report_submitted_at:%Y-%m-%d %H:%M} UTC; nothing was changed",
                                adverse_event=row.id)
        now = uow.clock()
        moment = _aware(submitted_at, "submitted_at") if submitted_at is not None else now
        window = report_window(protocol_of(uow, subject))
        if row.awareness_time is not None and moment < row.awareness_time:
            aware = f"{row.awareness_time:%Y-%m-%d %H:%M} UTC"
            raise InvalidInput(f"the report cannot precede awareness of the event ({aware})",
                               field="submitted_at", value=moment.isoformat())
        if moment > now:
            raise InvalidInput("the submission time is in the future", field="submitted_at", value=moment.isoformat())
        before = snapshot(row)
        row.sae_report_submitted_at = moment
        row.sae_report_submitted_by_user_id = actor.user_id
        row.sae_report_reference = reference
        row.updated_at = now
        uow.session.flush()
        uow.audit.record(actor, "adverse_event.sae_report_submit", row, before=before, after=row,
                         reason=reason, site_id=subject.site_id)
        status = SaeStatus(event_view(uow, row, subject), window, _clock(row, window, now))
        uow.commit()
    return status


# --- the SAE report form --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Causality:
    drug: str
    relatedness: str
    related: bool
    action_taken: str


@dataclass(frozen=True)
class SaeReportForm:
    """Everything the SAE report form shows, as plain values (the adapters only lay it out)."""

    protocol_id: str
    protocol_version: str
    protocol_title: str
    sponsor: str
    registry_ids: tuple[str, ...]
    site_code: str
    site_name: str
    subject: str
    arm: str | None
    consent_date: date | None
    event: AdverseEventView
    seriousness: tuple[tuple[str, str, str], ...]  # (criterion, ICH E2A wording, SDTM flag)
    causality: tuple[Causality, ...]
    status: SaeStatus
    generated_at: datetime
    generated_by: str

    @property
    def title(self) -> str:
        return f"Serious adverse event report — {self.event.label}"

    def to_dict(self) -> dict[str, Any]:
        from cmvtrial.core.audit_chain import to_jsonable

        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["event"] = self.event.to_dict()
        data["status"] = self.status.to_dict()
        return dict(to_jsonable(data))


def sae_report_form(uow: UnitOfWork, actor: Actor, event_id: int, *, now: datetime) -> SaeReportForm:
    """The report form of one serious event: trial, site, subject, event, seriousness, causality
    per study drug, narrative, dates and where the report stands against its deadline."""
    _aware(now, "now")
    with uow.reading():
        row, subject = event_row_for(uow, actor, "adverse_event.view", event_id)
        _require_serious(row)
        protocol = protocol_of(uow, subject)
        site = uow.session.get(Site, subject.site_id)
        status = _status(uow, row, subject, now)
        view = status.event
        criteria = tuple((c, core.SeriousnessCriterion(c).label, core.SeriousnessCriterion(c).sdtm_flag)
                         for c in view.seriousness)
        causality = tuple(
            Causality(d.drug, str(d.relatedness).replace("_", " "), d.relatedness.is_related, str(d.action_taken))
            for d in view.drugs
        )
        return SaeReportForm(
            protocol_id=protocol.id, protocol_version=protocol.version, protocol_title=protocol.title,
            sponsor=protocol.sponsor, registry_ids=tuple(f"{r.registry} {r.id}" for r in protocol.registry_ids),
            site_code=site.code if site else str(subject.site_id), site_name=site.name if site else "",
            subject=view.subject, arm=arm_label(uow, subject, protocol), consent_date=subject.consent_date,
            event=view, seriousness=criteria, causality=causality, status=status,
            generated_at=now, generated_by=actor.username,
        )
