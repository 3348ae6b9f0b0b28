"""Every query transition, who may make it, and that a refused one changes nothing."""

from __future__ import annotations

import json
from datetime import date

import pytest
from data_capture_support import HEMATOLOGY, RANDOMIZED_ON, counts, make_capture_trial

from cmvtrial.errors import Forbidden, InvalidInput, NotFound, Refused
from cmvtrial.services import data_entry, queries

TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin):
    trial = make_capture_trial(uow, admin)
    for subject, actor in ((trial.il2_subject, trial.coordinator), (trial.other_subject, trial.other_coordinator)):
        data_entry.enter_visit_data(uow, actor, subject, "BL", {"hematology": HEMATOLOGY}, today=TODAY,
                                    visit_date=RANDOMIZED_ON)
    return trial


def open_one(trial, actor=None, subject=None, item="platelets", text="Please confirm the platelet count"):
    return queries.open_query(trial.uow, actor or trial.monitor, subject or trial.il2_subject, "BL", "hematology", item,
                              text)


def audit_of(trial, query_id):
    with trial.uow.reading():
        return [(event.action, event.username, event.reason)
                for event in trial.uow.audit_events.for_entity("query", str(query_id))]


def test_open_answer_close(trial):
    opened = open_one(trial)
    assert (opened.status, opened.origin, opened.opened_by, opened.visit, opened.item, opened.value) == (
        "open", "manual", "mon", "BL", "platelets", "210 10*9/L")
    answered = queries.answer_query(trial.uow, trial.coordinator, opened.id, "Confirmed against the lab report")
    assert (answered.status, answered.answer, answered.answered_by) == ("answered", "Confirmed against the lab report",
                                                                        "coord")
    closed = queries.close_query(trial.uow, trial.monitor, opened.id)
    assert (closed.status, closed.closed_by) == ("closed", "mon")
    assert [action for action, _, _ in audit_of(trial, opened.id)] == ["query.open", "query.answer", "query.close"]


def test_the_opener_may_withdraw_an_open_query_with_a_reason(trial):
    opened = open_one(trial)
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="needs a reason"):
        queries.close_query(trial.uow, trial.monitor, opened.id)
    assert counts(trial.uow) == before
    closed = queries.close_query(trial.uow, trial.monitor, opened.id, reason="raised on the wrong value")
    assert closed.status == "closed"
    assert audit_of(trial, opened.id)[-1] == ("query.close", "mon", "raised on the wrong value")


def test_an_unresolved_answer_is_reopened_then_answered_again(trial):
    opened = open_one(trial)
    queries.answer_query(trial.uow, trial.coordinator, opened.id, "ok")
    reopened = queries.reopen_query(trial.uow, trial.monitor, opened.id, "Please attach the lab report value")
    assert (reopened.status, reopened.answer) == ("open", None)
    assert "[reopened] Please attach the lab report value" in reopened.text
    queries.answer_query(trial.uow, trial.investigator, opened.id, "Lab report says 210")
    assert queries.close_query(trial.uow, trial.monitor, opened.id).status == "closed"
    assert [action for action, _, _ in audit_of(trial, opened.id)] == [
        "query.open", "query.answer", "query.reopen", "query.answer", "query.close"]


@pytest.mark.parametrize(("state", "transition", "message"), [
    ("answered", "answer", "only an open query can be answered"),
    ("closed", "answer", "only an open query can be answered"),
    ("closed", "close", "already closed"),
    ("open", "reopen", "only an answered query can be reopened"),
    ("closed", "reopen", "only an answered query can be reopened"),
])
def test_invalid_transitions_are_refused_and_change_nothing(trial, state, transition, message):
    opened = open_one(trial)
    if state in ("answered", "closed"):
        queries.answer_query(trial.uow, trial.coordinator, opened.id, "answer")
    if state == "closed":
        queries.close_query(trial.uow, trial.monitor, opened.id)
    before = counts(trial.uow)
    with pytest.raises(Refused, match=message):
        if transition == "answer":
            queries.answer_query(trial.uow, trial.coordinator, opened.id, "again")
        elif transition == "close":
            queries.close_query(trial.uow, trial.monitor, opened.id, reason="again")
        else:
            queries.reopen_query(trial.uow, trial.monitor, opened.id, "again")
    assert counts(trial.uow) == before


