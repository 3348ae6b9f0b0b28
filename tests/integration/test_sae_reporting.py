"""Serious adverse events: the protocol's clock from awareness, overdue lists, submission, the report form."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from safety_support import counts, make_safety_trial, neutropenia, pneumonia_sae

from cmvtrial.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, Refused
from cmvtrial.protocols import load_shipped_protocol
from cmvtrial.services import adverse_events, sae_reporting

TODAY = date(2025, 3, 14)
AWARE = datetime(2025, 3, 10, 8, tzinfo=UTC)  # pneumonia_sae's awareness time


@pytest.fixture
def trial(uow, admin, now):
    return make_safety_trial(uow, admin, now)


@pytest.fixture
def window(protocol_id):
    """The protocol's window, read from the shipped file (the tests assume no number of their own)."""
    hours = load_shipped_protocol(protocol_id)[0].safety.sae_report_within_hours
    assert hours
    return timedelta(hours=hours)


def record(trial, actor=None, subject=None, **changes):
    return adverse_events.record_adverse_event(trial.uow, actor or trial.investigator, subject or trial.subject_id,
                                               pneumonia_sae(**changes), today=TODAY)


def test_the_clock_runs_from_awareness_for_the_protocols_window(trial, window):
    event = record(trial)
    adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(), today=TODAY)
    due = AWARE + window
    at_deadline = sae_reporting.list_serious_events(trial.uow, trial.monitor, now=due)
    assert [s.event.id for s in at_deadline] == [event.id]  # the non-serious event is not listed
    assert (at_deadline[0].status, at_deadline[0].clock.due_time, at_deadline[0].window) == ("due", due, window)
    assert sae_reporting.overdue_reports(trial.uow, trial.monitor, now=due) == []
    late = sae_reporting.overdue_reports(trial.uow, trial.monitor, now=due + timedelta(seconds=1))
    assert [(s.event.id, s.status, s.overdue) for s in late] == [(event.id, "overdue", True)]
    assert late[0].clock.remaining == timedelta(seconds=-1)


def test_a_report_submitted_in_time_leaves_the_overdue_list(trial, window):
    event = record(trial)
    status = sae_reporting.submit_report(trial.uow, trial.investigator, event.id,
                                         submitted_at=AWARE + window - timedelta(hours=1), reference="SAE-2025-001")
    assert (status.status, status.event.report_reference, status.event.report_submitted_by) == (
        "reported_on_time", "SAE-2025-001", "inv")
    assert sae_reporting.overdue_reports(trial.uow, trial.monitor, now=AWARE + 10 * window) == []
    with trial.uow.reading():
        audit = trial.uow.audit_events.latest(1)[0]
    assert (audit.action, audit.entity_id) == ("adverse_event.sae_report_submit", str(event.id))


def test_a_late_report_is_marked_late(trial, window):
    event = record(trial)
    status = sae_reporting.submit_report(trial.uow, trial.investigator, event.id,
                                         submitted_at=AWARE + window + timedelta(minutes=5))
    assert status.status == "reported_late"


def test_refused_submissions_change_nothing(trial, window):
    event = record(trial)
    plain = adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(),
                                                today=TODAY)
    before = counts(trial.uow)
    for actor, event_id, kwargs, error in [
        (trial.coordinator, event.id, {}, Forbidden),                 # the investigator reports
        (trial.statistician, event.id, {}, Forbidden),
        (trial.other_investigator, event.id, {}, Forbidden),          # another site's event
        (trial.investigator, plain.id, {}, Refused),                  # not serious
        (trial.investigator, 9999, {}, NotFound),
        (trial.investigator, event.id, {"submitted_at": AWARE - timedelta(hours=1)}, InvalidInput),
        (trial.investigator, event.id, {"submitted_at": datetime(2030, 1, 1, tzinfo=UTC)}, InvalidInput),
        (trial.investigator, event.id, {"submitted_at": datetime(2025, 3, 11)}, InvalidInput),  # no time zone
        (trial.investigator, event.id, {"reference": "x" * 101}, InvalidInput),
    ]:
        with pytest.raises(error):
            sae_reporting.submit_report(trial.uow, actor, event_id, **kwargs)
    assert counts(trial.uow) == before


