"""Screening in the system: registering candidates, screening data through the screening form,
eligibility judged on every change, screen failures, consent and the CONSORT screening log."""

from __future__ import annotations

import json
from datetime import date

import pytest
from screening_support import OTHER, SITE, ScreeningTrial, make_trial, record, snapshot_counts
from sqlalchemy import select

from cmvtrial.errors import AlreadyExists, Forbidden, InvalidInput, NotFound, OutOfRange, UnitError
from cmvtrial.services import screening, screening_log, subjects
from cmvtrial.services.audit_verification import verify_audit
from cmvtrial.store.tables import FormInstance, ItemValue, StudyEvent


@pytest.fixture
def trial(uow, admin) -> ScreeningTrial:
    return make_trial(uow, admin)


def items(uow, subject_id: int) -> dict[str, ItemValue]:
    with uow.reading():
        return {row.item_id: row for row in uow.session.scalars(select(ItemValue).where(ItemValue.subject_id == subject_id))}


def events_for(uow, entity_type: str, entity_id: int) -> list:
    with uow.reading():
        return uow.audit_events.for_entity(entity_type, str(entity_id))


# --- registering ------------------------------------------------------------------------------


def test_registering_creates_the_candidate_and_plans_the_screening_visit(trial, uow, protocol_id):
    view = subjects.register_subject(uow, trial.coordinator, " pkuph ", " s-001 ", reason="walk-in")
    assert (view.site_code, view.screening_number, view.status, view.subject_number) == (SITE, "S-001", "screening", None)
    with uow.reading():
        event = uow.session.scalar(select(StudyEvent).where(StudyEvent.subject_id == view.id))
        actions = [e.action for e in uow.audit_events.latest(2)]
    assert (event.visit_code, event.status) == ("SCR", "planned")
    assert actions == ["study_event.create", "subject.register"]
    assert events_for(uow, "subject", view.id)[0].reason == "walk-in"


def test_a_screening_number_is_unique_per_site_only(trial, uow):
    subjects.register_subject(uow, trial.investigator, SITE, "S001")
    subjects.register_subject(uow, trial.other_investigator, OTHER, "S001")
    before = snapshot_counts(uow)
    with pytest.raises(AlreadyExists, match="already has a candidate"):
        subjects.register_subject(uow, trial.coordinator, SITE, "s001")
    assert snapshot_counts(uow) == before


@pytest.mark.parametrize(
    ("who", "site", "number", "error"),
    [
        ("investigator", SITE, "", InvalidInput),
        ("investigator", SITE, "S 001", InvalidInput),
        ("investigator", SITE, "S:001", InvalidInput),
        ("investigator", SITE, "X" * 33, InvalidInput),
        ("investigator", "NOWHERE", "S001", NotFound),
        ("investigator", OTHER, "S001", Forbidden),
        ("monitor", SITE, "S001", Forbidden),
        ("admin", SITE, "S001", Forbidden),
        ("statistician", SITE, "S001", Forbidden),
    ],
)
def test_bad_registrations_are_refused_and_change_nothing(trial, uow, who, site, number, error):
    actor = {"investigator": trial.investigator, "monitor": trial.monitor, "admin": trial.admin,
             "statistician": trial.statistician}[who]
    before = snapshot_counts(uow)
    with pytest.raises(error):
        subjects.register_subject(uow, actor, site, number)
    assert snapshot_counts(uow) == before


def test_subjects_are_found_by_id_site_and_screening_number_or_subject_number(trial, uow):
    first = trial.candidate("S001")
    other = trial.candidate("S001", actor=trial.other_investigator, site=OTHER)
    assert subjects.resolve_subject(uow, trial.investigator, str(first)) == first
    assert subjects.resolve_subject(uow, trial.investigator, "pkuph:s001") == first
    assert subjects.resolve_subject(uow, trial.investigator, "S001") == first  # unique among the user's sites
    assert subjects.resolve_subject(uow, trial.other_investigator, "S001") == other
    with pytest.raises(InvalidInput, match="several sites"):
        subjects.resolve_subject(uow, trial.data_manager, "S001")
    with pytest.raises(NotFound):
        subjects.resolve_subject(uow, trial.investigator, "S999")
    with pytest.raises(NotFound):
        subjects.resolve_subject(uow, trial.investigator, "999")


