"""Recording adverse events: CTCAE or free-text terms, checks, findings, revisions, permissions, site isolation."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from safety_support import GCV, IL2, counts, drugs, make_safety_trial, neutropenia, pneumonia_sae

from cmvtrial.errors import Forbidden, InvalidInput, NotFound
from cmvtrial.services import adverse_events as service
from cmvtrial.services.audit_verification import verify_audit

TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin, now):
    return make_safety_trial(uow, admin, now)


def test_a_ctcae_event_is_stored_with_its_code_wording_and_both_drug_assessments(trial):
    view = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(),
                                        today=TODAY)
    assert (view.term, view.meddra_code, view.ctcae_term, view.ctcae_version) == (
        "Neutrophil count decreased", "10029366", True, "5.0")
    assert view.grade == 3 and "<1.0 - 0.5" in view.grade_text
    assert [(d.drug, str(d.relatedness), str(d.action_taken)) for d in view.drugs] == [
        (IL2, "possible", "DOSE NOT CHANGED"), (GCV, "not_related", "DOSE NOT CHANGED")]
    assert (view.ae_number, view.subject, view.site_code, view.source) == (1, "S-001", "PKUPH", "manual")
    assert not view.serious and view.findings == ()
    with trial.uow.reading():
        event = trial.uow.audit_events.latest(1)[0]
    assert (event.action, event.entity_type, event.entity_id, event.site_id) == (
        "adverse_event.create", "adverse_event", str(view.id), trial.site_id)
    assert verify_audit(trial.uow).ok


def test_a_free_text_event_gets_the_general_grade_wording_and_no_code(trial):
    view = service.record_adverse_event(trial.uow, trial.coordinator, trial.subject_id,
                                        pneumonia_sae(verbatim="lobar pneumonia, right lower lobe"), today=TODAY)
    assert (view.term, view.verbatim, view.meddra_code, view.ctcae_term) == (
        "Pneumonia", "lobar pneumonia, right lower lobe", None, False)
    assert view.grade_text.startswith("Severe")
    assert view.serious and view.seriousness == ("hospitalisation",)
    assert view.awareness_time == datetime(2025, 3, 10, 8, tzinfo=UTC)


def test_numbers_count_per_subject(trial):
    first = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(), today=TODAY)
    second = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id,
                                          pneumonia_sae(), today=TODAY)
    other = service.record_adverse_event(trial.uow, trial.other_investigator, trial.other_subject_id,
                                         neutropenia(), today=TODAY)
    assert (first.ae_number, second.ae_number, other.ae_number) == (1, 2, 1)


def test_soft_findings_are_stored_and_returned_not_raised(trial):
    view = service.record_adverse_event(
        trial.uow, trial.investigator, trial.subject_id,
        pneumonia_sae(narrative=None, outcome="RECOVERED/RESOLVED"), today=TODAY)
    assert {f.code for f in view.findings} == {"serious_without_narrative", "ended_without_end_date"}
    stored = service.get_adverse_event(trial.uow, trial.monitor, view.id)
    assert stored.findings == view.findings


def test_a_control_arm_subject_gets_il2_filled_in_as_not_applicable(trial):
    data = neutropenia(drugs=[{"drug": GCV, "relatedness": "probable", "action_taken": "DRUG INTERRUPTED"}])
    view = service.record_adverse_event(trial.uow, trial.investigator, trial.control_subject_id, data, today=TODAY)
    assert {d.drug: (str(d.relatedness), str(d.action_taken)) for d in view.drugs} == {
        GCV: ("probable", "DRUG INTERRUPTED"), IL2: ("not_applicable", "NOT APPLICABLE")}
    assert view.subject == "PKUPH-002"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (neutropenia(start_date="2025-03-05", end_date="2025-03-01"), "end_date"),         # end before start
        (neutropenia(grade=5, outcome="NOT RECOVERED/NOT RESOLVED"), "outcome"),          # grade 5 without death
        (neutropenia(start_date="2025-04-01"), "start_date"),                              # in the future
        (neutropenia(grade=6), "grade"),
        (neutropenia(drugs=drugs()[:1]), "drugs"),                                         # ganciclovir not assessed
        (neutropenia(drugs=[*drugs(), {"drug": "aspirin", "relatedness": "unlikely",
                                       "action_taken": "DOSE NOT CHANGED"}]), "drugs"),
        (neutropenia(meddra_code="10000000"), "meddra_code"),                              # contradicts the term
        (pneumonia_sae(awareness_time=None), "awareness_time"),                            # SAE clock cannot start
        (neutropenia(outcome="BETTER"), "outcome"),
        (neutropenia(colour="blue"), "colour"),
        ({}, "term"),
    ],
)
def test_hard_problems_refuse_the_event_and_change_nothing(trial, data, field):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput) as raised:
        service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, data, today=TODAY)
    assert field in {p["location"].split(".")[0] for p in raised.value.details["problems"]}
    assert counts(trial.uow) == before


def test_every_hard_problem_is_listed_at_once(trial):
    with pytest.raises(InvalidInput) as raised:
        service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id,
                                     neutropenia(start_date="2025-03-05", end_date="2025-03-01", grade=5),
                                     today=TODAY)
    assert {p["location"] for p in raised.value.details["problems"]} >= {"end_date", "outcome", "grade"}


def test_a_statistician_cannot_create_events_and_nothing_changes(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="statistician"):
        service.record_adverse_event(trial.uow, trial.statistician, trial.subject_id, neutropenia(), today=TODAY)
    with pytest.raises(Forbidden):
        service.record_adverse_event(trial.uow, trial.monitor, trial.subject_id, neutropenia(), today=TODAY)
    assert counts(trial.uow) == before


def test_a_site_cannot_record_for_another_sites_subject(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        service.record_adverse_event(trial.uow, trial.investigator, trial.other_subject_id, neutropenia(),
                                     today=TODAY)
    assert counts(trial.uow) == before


def test_an_unknown_subject_is_not_found(trial):
    with pytest.raises(NotFound):
        service.record_adverse_event(trial.uow, trial.investigator, 9999, neutropenia(), today=TODAY)


def test_a_site_sees_only_its_own_events(trial):
    mine = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(), today=TODAY)
    theirs = service.record_adverse_event(trial.uow, trial.other_investigator, trial.other_subject_id,
                                          neutropenia(), today=TODAY)
    assert [v.id for v in service.list_adverse_events(trial.uow, trial.coordinator)] == [mine.id]
    assert [v.id for v in service.list_adverse_events(trial.uow, trial.data_manager)] == [mine.id, theirs.id]
    by_site = service.list_adverse_events(trial.uow, trial.data_manager, site_id=trial.other_site_id)
    assert [v.id for v in by_site] == [theirs.id]
    by_subject = service.list_adverse_events(trial.uow, trial.monitor, subject_id=trial.subject_id)
    assert [v.id for v in by_subject] == [mine.id]
    with pytest.raises(Forbidden):
        service.list_adverse_events(trial.uow, trial.coordinator, subject_id=trial.other_subject_id)
    with pytest.raises(Forbidden):
        service.list_adverse_events(trial.uow, trial.coordinator, site_id=trial.other_site_id)
    with pytest.raises(Forbidden):
        service.get_adverse_event(trial.uow, trial.investigator, theirs.id)
    with pytest.raises(Forbidden):
        service.list_adverse_events(trial.uow, trial.statistician)


def test_an_update_needs_a_reason_reruns_the_checks_and_is_audited(trial):
    view = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(), today=TODAY)
    before = counts(trial.uow)
    for changes, reason, error in [
        ({"grade": 4}, "  ", InvalidInput),                              # no reason
        ({"end_date": "2025-02-01"}, "typo", InvalidInput),              # end before start
        ({"grade": 3}, "no change", InvalidInput),                       # nothing changes
        ({}, "empty", InvalidInput),
    ]:
        with pytest.raises(error):
            service.update_adverse_event(trial.uow, trial.investigator, view.id, changes, reason=reason, today=TODAY)
    with pytest.raises(Forbidden):
        service.update_adverse_event(trial.uow, trial.other_investigator, view.id, {"grade": 4}, reason="x",
                                     today=TODAY)
    assert counts(trial.uow) == before

    updated = service.update_adverse_event(
        trial.uow, trial.investigator, view.id,
        {"grade": 4, "end_date": "2025-03-12", "outcome": "RECOVERED/RESOLVED"}, reason="worse on day 12, then resolved",
        today=TODAY)
    assert (updated.grade, updated.end_date, updated.outcome) == (4, date(2025, 3, 12), "RECOVERED/RESOLVED")
    assert "<0.5" in updated.grade_text and updated.updated_at is not None
    with trial.uow.reading():
        event = trial.uow.audit_events.latest(1)[0]
    assert (event.action, event.reason) == ("adverse_event.update", "worse on day 12, then resolved")
    assert '"ctcae_grade":3' in event.before and '"ctcae_grade":4' in event.after


def test_changing_the_term_refills_its_code(trial):
    view = service.record_adverse_event(trial.uow, trial.investigator, trial.subject_id, neutropenia(), today=TODAY)
    updated = service.update_adverse_event(trial.uow, trial.investigator, view.id,
                                           {"term": "Platelet count decreased"}, reason="miscoded", today=TODAY)
    assert (updated.term, updated.meddra_code) == ("Platelet count decreased", "10035528")

