"""Entering visit data: stored as entered and normalized, hard limits refuse, soft limits and edit
checks open queries, changes need a reason, the stop rule ends treatment; bad input changes nothing."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from data_capture_support import HEMATOLOGY, PASSWORD, RANDOMIZED_ON, cmv, counts, make_capture_trial
from sqlalchemy import select

from cmvtrial.errors import Forbidden, InvalidInput, NotFound, OutOfRange, Refused, UnitError
from cmvtrial.services import data_entry, queries, signatures, visits
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.store.tables import AuditEvent, ItemValue, LabSafetyProposal, StudyEvent, Subject

TODAY = date(2025, 3, 14)
TW1 = RANDOMIZED_ON + timedelta(days=7)


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def enter(trial, visit, forms, *, actor=None, subject=None, today=TODAY, **options):
    return data_entry.enter_visit_data(trial.uow, actor or trial.coordinator, subject or trial.il2_subject, visit,
                                       forms, today=today, **options)


def stored(trial, item_id, form_id=None):
    with trial.uow.reading():
        query = select(ItemValue).where(ItemValue.item_id == item_id, ItemValue.subject_id == trial.il2_subject)
        return list(trial.uow.session.scalars(query))


def audit_actions(trial):
    with trial.uow.reading():
        return [event.action for event in trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence))]


def test_values_are_stored_as_entered_and_normalized(trial):
    result = enter(trial, "BL", {
        "hematology": {**HEMATOLOGY, "hemoglobin": "12.8 g/dL", "anc": {"value": 3100, "unit": "cells/uL"}},
        "chemistry": {"serum_creatinine": {"value": 88.4, "unit": "umol/L"}},
        "cmv_load": cmv(RANDOMIZED_ON, 1000, "IU/mL"),
    }, visit_date=RANDOMIZED_ON)
    assert result.changed and result.visit == "BL" and result.visit_date == RANDOMIZED_ON
    hemoglobin, = stored(trial, "hemoglobin")
    assert (hemoglobin.entered_value, hemoglobin.entered_unit, hemoglobin.normalized_number,
            hemoglobin.normalized_unit) == ("12.8", "g/dL", 128.0, "g/L")
    anc, = stored(trial, "anc")
    assert (anc.entered_value, anc.entered_unit, anc.normalized_number) == ("3100", "/uL", 3.1)
    creatinine, = stored(trial, "serum_creatinine")
    assert (creatinine.entered_unit, creatinine.normalized_number, creatinine.normalized_unit) == ("umol/L", 1.0, "mg/dL")
    load, = stored(trial, "cmv_dna")
    assert (load.entered_value, load.entered_unit, load.normalized_number) == ("1000", "[IU]/mL", 1100.0)
    assert (load.entered_by_user_id, load.entered_at.date(), load.version) == (trial.coordinator.user_id,
                                                                               date(2025, 3, 14), 1)
    assert verify_audit(trial.uow, trial.admin).ok


def test_a_value_outside_its_hard_limits_is_refused_naming_the_limit_and_changes_nothing(trial):
    before = counts(trial.uow)
    with pytest.raises(OutOfRange, match="hard limit 100 %") as refused:
        enter(trial, "BL", {"lymphocyte_subsets": {"nk_pct": 140}, "hematology": HEMATOLOGY})
    assert refused.value.details["limit"] == 100
    assert counts(trial.uow) == before


def test_every_problem_of_every_form_is_listed_and_nothing_is_stored(trial):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput) as refused:
        enter(trial, "BL", {"hematology": {**HEMATOLOGY, "platelets": "many"},
                            "vitals": {"weight_kg": {"value": 60, "unit": "parsec"}}})
    locations = [problem["location"] for problem in refused.value.details["problems"]]
    assert locations == ["platelets", "weight_kg"]
    assert counts(trial.uow) == before


@pytest.mark.parametrize(("visit", "forms", "error", "message"), [
    ("BL", {"sledai_form": {}}, InvalidInput, "not collected at BL"),
    ("TW1", {"sledai": {"sledai_2k_total": 2}}, InvalidInput, "not collected at TW1"),
    ("SCR", {"screening": {}}, InvalidInput, "screening enter"),
    ("XX9", {"hematology": HEMATOLOGY}, InvalidInput, "not a visit"),
    ("FU3M", {"vitals": {"weight_kg": 60}}, Refused, "has not reached"),
    ("TW9", {"vitals": {"weight_kg": 60}}, NotFound, "not in the calendar"),
    ("BL", {"hematology": {**HEMATOLOGY, "basophils": 1}}, InvalidInput, "not an item"),
    ("BL", {"hematology": {**HEMATOLOGY, "anc": {"value": 1, "unit": "mg/dL"}}}, UnitError, "cannot be given in"),
    ("BL", {}, InvalidInput, "at least one form"),
    ("BL", {"hematology": [HEMATOLOGY]}, InvalidInput, "must be an object"),
    ("BL", {"cmv_load": cmv(TODAY + timedelta(days=1))}, InvalidInput, "after today"),
])
def test_bad_input_is_refused_and_changes_nothing(trial, visit, forms, error, message):
    before = counts(trial.uow)
    with pytest.raises(error, match=message):
        enter(trial, visit, forms, visit_date=RANDOMIZED_ON if visit == "BL" else None)
    assert counts(trial.uow) == before


@pytest.mark.parametrize(("options", "message"), [
    ({"visit_date": TODAY + timedelta(days=1)}, "after today"),
    ({"visit_date": RANDOMIZED_ON - timedelta(days=1)}, "before randomization"),
    ({"today": "2025-03-14"}, "today must be a date"),
    ({"complete": ["chemistry"]}, "not submitted"),
])
def test_bad_dates_and_options_are_refused(trial, options, message):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match=message):
        enter(trial, "BL", {"hematology": HEMATOLOGY}, **options)
    assert counts(trial.uow) == before


def test_a_subject_not_yet_randomized_has_no_visit_data(trial):
    with pytest.raises(Refused, match="not randomized"):
        enter(trial, "BL", {"hematology": HEMATOLOGY}, subject=trial.screening_subject)


def test_soft_limits_and_edit_checks_open_queries_once_and_a_correction_closes_them(trial):
    result = enter(trial, "BL", {"hematology": {**HEMATOLOGY, "anc": 6.0, "platelets": 1500}},
                   visit_date=RANDOMIZED_ON)
    kinds = sorted((finding.kind, finding.check_id) for form in result.forms for finding in form.findings)
    assert kinds == [("edit_check", "EC03"), ("soft_limit", None)]
    assert len(result.queries_opened) == 2
    listed = {(query.edit_check_id, query.item, query.status) for query in queries.list_queries(trial.uow, trial.monitor)}
    assert listed == {("EC03", "anc", "open"), ("soft_limit", "platelets", "open")}
    again = enter(trial, "BL", {"hematology": {"lymphocytes": 1.5}}, reason="lab re-run")
    assert again.queries_opened == () and again.queries_closed == ()
    fixed = enter(trial, "BL", {"hematology": {"anc": 3.0}}, reason="transcription error")
    assert len(fixed.queries_closed) == 1
    by_check = {query.edit_check_id: query for query in queries.list_queries(trial.uow, trial.monitor)}
    assert (by_check["EC03"].status, by_check["EC03"].closed_by) == ("closed", "system")
    assert by_check["soft_limit"].status == "open"


def test_changing_a_saved_value_needs_a_reason_and_the_audit_keeps_old_and_new(trial):
    enter(trial, "BL", {"hematology": HEMATOLOGY}, visit_date=RANDOMIZED_ON)
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="give a reason"):
        enter(trial, "BL", {"hematology": {"platelets": 190}})
    with pytest.raises(InvalidInput, match="give a reason"):
        enter(trial, "BL", {"hematology": {"platelets": None}})
    assert counts(trial.uow) == before
    result = enter(trial, "BL", {"hematology": {"platelets": 190}}, reason="corrected from the lab report")
    assert result.forms[0].updated == ("platelets",)
    row, = stored(trial, "platelets")
    assert (row.entered_value, row.version) == ("190", 2)
    with trial.uow.reading():
        event = trial.uow.audit_events.for_entity("item_value", str(row.id))[-1]
    assert event.action == "item_value.update" and event.reason == "corrected from the lab report"
    assert json.loads(event.before)["entered_value"] == "210" and json.loads(event.after)["entered_value"] == "190"
    removed = enter(trial, "BL", {"hematology": {"platelets": None}}, reason="wrong patient's sample")
    assert removed.forms[0].removed == ("platelets",) and stored(trial, "platelets") == []


def test_resubmitting_what_is_stored_changes_nothing(trial):
    forms = {"hematology": {**HEMATOLOGY, "hemoglobin": "12.8 g/dL"}, "cmv_load": cmv(RANDOMIZED_ON, 900, "IU/mL")}
    enter(trial, "BL", forms, visit_date=RANDOMIZED_ON)
    before = counts(trial.uow)
    result = enter(trial, "BL", forms)
    assert not result.changed
    assert counts(trial.uow) == before


def test_a_form_is_complete_only_with_its_required_items(trial):
    before = counts(trial.uow)
    partial = {key: value for key, value in HEMATOLOGY.items() if key != "platelets"}
    with pytest.raises(InvalidInput, match="required item.*platelets"):
        enter(trial, "BL", {"hematology": partial}, complete=True)
    assert counts(trial.uow) == before
    saved = enter(trial, "BL", {"hematology": partial}, visit_date=RANDOMIZED_ON)
    assert (saved.forms[0].status, saved.forms[0].missing_required) == ("in_progress", ("platelets",))
    done = enter(trial, "BL", {"hematology": {"platelets": 200}}, complete=True)
    assert done.forms[0].status == "complete"


def test_a_repeating_form_takes_a_list(trial):
    steroids = [{"drug": "prednisone", "daily_dose_mg": 20, "start_date": "2025-01-10"},
                {"drug": "methylprednisolone", "daily_dose_mg": {"value": 500, "unit": "mg"},
                 "start_date": "2025-02-01", "stop_date": "2025-02-03"}]
    result = enter(trial, "BL", {"concomitant_corticosteroid": steroids}, visit_date=RANDOMIZED_ON, complete=True)
    assert [(form.form_id, form.form_repeat, form.status) for form in result.forms] == [
        ("concomitant_corticosteroid", 0, "complete"), ("concomitant_corticosteroid", 1, "complete")]
    with pytest.raises(InvalidInput, match="EC06"):
        enter(trial, "BL", {"concomitant_corticosteroid": [{}, {"stop_date": "2025-01-01"}]}, reason="x")


def test_a_result_outside_the_window_is_kept_and_flagged(trial):
    late = TW1 + timedelta(days=3)  # window TW1 is day 7 +- 2
    result = enter(trial, "TW1", {"cmv_load": cmv(late)}, visit_date=late)
    assert result.deviation and "1 day(s) after its window" in result.deviation
    with trial.uow.reading():
        event = trial.uow.session.scalar(select(StudyEvent).where(StudyEvent.visit_code == "TW",
                                                                  StudyEvent.subject_id == trial.il2_subject))
        assert (event.actual_date, event.status) == (late, "done")
    assert "study_event.deviation" in audit_actions(trial)
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=TODAY)
    assert calendar.calendar.visit("TW", 1).out_of_window and "TW1" in calendar.deviations


def test_a_sample_date_outside_the_window_is_flagged_too(trial):
    result = enter(trial, "TW1", {"cmv_load": cmv(TW1 - timedelta(days=4))}, visit_date=TW1)
    assert "outside the window of TW1" in result.deviation


def test_the_first_negative_cmv_dna_ends_treatment_cancels_and_schedules(trial):
    enter(trial, "BL", {"cmv_load": cmv(RANDOMIZED_ON, 40000)}, visit_date=RANDOMIZED_ON)
    positive = enter(trial, "TW1", {"cmv_load": cmv(TW1, 1200)}, visit_date=TW1)
    assert positive.end_of_treatment is None
    today = TW1 + timedelta(days=14)
    # TW2 was planned (a stored event) before the negative result of TW3 arrives
    visits.record_visit(trial.uow, trial.coordinator, trial.il2_subject, "TW2", today=today, on_date=TW1 + timedelta(7))
    with trial.uow:
        subject = trial.uow.subjects.locked(trial.il2_subject)
        ctx = visits.treatment_context(trial.uow, subject)
        events = visits.stored_events(trial.uow, subject.id)
        calendar = visits.calendar_of(ctx, events, today=today, through=today + timedelta(days=14))
        visits.ensure_event(trial.uow, trial.admin, ctx, events, calendar.visit("TW", 4))
        trial.uow.commit()
    negative = enter(trial, "TW3", {"cmv_load": cmv(TW1 + timedelta(14), 120, "IU/mL")}, visit_date=TW1 + timedelta(14),
                     today=today)
    eot = negative.end_of_treatment
    assert eot is not None and (eot.before, eot.after) == (None, TW1 + timedelta(days=14))
    assert (eot.cancelled, eot.scheduled) == (("TW4",), ("FU3M",))
    with trial.uow.reading():
        subject = trial.uow.session.get(Subject, trial.il2_subject)
        assert (subject.end_of_treatment_date, subject.status) == (TW1 + timedelta(days=14), "in_follow_up")
        assert "stop rule" in subject.end_of_treatment_reason
    calendar = visits.subject_calendar(trial.uow, trial.coordinator, trial.il2_subject, today=today).calendar
    assert calendar.visit("TW", 3).end_of_treatment and calendar.visit("TW", 4).status == "cancelled"
    assert calendar.visit("FU3M").target_date == TW1 + timedelta(days=14 + 90)
    assert {"subject.end_of_treatment", "study_event.cancel"} <= set(audit_actions(trial))
    with pytest.raises(Refused, match="cancelled"):
        enter(trial, "TW4", {"vitals": {"weight_kg": 60}}, today=today)
    # a correction that makes the result positive withdraws the end of treatment and reinstates TW4
    undone = enter(trial, "TW3", {"cmv_load": {"result": "quantified", "cmv_dna": {"value": 5000, "unit": "IU/mL"}}},
                   today=today, reason="result was misread")
    assert undone.end_of_treatment is not None and undone.end_of_treatment.after is None
    assert undone.end_of_treatment.reinstated == ("TW4",)
    with trial.uow.reading():
        assert trial.uow.session.get(Subject, trial.il2_subject).status == "on_treatment"
    assert verify_audit(trial.uow, trial.admin).ok


def test_a_changed_visit_invalidates_its_signature_and_says_so(trial):
    enter(trial, "BL", {"hematology": HEMATOLOGY}, visit_date=RANDOMIZED_ON, complete=True)
    signatures.sign_visit(trial.uow, trial.investigator, trial.il2_subject, "BL", password=PASSWORD)
    result = enter(trial, "BL", {"hematology": {"wbc": 5.4}}, reason="typo")
    assert len(result.signatures_invalidated) == 1
    assert "no longer valid" in result.signatures_invalidated[0] and "hematology.wbc" in result.signatures_invalidated[0]


def test_a_lab_value_with_its_uln_goes_to_the_safety_review(trial):
    result = enter(trial, "BL", {"chemistry": {"alt": 300, "alt_uln": 40}}, visit_date=RANDOMIZED_ON)
    assert any("Alanine aminotransferase increased" in note for note in result.lab_reviews)
    alt, = stored(trial, "alt")
    with trial.uow.reading():
        proposal = trial.uow.session.scalar(select(LabSafetyProposal))
        assert (proposal.grade, proposal.status, proposal.observed_on) == (3, "pending", RANDOMIZED_ON)
        assert proposal.item_value_id == alt.id
    assert any("cannot be graded" in note for note in
               enter(trial, "BL", {"chemistry": {"ast": 30}}).labs_not_graded)


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_who_may_enter_data(trial, role):
    allowed = {"investigator", "coordinator"}
    actor = trial.actors()[role]
    before = counts(trial.uow)
    if role in allowed:
        assert enter(trial, "BL", {"hematology": HEMATOLOGY}, actor=actor, visit_date=RANDOMIZED_ON).changed
        return
    with pytest.raises(Forbidden):
        enter(trial, "BL", {"hematology": HEMATOLOGY}, actor=actor, visit_date=RANDOMIZED_ON)
    assert counts(trial.uow) == before


@pytest.mark.parametrize("who", ["other_investigator", "other_coordinator"])
def test_site_staff_cannot_touch_another_sites_subject(trial, who):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        enter(trial, "BL", {"hematology": HEMATOLOGY}, actor=getattr(trial, who), visit_date=RANDOMIZED_ON)
    assert counts(trial.uow) == before
    assert enter(trial, "BL", {"hematology": HEMATOLOGY}, actor=getattr(trial, who), subject=trial.other_subject,
                 visit_date=RANDOMIZED_ON).changed


def test_the_visit_file_format_is_checked(trial):
    parsed = data_entry.parse_visit_submission({"visit": "BL", "date": "2025-03-03", "forms": {"vitals": {}},
                                                "complete": ["vitals"]})
    assert (parsed.visit, parsed.visit_date, parsed.complete) == ("BL", RANDOMIZED_ON, ("vitals",))
    for bad, message in [([], "JSON object"), ({"forms": {}}, '"forms"'), ({"forms": {"x": {}}, "date": "3/3/25"},
                         '"date"'), ({"forms": {"x": {}}, "extra": 1}, "unknown key"),
                         ({"forms": {"x": {}}, "complete": "yes"}, '"complete"')]:
        with pytest.raises(InvalidInput, match=message):
            data_entry.parse_visit_submission(bad)


def test_the_sledai_total_is_computed_from_its_descriptors_and_follows_a_correction(trial):
    from cmvtrial.services.protocol_versions import protocol_of_version

    with trial.uow.reading():
        protocol = protocol_of_version(trial.uow, trial.uow.trial.current().protocol_version_id)
    assert protocol.id == "sle-cmv-il2"  # the SLE protocol has the SLEDAI-2K form
    names = [item.id for item in protocol.form("sledai").items if item.type == "boolean"]
    ticks = dict.fromkeys(names, False) | {"seizure": True, "assessment_date": "2025-03-03"}
    first = enter(trial, "BL", {"sledai": ticks}, visit_date=RANDOMIZED_ON, complete=True)
    assert "sledai_2k_total" in first.forms[0].created
    total, = stored(trial, "sledai_2k_total")
    assert (total.normalized_number, total.entered_value) == (8, "8")
    corrected = enter(trial, "BL", {"sledai": {"rash": True}}, reason="rash seen on photos")
    assert set(corrected.forms[0].updated) == {"rash", "sledai_2k_total"}
    total, = stored(trial, "sledai_2k_total")
    assert (total.normalized_number, total.version) == (10, 2)
    with pytest.raises(InvalidInput, match="disagrees with 10"):
        enter(trial, "BL", {"sledai": {"sledai_2k_total": 12}}, reason="x")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anc=st.floats(min_value=0, max_value=40, allow_nan=False, allow_infinity=False),
       per_microlitre=st.booleans(), platelets=st.integers(min_value=0, max_value=2000),
       hemoglobin=st.floats(min_value=1, max_value=25, allow_nan=False, allow_infinity=False))
def test_what_is_stored_reads_back_exactly(trial, anc, per_microlitre, platelets, hemoglobin):
    """Any value in any accepted unit, once stored, re-submits as "nothing changed": the stored entered
    value and unit reproduce the same normalized value (the merge re-checks whole forms from them)."""
    forms = {"hematology": {"wbc": 50, "lymphocytes": 0.1, "platelets": platelets,
                            "anc": {"value": anc * 1000, "unit": "cells/uL"} if per_microlitre else anc,
                            "hemoglobin": {"value": hemoglobin, "unit": "g/dL"}}}
    enter(trial, "BL", forms, visit_date=RANDOMIZED_ON, reason="property test")
    again = enter(trial, "BL", forms)
    assert not again.changed