# --- screening data ---------------------------------------------------------------------------


def test_screening_data_are_stored_as_the_screening_form_under_the_screening_visit(trial, uow):
    subject_id = trial.candidate("S001")
    entry = screening.enter_screening_data(uow, trial.investigator, subject_id, record())
    assert entry.eligibility.eligible is True and entry.subject.status == "eligible"
    assert entry.subject.eligibility == "eligible" and entry.missing_required == ()
    stored = items(uow, subject_id)
    assert len(stored) == len(entry.created) == 22  # 21 keys, the corticosteroid group as two items
    with uow.reading():
        form = uow.session.scalar(select(FormInstance).where(FormInstance.subject_id == subject_id))
        event = uow.session.get(StudyEvent, form.study_event_id)
    assert (form.form_id, form.status, event.visit_code, event.status) == ("screening", "complete", "SCR", "done")
    assert event.actual_date == date(2024, 5, 20)
    creatinine = stored["serum_creatinine"]
    assert (creatinine.entered_value, creatinine.entered_unit, creatinine.normalized_unit) == ("68", "umol/L", "mg/dL")
    assert creatinine.normalized_number == pytest.approx(68 / 88.4)
    assert (stored["alt_uln"].entered_value, stored["alt_uln"].entered_unit) == ("40", "U/L")  # a bare ULN takes ALT's unit
    assert stored["corticosteroid.drug"].normalized_text == "methylprednisolone"
    assert stored["other_infections"].normalized_text == "[]"
    assert {e.action for e in events_for(uow, "item_value", stored["sex"].id)} == {"item_value.create"}
    expected = {**record(), "alt_uln": {"value": 40, "unit": "U/L"}, "ast_uln": {"value": 40, "unit": "U/L"},
                "total_bilirubin_uln": {"value": 21, "unit": "umol/L"}}
    assert screening.subject_detail(uow, trial.investigator, subject_id).screening_data == expected
    assert verify_audit(uow).ok


def test_units_are_normalized_through_the_protocols_factors(trial, uow):
    subject_id = trial.candidate("S001")
    screening.enter_screening_data(uow, trial.investigator, subject_id, record("eligible_iu_mg_dl"))
    stored = items(uow, subject_id)
    data = record("eligible_iu_mg_dl")
    assert stored["cmv_dna"].entered_unit == "[IU]/mL" and stored["cmv_dna"].normalized_unit == "copies/mL"
    assert stored["cmv_dna"].normalized_number == pytest.approx(data["cmv_dna"]["value"] * 1.1)
    assert stored["serum_creatinine"].normalized_number == pytest.approx(data["serum_creatinine"]["value"])