def test_a_double_submission_is_refused_and_changes_nothing(trial):
    event = record(trial)
    sae_reporting.submit_report(trial.uow, trial.investigator, event.id, submitted_at=AWARE + timedelta(hours=2))
    before = counts(trial.uow)
    with pytest.raises(AlreadyExists, match="already submitted"):
        sae_reporting.submit_report(trial.uow, trial.investigator, event.id)
    assert counts(trial.uow) == before


def test_an_event_revised_into_a_serious_one_joins_the_list(trial, now):
    plain = adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(),
                                                today=TODAY)
    assert sae_reporting.list_serious_events(trial.uow, trial.monitor, now=now) == []
    with pytest.raises(InvalidInput, match="awareness"):
        adverse_events.update_adverse_event(trial.uow, trial.investigator, plain.id,
                                            {"seriousness": ["hospitalisation"]}, reason="admitted", today=TODAY)
    adverse_events.update_adverse_event(
        trial.uow, trial.investigator, plain.id,
        {"seriousness": ["hospitalisation"], "awareness_time": "2025-03-13T22:00:00+08:00"}, reason="admitted",
        today=TODAY)
    listed = sae_reporting.list_serious_events(trial.uow, trial.monitor, now=now)
    assert [s.event.id for s in listed] == [plain.id]
    assert listed[0].clock.awareness_time == datetime(2025, 3, 13, 14, tzinfo=UTC)


def test_sites_see_only_their_serious_events(trial, now):
    mine = record(trial)
    theirs = record(trial, actor=trial.other_investigator, subject=trial.other_subject_id)
    assert [s.event.id for s in sae_reporting.list_serious_events(trial.uow, trial.coordinator, now=now)] == [mine.id]
    everyone = sae_reporting.list_serious_events(trial.uow, trial.data_manager, now=now)
    assert sorted(s.event.id for s in everyone) == sorted([mine.id, theirs.id])
    with pytest.raises(Forbidden):
        sae_reporting.list_serious_events(trial.uow, trial.statistician, now=now)
    with pytest.raises(Forbidden):
        sae_reporting.sae_report_form(trial.uow, trial.investigator, theirs.id, now=now)
    with pytest.raises(InvalidInput):
        sae_reporting.list_serious_events(trial.uow, trial.monitor, now=datetime(2025, 3, 14))


def test_the_report_form_holds_narrative_dates_and_causality(trial, now, window):
    event = record(trial, subject=trial.control_subject_id,
                   drugs=[{"drug": "ganciclovir", "relatedness": "unlikely", "action_taken": "DOSE NOT CHANGED"}])
    form = sae_reporting.sae_report_form(trial.uow, trial.monitor, event.id, now=now)
    assert (form.subject, form.site_code, form.arm) == ("PKUPH-002", "PKUPH", "Ganciclovir alone")
    assert form.event.narrative.startswith("Fever and cough")
    assert form.event.start_date == date(2025, 3, 9) and form.consent_date == date(2025, 2, 1)
    assert form.seriousness == (("hospitalisation", "requires inpatient hospitalisation or prolongs an existing one",
                                 "AESHOSP"),)
    assert [(c.drug, c.relatedness, c.related) for c in form.causality] == [
        ("ganciclovir", "unlikely", False), ("interleukin-2", "not applicable", False)]
    assert form.status.clock.due_time == AWARE + window
    assert form.generated_by == "mon" and form.protocol_id
    assert form.to_dict()["event"]["term"] == "Pneumonia"
    plain = adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(),
                                                today=TODAY)
    with pytest.raises(Refused, match="not serious"):
        sae_reporting.sae_report_form(trial.uow, trial.monitor, plain.id, now=now)


def test_no_window_in_the_protocol_means_no_deadline_is_invented(trial, now, monkeypatch):
    event = record(trial)
    monkeypatch.setattr(sae_reporting, "report_window", lambda protocol: None)
    [status] = sae_reporting.list_serious_events(trial.uow, trial.monitor, now=now)
    assert (status.event.id, status.clock, status.status, status.overdue) == (event.id, None,
                                                                              "no_window_in_protocol", False)
