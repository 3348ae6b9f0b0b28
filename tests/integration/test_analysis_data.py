"""The database as the analyses' snapshot: what `cmvtrial report --db` reads, built through the real
services (screening, randomization, data entry, doses, adverse events, queries, signatures)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from data_capture_support import GCV, HEMATOLOGY, IL2, PASSWORD, RANDOMIZED_ON, cmv, make_capture_trial

from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.errors import Forbidden
from cmvtrial.services import adverse_events, data_entry, dosing_records, queries, randomizing, screening, signatures
from cmvtrial.services.analysis_data import build_trial_data
from cmvtrial.services.unit_of_work import UnitOfWork

FIXTURES = Path(__file__).parents[1] / "fixtures" / "screening"
TODAY = date(2025, 3, 24)
SCREENED = date(2024, 5, 20)


def screening_record(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture
def trial(uow, admin, trial_database):
    trial = make_capture_trial(uow, admin)
    # Candidates through the screening and randomization services, on 4 March 2025.
    day = UnitOfWork(trial_database.session_factory, clock=lambda: datetime(2025, 3, 4, 8, 0, tzinfo=UTC))
    eligible = screening.register_subject(day, trial.coordinator, "PKUPH", "S-010")
    screening.enter_screening_data(day, trial.coordinator, eligible.id, screening_record("eligible.json"))
    screening.record_consent(day, trial.coordinator, eligible.id, date(2025, 3, 4))
    randomizing.randomize_subject(day, trial.coordinator, eligible.id)
    failed = screening.register_subject(day, trial.coordinator, "PKUPH", "S-011")
    screening.enter_screening_data(day, trial.coordinator, failed.id, screening_record("not_eligible_nyha3.json"))
    
    enter = data_entry.enter_visit_data
    enter(uow, trial.coordinator, trial.il2_subject, "BL", {"cmv_load": cmv(RANDOMIZED_ON, 20000),
          "hematology": {**HEMATOLOGY, "anc": 6.0}, "chemistry": {"alt": 50, "alt_uln": 40},
          "lymphocyte_subsets": {"nk_abs": 150, "nk_pct": 8}}, today=TODAY, visit_date=RANDOMIZED_ON,
          complete=["cmv_load", "hematology", "lymphocyte_subsets"])
    enter(uow, trial.coordinator, trial.il2_subject, "TW1", {"cmv_load": cmv(date(2025, 3, 10), 2000)},
          today=TODAY, visit_date=date(2025, 3, 10))
    enter(uow, trial.coordinator, trial.il2_subject, "TW2", {"cmv_load": cmv(date(2025, 3, 17), result="not_detected")},
          today=TODAY, visit_date=date(2025, 3, 17))
    enter(uow, trial.coordinator, trial.gcv_subject, "BL", {"cmv_load": cmv(RANDOMIZED_ON, 30000, "IU/mL")},
          today=TODAY, visit_date=RANDOMIZED_ON, complete=True)
    enter(uow, trial.coordinator, trial.gcv_subject, "TW1",
          {"cmv_load": cmv(date(2025, 3, 10), result="detected_below_lloq")}, today=TODAY, visit_date=date(2025, 3, 10))
    enter(uow, trial.coordinator, trial.il2_subject, "BL", {"chemistry": {
        "serum_creatinine": 0.8, "ast": 30, "ast_uln": 40, "total_bilirubin": 10, "total_bilirubin_uln": 21}},
        today=TODAY, complete=True)
    signatures.sign_visit(uow, trial.investigator, trial.il2_subject, "BL", password=PASSWORD)
    for subject, drug, dose, unit, route in ((trial.il2_subject, IL2, 1, "MIU", "subcutaneous"),
                                             (trial.il2_subject, GCV, 300, "mg", "intravenous"),
                                             (trial.gcv_subject, GCV, 250, "mg", "intravenous")):
        dosing_records.record_administration(uow, trial.coordinator, subject, {
            "drug": drug, "dose": dose, "unit": unit, "route": route, "date": "2025-03-03", "given_by": "Nurse Li"},
            today=TODAY)
    dosing_records.record_administration(uow, trial.coordinator, trial.il2_subject, {
        "drug": GCV, "status": "held", "date": "2025-03-04", "reason": "platelets 20"}, today=TODAY)
    adverse_events.record_adverse_event(uow, trial.investigator, trial.il2_subject, {
        "term": "Neutrophil count decreased", "start_date": "2025-03-05", "grade": 3, "outcome": "RECOVERING/RESOLVING",
        "drugs": [{"drug": IL2, "relatedness": "possible", "action_taken": "DOSE NOT CHANGED"},
                  {"drug": GCV, "relatedness": "probable", "action_taken": "DRUG INTERRUPTED"}]}, today=TODAY)
    queries.open_query(uow, trial.monitor, trial.gcv_subject, "BL", "cmv_load", "cmv_dna", "Which assay?")
    return trial


def test_the_snapshot_holds_subjects_screening_observations_doses_events_and_quality(trial):
    data = build_trial_data(trial.uow, trial.statistician, data_cutoff=TODAY)
    assert data.data_cutoff == TODAY and data.source.startswith("database: protocol sle-cmv-il2")
    subjects = {record.subject_id: record for record in data.subjects}
    assert len(subjects) == 4 and {"R-S-001", "R-S-002", "R-S-101"} <= set(subjects)
    il2 = subjects["R-S-001"]
    assert (il2.site, il2.arm_randomized, il2.arm_received, il2.randomization_date) == (
        "PKUPH", "il2_gcv", "il2_gcv", RANDOMIZED_ON)
    assert (il2.first_dose_date, il2.last_dose_date, il2.end_of_treatment_date, il2.status) == (
        RANDOMIZED_ON, RANDOMIZED_ON, date(2025, 3, 17), "in_follow_up")
    gcv = subjects["R-S-002"]
    assert (gcv.arm_received, gcv.end_of_treatment_date, gcv.status) == ("gcv", date(2025, 3, 10), "in_follow_up")
    assert subjects["R-S-101"].status == "randomized" and subjects["R-S-101"].arm_received is None

    real = next(record for record in data.subjects if record.subject_id not in ("R-S-001", "R-S-002", "R-S-101"))
    assert (real.screening_date, real.consent_date, real.randomization_date) == (SCREENED, date(2025, 3, 4),
                                                                                date(2025, 3, 4))
    assert (real.sex, real.diagnosis, real.weight_kg, real.eligible) == ("F", "SLE", 58.5, True)
    assert real.age_years == 38 and real.creatinine_clearance_ml_min is not None
    assert real.baseline_cmv_copies_per_ml == 4200 and real.steroid_mg_per_kg_day is not None
    assert real.strata  # the allocation's stratification levels

    outcomes = {candidate.candidate_id: candidate for candidate in data.screening}
    failed, = [c for c in data.screening if c.outcome == "not_eligible"]
    assert failed.candidate_id == "PKUPH:S-011" and failed.reasons and failed.screening_date == SCREENED
    assert outcomes["PKUPH:S-003"].outcome == "not_randomized"
    assert sum(c.outcome == "randomized" for c in data.screening) == 4

    cmv_rows = data.observations[(data.observations["item"] == "cmv_dna") & (data.observations["form"] == "cmv_load")]
    by_visit = {(row.subject_id, row.visit): row for row in cmv_rows.itertuples()}
    assert by_visit[("R-S-001", "BL")].value == 20000 and by_visit[("R-S-001", "TW1")].value == 2000
    negative = by_visit[("R-S-001", "TW2")]
    assert negative.below_lloq and negative.not_detected and negative.value != negative.value  # NaN: no value
    assert by_visit[("R-S-002", "BL")].value == pytest.approx(33000)  # IU/mL x 1.1
    assert by_visit[("R-S-002", "TW1")].below_lloq and not by_visit[("R-S-002", "TW1")].not_detected
    alt = data.observations[(data.observations["item"] == "alt") & (data.observations["form"] == "chemistry")].iloc[0]
    assert (alt["value"], alt["uln"], alt["loinc"]) == (50, 40, "1742-6")
    screening_cmv = data.observations[data.observations["form"] == "screening"]
    assert set(screening_cmv["item"]) >= {"cmv_dna", "weight_kg"}

    doses = data.doses
    assert len(doses) == 4 and set(doses["status"]) == {"given", "held"}
    assert doses[doses["status"] == "held"].iloc[0]["reason"] == "platelets 20"
    event, = data.adverse_events
    assert (event.subject_id, event.term, event.grade, event.serious) == ("R-S-001", "Neutrophil count decreased", 3,
                                                                          False)
    assert event.relatedness == {IL2: "possible", GCV: "probable"}
    quality = data.data_quality
    assert (quality.open_queries, quality.answered_queries) == (2, 0)  # EC03 at BL, and the monitor's
    assert quality.unsigned_visits == 4  # R-S-001 TW1, TW2; R-S-002 BL, TW1 (R-S-001 BL is signed)


def test_the_analyses_run_on_the_snapshot(trial):
    datasets = derive_datasets(build_trial_data(trial.uow, trial.data_manager, data_cutoff=TODAY))
    events = dict(zip(datasets.adtte["USUBJID"], datasets.adtte["EVENT"], strict=True))
    assert events["R-S-001"] == 1 and events["R-S-002"] == 1 and events["R-S-101"] == 0


def test_a_cutoff_leaves_out_what_came_after_it(trial):
    data = build_trial_data(trial.uow, trial.statistician, data_cutoff=date(2025, 3, 3))
    assert {record.subject_id for record in data.subjects} == {"R-S-001", "R-S-002", "R-S-101"}
    il2 = next(record for record in data.subjects if record.subject_id == "R-S-001")
    assert (il2.end_of_treatment_date, il2.status) == (None, "on_treatment")
    assert data.observations["date"].max() <= datetime(2025, 3, 3)
    assert data.adverse_events == ()


@pytest.mark.parametrize("role", ["admin", "investigator", "coordinator", "monitor", "data-manager", "statistician"])
def test_only_the_analysis_roles_build_it(trial, role):
    actor = trial.actors()[role]
    if role in ("statistician", "data-manager"):
        assert build_trial_data(trial.uow, actor, data_cutoff=TODAY).subjects
        return
    with pytest.raises(Forbidden):
        build_trial_data(trial.uow, actor, data_cutoff=TODAY)
