"""Recording administrations and holds: what is stored, what is refused (a drug the arm does not
get, a dose after end of treatment, bad input), and who may record."""

from __future__ import annotations

import json
from datetime import date

import pytest
from data_capture_support import GCV, HEMATOLOGY, IL2, RANDOMIZED_ON, cmv, counts, make_capture_trial
from sqlalchemy import select

from cmvtrial.errors import AlreadyExists, DrugNotInArm, Forbidden, InvalidInput, NotFound, OutsideTreatmentPeriod, UnitError
from cmvtrial.services import data_entry, dosing_records
from cmvtrial.store.tables import AuditEvent, DoseAdministration, Subject

TODAY = date(2025, 3, 14)


@pytest.fixture
def trial(uow, admin):
    return make_capture_trial(uow, admin)


def il2(**changes):
    return {"drug": IL2, "dose": 1, "unit": "MIU", "route": "subcutaneous", "date": "2025-03-05",
            "given_by": "Nurse Li", **changes}


def gcv(**changes):
    return {"drug": GCV, "dose": 300, "unit": "mg", "route": "intravenous", "time": "2025-03-05T09:30:00+08:00",
            "given_by": "Nurse Li", **changes}


def record(trial, data, *, actor=None, subject=None, today=TODAY):
    return dosing_records.record_administration(trial.uow, actor or trial.coordinator, subject or trial.il2_subject,
                                                data, today=today)


def test_an_administration_is_stored_with_who_when_and_how(trial):
    view = record(trial, gcv())
    assert (view.drug, view.status, view.dose, view.unit, view.route, view.date, view.study_day) == (
        GCV, "given", 300.0, "mg", "intravenous", date(2025, 3, 5), 2)
    assert view.time.utcoffset() is not None and view.given_by == "Nurse Li" and view.recorded_by == "coord"
    with trial.uow.reading():
        row = trial.uow.session.scalar(select(DoseAdministration))
        assert (row.administered_at.hour, row.recorded_by_user_id) == (1, trial.coordinator.user_id)  # 09:30 +08 in UTC
        subject = trial.uow.session.get(Subject, trial.il2_subject)
        assert subject.status == "on_treatment"
        actions = [e.action for e in trial.uow.session.scalars(select(AuditEvent).order_by(AuditEvent.sequence))][-2:]
    assert actions == ["dose.given", "subject.start_treatment"]
    listed, = dosing_records.list_administrations(trial.uow, trial.monitor, trial.il2_subject)
    assert listed.id == view.id and json.loads(json.dumps(listed.to_dict()))["drug"] == GCV


def test_a_hold_needs_a_reason_and_records_no_amount(trial):
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="needs a reason"):
        record(trial, {"drug": GCV, "status": "held", "date": "2025-03-05"})
    assert counts(trial.uow) == before
    view = record(trial, {"drug": GCV, "status": "held", "date": "2025-03-05", "reason": "ANC 0.4 x 10^9/L"})
    assert (view.status, view.dose, view.reason) == ("held", None, "ANC 0.4 x 10^9/L")
    with trial.uow.reading():
        assert trial.uow.session.get(Subject, trial.il2_subject).status == "randomized"  # nothing given yet


def test_a_drug_the_arm_does_not_get_is_refused(trial):
    before = counts(trial.uow)
    with pytest.raises(DrugNotInArm, match="does not receive interleukin-2"):
        record(trial, il2(), subject=trial.gcv_subject)
    assert counts(trial.uow) == before


def test_a_dose_after_end_of_treatment_is_refused(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "TW1",
                                {"cmv_load": cmv(date(2025, 3, 10), result="not_detected")}, today=TODAY,
                                visit_date=date(2025, 3, 10))
    assert record(trial, il2(date="2025-03-10")).status == "given"  # the end-of-treatment day itself
    before = counts(trial.uow)
    with pytest.raises(OutsideTreatmentPeriod, match="treatment ended on 2025-03-10"):
        record(trial, gcv(time=None, date="2025-03-11"))
    assert counts(trial.uow) == before


def test_an_off_day_dose_is_kept_with_its_finding(trial):
    view = record(trial, il2(date="2025-03-04"))  # every other day from day 0: day 1 is off
    assert view.findings and "not a scheduled day" in view.findings[0]