def test_only_the_opener_closes_or_reopens_a_manual_query(trial):
    opened = open_one(trial)
    queries.answer_query(trial.uow, trial.coordinator, opened.id, "answer")
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="opened by someone else"):
        queries.close_query(trial.uow, trial.data_manager, opened.id)
    with pytest.raises(Forbidden, match="opened by someone else"):
        queries.reopen_query(trial.uow, trial.data_manager, opened.id, "no")
    assert counts(trial.uow) == before


def test_an_edit_check_query_is_closed_by_a_monitor_or_data_manager(trial):
    entry = data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL",
                                        {"hematology": {"anc": 9.0}}, today=TODAY, reason="re-run")
    query_id, = entry.queries_opened
    view, = [q for q in queries.list_queries(trial.uow, trial.data_manager, status="open")]
    assert (view.id, view.origin, view.edit_check_id, view.opened_by) == (query_id, "edit_check", "EC03", "edit check")
    queries.answer_query(trial.uow, trial.investigator, query_id, "Repeated: the count is right")
    assert queries.close_query(trial.uow, trial.data_manager, query_id).closed_by == "dm"


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_who_may_open_answer_and_close(trial, role):
    actor = trial.actors()[role]
    expected = {"open": {"monitor", "data-manager"}, "answer": {"investigator", "coordinator"},
                "close": {"monitor", "data-manager"}}
    before = counts(trial.uow)
    if role in expected["open"]:
        opened = open_one(trial, actor=actor)
    else:
        with pytest.raises(Forbidden):
            open_one(trial, actor=actor)
        assert counts(trial.uow) == before
        opened = open_one(trial)  # by the monitor
    before = counts(trial.uow)
    if role in expected["answer"]:
        queries.answer_query(trial.uow, actor, opened.id, "answer")
    else:
        with pytest.raises(Forbidden):
            queries.answer_query(trial.uow, actor, opened.id, "answer")
        assert counts(trial.uow) == before
        queries.answer_query(trial.uow, trial.coordinator, opened.id, "answer")
    before = counts(trial.uow)
    if role in expected["close"]:
        assert queries.close_query(trial.uow, actor, opened.id).status == "closed"
    else:
        with pytest.raises(Forbidden):
            queries.close_query(trial.uow, actor, opened.id)
        assert counts(trial.uow) == before


def test_another_site_neither_opens_answers_nor_sees(trial):
    opened = open_one(trial)
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        queries.answer_query(trial.uow, trial.other_coordinator, opened.id, "not mine")
    with pytest.raises(Forbidden, match="another site"):
        open_one(trial, subject=trial.other_subject)  # the monitor works at PKUPH
    assert counts(trial.uow) == before
    assert queries.list_queries(trial.uow, trial.other_coordinator) == []
    with pytest.raises(Forbidden):
        queries.list_queries(trial.uow, trial.other_coordinator, site_code="PKUPH")
    with pytest.raises(Forbidden):
        queries.list_queries(trial.uow, trial.statistician)
    central = open_one(trial, actor=trial.data_manager, subject=trial.other_subject)
    assert {q.id for q in queries.list_queries(trial.uow, trial.data_manager)} == {opened.id, central.id}
    assert [q.id for q in queries.list_queries(trial.uow, trial.data_manager, site_code="OTHER")] == [central.id]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda t: open_one(t, text="   "), InvalidInput, "text is required"),
    (lambda t: open_one(t, text="x" * 2001), InvalidInput, "longer than"),
    (lambda t: open_one(t, item="basophils"), NotFound, "no item"),
    (lambda t: open_one(t, item="wbc") and queries.open_query(t.uow, t.monitor, t.il2_subject, "TW1", "hematology",
                                                              "wbc", "where is it?"), NotFound, "no value"),
    (lambda t: queries.answer_query(t.uow, t.coordinator, 999, "x"), NotFound, "no query"),
    (lambda t: queries.answer_query(t.uow, t.coordinator, "1", "x"), InvalidInput, "whole number"),
    (lambda t: queries.list_queries(t.uow, t.monitor, status="pending"), InvalidInput, "status must be"),
])
def test_bad_input_is_refused(trial, call, error, message):
    with pytest.raises(error, match=message):
        call(trial)


def test_the_view_is_plain_data(trial):
    data = open_one(trial).to_dict()
    assert json.loads(json.dumps(data))["status"] == "open"
