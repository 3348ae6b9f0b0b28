"""Lab values propose adverse events; the investigator confirms or dismisses; nothing is created silently."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safety_support import add_subject, counts, drugs, make_safety_trial, neutropenia

from cmvtrial.errors import Forbidden, InvalidInput, NotFound, OutOfRange, Refused, UnitError
from cmvtrial.services import adverse_events, lab_safety
from cmvtrial.services.audit_verification import verify_audit

TODAY = date(2025, 3, 14)
ANC = "751-8"  # LOINC: Neutrophils [#/volume] in Blood


@pytest.fixture
def trial(uow, admin, now):
    return make_safety_trial(uow, admin, now)


def review(trial, value, *, actor=None, on=date(2025, 3, 10), subject=None, term=ANC, unit="10^9/L", **limits):
    return lab_safety.review_lab_value(trial.uow, actor or trial.coordinator, subject or trial.subject_id, term,
                                       value, unit, observed_on=on, today=TODAY, **({"lln": 1.8} | limits))


def test_a_graded_value_stores_a_proposal_and_no_event(trial):
    result = review(trial, 0.8)
    assert result.outcome == "proposed" and result.grading.grade == 3
    proposal = result.proposal
    assert (proposal.action, proposal.term, proposal.meddra_code, proposal.grade, proposal.status) == (
        "new_event", "Neutrophil count decreased", "10029366", 3, "pending")
    assert (proposal.start_date, proposal.loinc, proposal.value, proposal.unit) == (date(2025, 3, 10), ANC, 0.8, "10*9/L")
    assert proposal.reasons and "<1.0 - 0.5" in proposal.grade_text
    assert adverse_events.list_adverse_events(trial.uow, trial.investigator) == []
    with trial.uow.reading():
        assert trial.uow.audit_events.latest(1)[0].action == "lab_safety_proposal.create"


def test_a_normal_value_proposes_nothing_and_stores_nothing(trial):
    before = counts(trial.uow)
    result = review(trial, 2.5)
    assert (result.outcome, result.grading.grade, result.proposal) == ("no_action", 0, None)
    assert counts(trial.uow) == before


def test_a_value_with_no_ctcae_term_is_not_graded(trial):
    before = counts(trial.uow)
    result = review(trial, 1200, term="29604-6", unit="IU/mL")  # a CMV-DNA code: CTCAE does not grade it
    assert (result.outcome, result.grading) == ("not_graded", None)
    assert counts(trial.uow) == before


def test_units_are_converted_before_grading(trial):
    result = review(trial, 800, unit="cells/uL", lln=1800)
    assert (result.grading.grade, result.proposal.grade) == (3, 3)


def test_terms_by_name_and_the_abnormal_baseline_rule(trial):
    result = review(trial, 130, term="ALT increased", unit="U/L", lln=None, uln=40, baseline=100)
    # baseline 100 > ULN 40 is abnormal: graded against the baseline, 130 < 1.5 x 100 is grade 0
    assert (result.outcome, result.grading.grade) == ("no_action", 0)
    result = review(trial, 130, term="ALT increased", unit="U/L", lln=None, uln=40)
    assert result.grading.grade == 2  # 130 > 3 x ULN


@pytest.mark.parametrize(
    ("term", "value", "unit", "limits", "error"),
    [
        ("Neutrophil count decreased", -1.0, "10^9/L", {}, OutOfRange),
        ("Neutrophil count decreased", 1.0, "furlongs", {}, UnitError),
        ("Neutrophil count decreased", 1.6, "10^9/L", {"lln": None}, InvalidInput),  # LLN decides here
        ("Neutropaenia typo", 1.0, "10^9/L", {}, InvalidInput),
        ("Injection site reaction", 1.0, "10^9/L", {}, InvalidInput),  # graded by the investigator
    ],
)
def test_bad_lab_input_is_refused_and_changes_nothing(trial, term, value, unit, limits, error):
    before = counts(trial.uow)
    with pytest.raises(error):
        review(trial, value, term=term, unit=unit, **limits)
    assert counts(trial.uow) == before


def test_a_future_lab_date_is_refused(trial):
    with pytest.raises(InvalidInput, match="future"):
        review(trial, 0.8, on=date(2025, 3, 20))


def test_who_may_review_and_where(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden):
        review(trial, 0.8, actor=trial.statistician)
    with pytest.raises(Forbidden):
        review(trial, 0.8, subject=trial.other_subject_id)
    with pytest.raises(NotFound):
        review(trial, 0.8, subject=9999)
    assert counts(trial.uow) == before


def test_a_worse_value_supersedes_the_pending_proposal_and_keeps_the_first_date(trial):
    first = review(trial, 1.2, on=date(2025, 3, 3)).proposal  # grade 2
    same = review(trial, 1.3, on=date(2025, 3, 5))           # grade 2 again: nothing new
    assert (same.outcome, same.proposal.id) == ("already_pending", first.id)
    worse = review(trial, 0.4, on=date(2025, 3, 7))           # grade 4
    assert worse.outcome == "proposed" and worse.superseded == (first.id,)
    assert (worse.proposal.grade, worse.proposal.start_date) == (4, date(2025, 3, 3))
    pending = lab_safety.list_proposals(trial.uow, trial.investigator)
    assert [p.id for p in pending] == [worse.proposal.id]
    every = lab_safety.list_proposals(trial.uow, trial.investigator, status=None)
    assert {p.id: p.status for p in every} == {first.id: "superseded", worse.proposal.id: "pending"}


def test_confirming_a_new_event_records_it_through_the_ae_checks(trial):
    proposal = review(trial, 0.8).proposal
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="outcome"):  # the investigator must complete the form
        lab_safety.confirm_proposal(trial.uow, trial.investigator, proposal.id, {"drugs": drugs()}, today=TODAY)
    with pytest.raises(InvalidInput, match="term"):
        lab_safety.confirm_proposal(trial.uow, trial.investigator, proposal.id,
                                    {"term": "Anemia", "drugs": drugs(), "outcome": "NOT RECOVERED/NOT RESOLVED"},
                                    today=TODAY)
    assert counts(trial.uow) == before

    decision = lab_safety.confirm_proposal(
        trial.uow, trial.investigator, proposal.id,
        {"drugs": drugs(gcv="probable", gcv_action="DRUG INTERRUPTED"), "outcome": "NOT RECOVERED/NOT RESOLVED"},
        reason="ANC 0.8 on ganciclovir", today=TODAY)
    event = decision.event
    assert (event.term, event.grade, event.start_date, event.source) == (
        "Neutrophil count decreased", 3, date(2025, 3, 10), "lab_grading")
    assert (decision.proposal.status, decision.proposal.adverse_event_id) == ("confirmed", event.id)
    with trial.uow.reading():
        actions = [e.action for e in trial.uow.audit_events.latest(2)]
    assert actions == ["lab_safety_proposal.confirm", "adverse_event.create"]
    assert verify_audit(trial.uow).ok


def test_a_worse_value_on_an_open_event_proposes_raising_its_grade(trial):
    event = adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id,
                                                neutropenia(grade=2), today=TODAY)
    assert review(trial, 1.2).outcome == "no_action"  # grade 2: the open event already says so
    proposal = review(trial, 0.4).proposal
    assert (proposal.action, proposal.adverse_event_id, proposal.current_grade, proposal.grade) == (
        "raise_grade", event.id, 2, 4)
    decision = lab_safety.confirm_proposal(trial.uow, trial.investigator, proposal.id, today=TODAY)
    assert (decision.event.id, decision.event.grade) == (event.id, 4)
    with trial.uow.reading():
        update = trial.uow.audit_events.latest(2)[1]
    assert update.action == "adverse_event.update" and f"proposal {proposal.id}" in update.reason


def test_a_stale_proposal_is_refused(trial):
    proposal = review(trial, 0.8).proposal
    adverse_events.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(),
                                        today=TODAY)
    before = counts(trial.uow)
    with pytest.raises(Refused, match="stale"):
        lab_safety.confirm_proposal(trial.uow, trial.investigator, proposal.id,
                                    {"drugs": drugs(), "outcome": "NOT RECOVERED/NOT RESOLVED"}, today=TODAY)
    assert counts(trial.uow) == before


def test_dismissing_needs_a_reason_and_a_decision_is_final(trial):
    proposal = review(trial, 0.8).proposal
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="reason"):
        lab_safety.dismiss_proposal(trial.uow, trial.investigator, proposal.id, reason=" ")
    for actor in (trial.coordinator, trial.statistician, trial.data_manager):
        with pytest.raises(Forbidden):
            lab_safety.dismiss_proposal(trial.uow, actor, proposal.id, reason="not an AE")
    with pytest.raises(Forbidden):
        lab_safety.dismiss_proposal(trial.uow, trial.other_investigator, proposal.id, reason="not an AE")
    assert counts(trial.uow) == before

    decision = lab_safety.dismiss_proposal(trial.uow, trial.investigator, proposal.id, reason="haemolysed sample")
    assert (decision.proposal.status, decision.proposal.decision_reason, decision.event) == (
        "dismissed", "haemolysed sample", None)
    after = counts(trial.uow)
    with pytest.raises(Refused, match="already dismissed"):
        lab_safety.confirm_proposal(trial.uow, trial.investigator, proposal.id, today=TODAY)
    with pytest.raises(Refused):
        lab_safety.dismiss_proposal(trial.uow, trial.investigator, proposal.id, reason="again")
    with pytest.raises(NotFound):
        lab_safety.dismiss_proposal(trial.uow, trial.investigator, 9999, reason="x")
    assert counts(trial.uow) == after


def test_proposals_are_listed_per_site(trial):
    mine = review(trial, 0.8).proposal
    theirs = review(trial, 0.8, actor=trial.other_investigator, subject=trial.other_subject_id).proposal
    assert [p.id for p in lab_safety.list_proposals(trial.uow, trial.monitor)] == [mine.id]
    assert [p.id for p in lab_safety.list_proposals(trial.uow, trial.data_manager)] == [mine.id, theirs.id]
    with pytest.raises(Forbidden):
        lab_safety.list_proposals(trial.uow, trial.investigator, subject_id=trial.other_subject_id)


def test_stage_lab_review_commits_or_rolls_back_with_the_callers_transaction(trial):
    before = counts(trial.uow)
    with trial.uow:
        staged = lab_safety.stage_lab_review(trial.uow, trial.coordinator, trial.subject_id, ANC, 0.8, "10^9/L",
                                             observed_on=date(2025, 3, 10), lln=1.8, today=TODAY)
        assert staged.outcome == "proposed"
        # no commit: the caller's lab value failed to save, say
    assert counts(trial.uow) == before
    with trial.uow:
        lab_safety.stage_lab_review(trial.uow, trial.coordinator, trial.subject_id, ANC, 0.8, "10^9/L",
                                    observed_on=date(2025, 3, 10), lln=1.8, today=TODAY)
        trial.uow.commit()
    assert counts(trial.uow)[1] == before[1] + 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.sampled_from([2.5, 1.6, 1.2, 0.8, 0.4]), min_size=1, max_size=5))
def test_the_pending_proposal_always_holds_the_worst_grade_and_the_first_abnormal_date(trial, now, values):
    """Law: with no open event, whatever the order of the values, exactly one proposal is pending once
    any value reaches grade 1; its grade is the worst seen and its start date the first abnormal one."""
    subject = add_subject(trial.uow, trial.admin, trial.site_id, f"H-{uuid.uuid4().hex[:8]}", now)
    days = [date(2025, 3, 1 + i) for i in range(len(values))]
    grades = [review(trial, value, on=day, subject=subject).grading.grade for value, day in zip(values, days)]
    pending = lab_safety.list_proposals(trial.uow, trial.investigator, subject_id=subject)
    if max(grades) == 0:
        assert pending == []
        return
    [proposal] = pending
    assert proposal.grade == max(grades)
    assert proposal.start_date == days[next(i for i, g in enumerate(grades) if g >= 1)]