def test_a_second_record_of_a_daily_drug_on_one_day_is_refused(trial):
    record(trial, gcv())
    before = counts(trial.uow)
    with pytest.raises(AlreadyExists, match="already recorded"):
        record(trial, gcv(time="2025-03-05T18:00:00+08:00"))
    assert counts(trial.uow) == before


def test_the_calculated_dose_and_holds_apply_when_the_basis_is_given(trial):
    data_entry.enter_visit_data(trial.uow, trial.coordinator, trial.il2_subject, "BL",
                                {"hematology": {**HEMATOLOGY, "anc": 0.4}}, today=TODAY, visit_date=RANDOMIZED_ON)
    basis = {"weight_kg": 60, "crcl_ml_min": 80}
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="on hold"):
        record(trial, gcv(basis=basis))
    assert counts(trial.uow) == before
    view = record(trial, gcv(basis=basis, reason="investigator decision: counts recovering"))
    assert view.planned_dose == 300.0 and any("hold applies" in finding for finding in view.findings)
    with trial.uow.reading():
        row = trial.uow.session.scalar(select(DoseAdministration))
        assert row.basis["weight_kg"] == 60


def test_a_changed_dose_needs_a_reason(trial):
    basis = {"weight_kg": 60, "crcl_ml_min": 80}
    before = counts(trial.uow)
    with pytest.raises(InvalidInput, match="differs from the calculated"):
        record(trial, gcv(dose=250, basis=basis))
    assert counts(trial.uow) == before
    view = record(trial, gcv(dose=250, basis=basis, reason="rounded down by pharmacy"))
    assert view.planned_dose == 300.0 and view.findings


@pytest.mark.parametrize(("data", "error", "message"), [
    ([], InvalidInput, "JSON object"),
    ({"dose": 1}, InvalidInput, "drug is required"),
    (il2(colour="red"), InvalidInput, "unknown field"),
    (il2(date="05/03/2025"), InvalidInput, "YYYY-MM-DD"),
    (il2(date=None), InvalidInput, "give the date"),
    (gcv(time="2025-03-05T09:30:00"), InvalidInput, "offset"),
    (gcv(date="2025-03-06"), InvalidInput, "is not on the date"),
    (il2(date="2025-03-15"), InvalidInput, "after today"),
    (il2(date="2025-03-02"), OutsideTreatmentPeriod, "starts on 2025-03-03"),
    (il2(dose=-1), InvalidInput, "greater than 0"),
    (il2(dose="one"), InvalidInput, "must be a number"),
    (il2(unit="parsec"), UnitError, "unknown dose unit"),
    (il2(unit="mg"), UnitError, "dosed in"),
    (il2(route="intravenous"), InvalidInput, "subcutaneous"),
    (il2(given_by=None), InvalidInput, "who gave"),
    (il2(status="spilled"), InvalidInput, "given, held or missed"),
    (il2(drug="aspirin"), DrugNotInArm, "does not receive aspirin"),
    (il2(visit="TW1"), NotFound, "no recorded visit"),
    (gcv(basis={"height_cm": 170}), InvalidInput, "basis must be"),
])
def test_bad_input_is_refused_and_changes_nothing(trial, data, error, message):
    before = counts(trial.uow)
    with pytest.raises(error, match=message):
        record(trial, data)
    assert counts(trial.uow) == before


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_who_may_record_a_dose(trial, role):
    actor = trial.actors()[role]
    before = counts(trial.uow)
    if role in ("investigator", "coordinator"):
        assert record(trial, gcv(), actor=actor).status == "given"
        return
    with pytest.raises(Forbidden):
        record(trial, gcv(), actor=actor)
    assert counts(trial.uow) == before


def test_another_sites_staff_cannot_record_a_dose(trial):
    before = counts(trial.uow)
    with pytest.raises(Forbidden, match="another site"):
        record(trial, gcv(), actor=trial.other_coordinator)
    with pytest.raises(Forbidden, match="another site"):
        dosing_records.list_administrations(trial.uow, trial.other_investigator, trial.il2_subject)
    assert counts(trial.uow) == before
    assert record(trial, gcv(), actor=trial.other_coordinator, subject=trial.other_subject).status == "given"
