"""The small service additions the web pages needed (issue 9): enrollment by site and arm, subject
search, a visit's stored values, the CMV-DNA series, one query, the form check and the CTCAE term.
Each checks role and site like every service, and the reading ones write nothing."""

from __future__ import annotations

from datetime import date

import pytest
from data_capture_support import HEMATOLOGY, RANDOMIZED_ON, cmv, counts, make_capture_trial

from cmvtrial.errors import Forbidden, InvalidInput, NotFound
from cmvtrial.services import data_entry, enrollment, queries, subjects, visit_data
from cmvtrial.services.protocol_in_force import check_form, ctcae_general_grades, ctcae_term

TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def test_enrollment_counts_randomized_subjects_by_site_and_arm_for_the_sites_a_user_sees(trial):
    everyone = enrollment.enrollment(trial.uow, trial.data_manager)
    assert (everyone.target, everyone.randomized) == (100, 3)
    by_site = {row.site_code: row for row in everyone.sites}
    assert by_site["PKUPH"].by_arm == {"il2_gcv": 1, "gcv": 1} and by_site["PKUPH"].screened == 3
    assert everyone.by_arm == {"il2_gcv": 2, "gcv": 1} and everyone.percent_of_target == pytest.approx(3.0)
    site = enrollment.enrollment(trial.uow, trial.coordinator)
    assert [row.site_code for row in site.sites] == ["PKUPH"] and site.randomized == 2
    assert site.arms  # the protocol is open label (masking none): arms are no secret
    assert enrollment.enrollment(trial.uow, trial.statistician).to_dict()["sites"][0]["site"] == "OTHER"


def test_subjects_are_found_by_part_of_a_number_and_a_wildcard_is_only_a_character(trial):
    found = subjects.list_subjects(trial.uow, trial.data_manager, search="s-00")
    assert sorted(view.screening_number for view in found) == ["S-001", "S-002", "S-003"]
    assert [v.screening_number for v in subjects.list_subjects(trial.uow, trial.coordinator, search="101")] == []
    assert subjects.list_subjects(trial.uow, trial.data_manager, search="%") == []
    assert subjects.list_subjects(trial.uow, trial.data_manager, search="_") == []
    assert [v.screening_number for v in subjects.list_subjects(trial.uow, trial.data_manager, search="r-s-001")] == [
        "S-001"]  # the subject number R-S-001
    with pytest.raises(InvalidInput) as error:
        subjects.list_subjects(trial.uow, trial.data_manager, search="x" * 65)
    assert error.value.details["field"] == "search"


def test_a_visits_stored_values_read_back_as_a_submission(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL",
                                {"hematology": {**HEMATOLOGY, "anc": "3100 cells/uL"}}, today=TODAY,
                                visit_date=RANDOMIZED_ON)
    before = counts(trial.uow)
    stored = visit_data.visit_values(trial.uow, trial.monitor, trial.il2_subject, "BL")
    assert (stored.visit, stored.status, stored.actual_date, stored.site_id) == ("BL", "done", RANDOMIZED_ON,
                                                                                trial.site_id)
    [form] = stored.form("hematology")
    assert form.values["anc"] == {"value": 3100, "unit": "/uL"}  # as entered, not as normalized
    assert form.status == "in_progress" and stored.form("vitals") == []
    empty = visit_data.visit_values(trial.uow, trial.coordinator, trial.il2_subject, "TW1")
    assert (empty.status, empty.forms) == (None, ())
    assert counts(trial.uow) == before
    with pytest.raises(Forbidden):
        visit_data.visit_values(trial.uow, trial.other_coordinator, trial.il2_subject, "BL")
    with pytest.raises(Forbidden):
        visit_data.visit_values(trial.uow, trial.statistician, trial.il2_subject, "BL")


def test_the_cmv_series_is_in_the_assays_unit_with_each_result_judged(trial):
    for visit, on, form in (("BL", RANDOMIZED_ON, cmv(RANDOMIZED_ON, 910, "IU/mL")),
                            ("TW1", date(2025, 3, 10), cmv(date(2025, 3, 10), result="not_detected"))):
        data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, visit, {"cmv_load": form},
                                    today=TODAY, visit_date=on)
    series = visit_data.cmv_series(trial.uow, trial.monitor, trial.il2_subject)
    assert series.unit == "copies/mL" and series.lloq == pytest.approx(150.7)
    assert [(p.study_day, p.load, p.negative) for p in series.points] == [(0, pytest.approx(1001.0), False),
                                                                          (7, 0.0, True)]
    assert series.end_of_treatment == date(2025, 3, 10)
    with pytest.raises(Forbidden):
        visit_data.cmv_series(trial.uow, trial.other_coordinator, trial.il2_subject)


def test_one_query_is_read_by_users_of_its_site_only(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL", {"hematology": HEMATOLOGY},
                                today=TODAY, visit_date=RANDOMIZED_ON)
    opened = queries.open_query(trial.uow, trial.monitor, trial.il2_subject, "BL", "hematology", "anc", "Confirm?")
    assert queries.get_query(trial.uow, trial.coordinator, opened.id).text == "Confirm?"
    with pytest.raises(Forbidden):
        queries.get_query(trial.uow, trial.other_coordinator, opened.id)
    with pytest.raises(Forbidden):
        queries.get_query(trial.uow, trial.statistician, opened.id)
    with pytest.raises(NotFound):
        queries.get_query(trial.uow, trial.coordinator, opened.id + 100)


def test_the_form_check_finds_what_data_entry_would_and_stores_nothing(trial):
    before = counts(trial.uow)
    entry = check_form(trial.uow, trial.coordinator, "hematology", {"wbc": 2, "anc": 3})
    assert [finding.check_id for finding in entry.findings] == ["EC03"] and "lymphocytes" in entry.missing_required
    with pytest.raises(InvalidInput) as refused:
        check_form(trial.uow, trial.coordinator, "vitals", {"weight_kg": 600})
    assert "hard limit 500 kg" in refused.value.message
    with pytest.raises(Forbidden):
        check_form(trial.uow, trial.monitor, "vitals", {"weight_kg": 60})
    assert counts(trial.uow) == before


def test_a_ctcae_term_is_found_by_a_synonym_and_free_text_is_not(trial):
    term = ctcae_term(trial.coordinator, "neutropenia")
    assert term is not None and term.term == "Neutrophil count decreased" and "0.5 x 10e9 /L" in term.grade_text(3)
    assert ctcae_term(trial.coordinator, "a strange feeling") is None
    assert set(ctcae_general_grades(trial.coordinator)) == {1, 2, 3, 4, 5}