def test_the_same_entry_again_changes_nothing_and_records_nothing(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    before = snapshot_counts(uow)
    entry = screening.enter_screening_data(uow, trial.investigator, subject_id, record())
    assert not entry.changed and snapshot_counts(uow) == before


def test_a_correction_needs_a_reason_and_is_audited_with_before_and_after(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    before = snapshot_counts(uow)
    with pytest.raises(InvalidInput, match="give a reason"):
        screening.enter_screening_data(uow, trial.investigator, subject_id, {"nyha_class": 3})
    with pytest.raises(InvalidInput, match="give a reason"):
        screening.enter_screening_data(uow, trial.investigator, subject_id, {"nyha_class": 3}, reason="   ")
    assert snapshot_counts(uow) == before

    entry = screening.enter_screening_data(uow, trial.coordinator, subject_id, {"nyha_class": 3}, reason="source: III")
    assert entry.updated == ("nyha_class",) and entry.created == entry.removed == ()
    row = items(uow, subject_id)["nyha_class"]
    assert (row.entered_value, row.version) == ("3", 2)
    update = events_for(uow, "item_value", row.id)[-1]
    assert update.action == "item_value.update" and update.reason == "source: III"
    assert json.loads(update.before)["entered_value"] == "1" and json.loads(update.after)["entered_value"] == "3"


def test_eligibility_is_judged_again_on_every_change(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    failed = screening.enter_screening_data(uow, trial.investigator, subject_id, {"nyha_class": 3}, reason="fix")
    assert (failed.subject.status, failed.subject.eligibility) == ("screen_failed", "not_eligible")
    assert [r["criterion"] for r in failed.subject.screen_failure_reasons] == ["EXC4a"]
    assert failed.subject.screen_failure_reasons[0]["values"] == {"nyha_class": 3}

    back = screening.enter_screening_data(uow, trial.investigator, subject_id, {"nyha_class": 1}, reason="fix back")
    assert (back.subject.status, back.subject.screen_failure_reasons) == ("eligible", None)

    removed = screening.enter_screening_data(uow, trial.investigator, subject_id, {"serum_creatinine": None},
                                             reason="sample haemolysed")
    assert removed.removed == ("serum_creatinine",)
    assert (removed.subject.status, removed.subject.eligibility) == ("screening", "undetermined")
    assert removed.missing_required == ("serum_creatinine",)
    assert "serum_creatinine" in removed.eligibility.missing
    with uow.reading():
        form = uow.session.scalar(select(FormInstance).where(FormInstance.subject_id == subject_id))
    assert form.status == "in_progress"


def test_a_removed_value_is_cleared_not_deleted_and_can_be_entered_again_without_a_reason(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    row_id = items(uow, subject_id)["weight_kg"].id
    screening.enter_screening_data(uow, trial.investigator, subject_id, {"weight_kg": None}, reason="wrong patient")
    cleared = items(uow, subject_id)["weight_kg"]
    assert (cleared.id, cleared.entered_value, cleared.normalized_number, cleared.version) == (row_id, None, None, 2)
    assert "weight_kg" not in screening.subject_detail(uow, trial.investigator, subject_id).screening_data
    again = screening.enter_screening_data(uow, trial.investigator, subject_id, {"weight_kg": 61})
    assert again.created == ("weight_kg",) and again.eligibility.eligible is True
    refilled = items(uow, subject_id)["weight_kg"]
    assert (refilled.id, refilled.entered_value, refilled.version) == (row_id, "61", 3)
    actions = [(e.action, e.reason) for e in events_for(uow, "item_value", row_id)]
    assert actions == [("item_value.create", None), ("item_value.clear", "wrong patient"), ("item_value.update", None)]


def test_no_corticosteroid_is_an_answer_distinct_from_a_missing_one(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    entry = screening.enter_screening_data(uow, trial.investigator, subject_id, {"corticosteroid": None}, reason="stopped")
    assert entry.removed == ("corticosteroid.daily_dose_mg", "corticosteroid.drug")
    assert entry.created == ("corticosteroid",) and entry.eligibility.eligible is True
    assert screening.subject_detail(uow, trial.investigator, subject_id).screening_data["corticosteroid"] is None
    again = screening.enter_screening_data(uow, trial.investigator, subject_id,
                                           {"corticosteroid": {"drug": "prednisone", "daily_dose_mg": 10}}, reason="x")
    assert again.removed == ("corticosteroid",) and set(again.created) == {"corticosteroid.drug", "corticosteroid.daily_dose_mg"}


def test_partial_entries_build_up_the_record(trial, uow):
    subject_id = trial.candidate("S001")
    data = record()
    first = {key: data[key] for key in list(data)[:10]}
    rest = {key: data[key] for key in list(data)[10:]}
    partial = screening.enter_screening_data(uow, trial.investigator, subject_id, first)
    assert partial.eligibility.eligible is None and partial.subject.status == "screening"
    done = screening.enter_screening_data(uow, trial.investigator, subject_id, rest)
    assert done.eligibility.eligible is True and done.updated == () and done.subject.status == "eligible"


@pytest.mark.parametrize(
    ("data", "error", "field"),
    [
        ({"weight_kg": "heavy"}, InvalidInput, "weight_kg"),
        ({"nyha": 2}, InvalidInput, "nyha"),
        ({"cmv_dna": {"value": 4200, "unit": "furlongs"}}, UnitError, "cmv_dna.unit"),
        ({"cmv_dna": {"value": 4200, "unit": "mg/dL"}}, UnitError, "cmv_dna.unit"),
        ({"weight_kg": -3}, InvalidInput, "weight_kg"),
        ({"weight_kg": 600}, OutOfRange, "weight_kg"),
        ({"screening_date": "1980-01-01"}, InvalidInput, "screening_date"),  # before the stored birth date
        ({"il2_allergy": "no"}, InvalidInput, "il2_allergy"),
    ],
)
def test_bad_screening_data_are_refused_and_change_nothing(trial, uow, data, error, field):
    subject_id = trial.eligible("S001", consent=False)
    before = snapshot_counts(uow)
    stored = {k: (v.entered_value, v.version) for k, v in items(uow, subject_id).items()}
    with pytest.raises(error) as raised:
        screening.enter_screening_data(uow, trial.investigator, subject_id, data, reason="a correction")
    assert raised.value.details.get("field") == field
    assert snapshot_counts(uow) == before
    assert {k: (v.entered_value, v.version) for k, v in items(uow, subject_id).items()} == stored


def test_screening_data_of_another_site_or_by_another_role_are_refused(trial, uow):
    subject_id = trial.candidate("S001")
    before = snapshot_counts(uow)
    for actor in (trial.other_investigator, trial.monitor, trial.admin, trial.data_manager):
        with pytest.raises(Forbidden):
            screening.enter_screening_data(uow, actor, subject_id, record())
    with pytest.raises(NotFound):
        screening.enter_screening_data(uow, trial.investigator, 999, record())
    with pytest.raises(InvalidInput):
        screening.enter_screening_data(uow, trial.investigator, subject_id, ["not", "an", "object"])  # type: ignore[arg-type]
    assert snapshot_counts(uow) == before


# --- screen failures and consent -----------------------------------------------------------------


def test_a_candidate_who_declines_is_a_screen_failure_that_data_cannot_undo(trial, uow):
    subject_id = trial.eligible("S001", consent=False)
    view = screening.record_screen_failure(uow, trial.coordinator, subject_id, "declined", "does not want injections")
    assert view.status == "screen_failed"
    assert view.screen_failure_reasons == [{"category": "declined", "detail": "does not want injections"}]
    entry = screening.enter_screening_data(uow, trial.investigator, subject_id, {"nyha_class": 2}, reason="update")
    assert entry.subject.status == "screen_failed" and entry.eligibility.eligible is True


@pytest.mark.parametrize(("category", "detail", "error"), [("bored", "x", InvalidInput), ("other", "  ", InvalidInput)])
def test_bad_screen_failures_are_refused(trial, uow, category, detail, error):
    subject_id = trial.candidate("S001")
    before = snapshot_counts(uow)
    with pytest.raises(error):
        screening.record_screen_failure(uow, trial.investigator, subject_id, category, detail)
    assert snapshot_counts(uow) == before


def test_consent_is_recorded_once_and_changed_only_with_a_reason(trial, uow, now):
    subject_id = trial.eligible("S001", consent=False)
    view = screening.record_consent(uow, trial.coordinator, subject_id, date(2024, 5, 18))
    assert view.consent_date == date(2024, 5, 18)
    before = snapshot_counts(uow)
    assert screening.record_consent(uow, trial.coordinator, subject_id, date(2024, 5, 18)).consent_date == date(2024, 5, 18)
    with pytest.raises(InvalidInput, match="reason"):
        screening.record_consent(uow, trial.coordinator, subject_id, date(2024, 5, 17))
    assert snapshot_counts(uow) == before
    screening.record_consent(uow, trial.coordinator, subject_id, date(2024, 5, 17), reason="date misread")
    actions = [e.action for e in events_for(uow, "subject", subject_id)]
    assert actions[-2:] == ["consent.record", "consent.update"]


@pytest.mark.parametrize(
    ("when", "error"),
    [(date(2030, 1, 1), InvalidInput), (date(1980, 1, 1), InvalidInput), ("2024-05-18", InvalidInput)],
)
def test_impossible_consent_dates_are_refused(trial, uow, when, error):
    subject_id = trial.eligible("S001", consent=False)
    before = snapshot_counts(uow)
    with pytest.raises(error):
        screening.record_consent(uow, trial.investigator, subject_id, when)  # type: ignore[arg-type]
    for actor in (trial.other_investigator, trial.monitor):
        with pytest.raises(Forbidden):
            screening.record_consent(uow, actor, subject_id, date(2024, 5, 18))
    assert snapshot_counts(uow) == before


# --- the screening log ----------------------------------------------------------------------------


def test_the_screening_log_counts_the_consort_boxes_per_site(trial, uow):
    trial.eligible("S001")
    trial.eligible("S002", data={**record(), "nyha_class": 3})
    trial.eligible("S003", data={**record(), "nyha_class": 4, "il2_allergy": True})
    declined = trial.eligible("S004")
    screening.record_screen_failure(uow, trial.investigator, declined, "declined", "moved away")
    trial.candidate("S005")
    trial.eligible("T001", site=OTHER)

    log = screening_log.screening_log(uow, trial.data_manager)
    assert log.site_code is None and len(log.entries) == 6
    assert log.counts_by_site[SITE].to_dict() == {
        "assessed_for_eligibility": 5,
        "excluded": 3,
        "not_meeting_eligibility_criteria": 2,
        "declined_to_participate": 1,
        "other_reasons": 0,
        "excluded_by_criterion": {"EXC3": 1, "EXC4a": 2},
        "randomized": 0,
        "still_in_screening": 2,
    }
    assert log.counts_by_site[OTHER].assessed == 1 and log.counts.assessed == 6
    assert [e.screening_date for e in log.entries if e.subject.screening_number == "S001"] == [date(2024, 5, 20)]

    own = screening_log.screening_log(uow, trial.investigator)
    assert own.site_code == SITE and {e.subject.site_code for e in own.entries} == {SITE}
    with pytest.raises(Forbidden):
        screening_log.screening_log(uow, trial.investigator, site_code=OTHER)
    with pytest.raises(NotFound):
        screening_log.screening_log(uow, trial.data_manager, site_code="NOWHERE")


def test_subjects_are_listed_and_shown_within_the_users_sites(trial, uow):
    mine = trial.eligible("S001")
    theirs = trial.candidate("T001", actor=trial.other_investigator, site=OTHER)
    assert [v.id for v in subjects.list_subjects(uow, trial.investigator)] == [mine]
    assert {v.id for v in subjects.list_subjects(uow, trial.data_manager)} == {mine, theirs}
    assert [v.id for v in subjects.list_subjects(uow, trial.data_manager, status="eligible")] == [mine]
    detail = screening.subject_detail(uow, trial.monitor, mine)
    assert detail.eligibility.eligible is True and detail.allocation is None
    with pytest.raises(Forbidden):
        screening.subject_detail(uow, trial.investigator, theirs)
    with pytest.raises(Forbidden):
        subjects.list_subjects(uow, trial.statistician)
    with pytest.raises(Forbidden):
        subjects.list_subjects(uow, trial.investigator, site_code=OTHER)
