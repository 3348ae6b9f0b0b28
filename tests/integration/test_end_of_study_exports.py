"""Withdrawn and completed subjects as every reader of the database sees them: the report's ADSL and
CONSORT disposition, SDTM DS and DM (conformant), and the FHIR ResearchSubject — on a trial built
through the services (interop_support.py), on both protocols and both databases."""

from __future__ import annotations

from datetime import date, timedelta

import pyreadstat
import pytest
from fhir.resources.R4B.bundle import Bundle
from interop_support import TODAY, make_interop_trial

from cmvtrial.adapters.interop.dataset_files import write_package
from cmvtrial.adapters.interop.fhir_export import export_subject_bundle
from cmvtrial.adapters.interop.sdtm import build_sdtm
from cmvtrial.adapters.interop.sdtm_check import check_folder
from cmvtrial.analysis.derivations import derive_datasets
from cmvtrial.analysis.report_tables import consort_counts
from cmvtrial.services import end_of_study, visits
from cmvtrial.services.analysis_data import build_trial_data
from cmvtrial.services.export_data import build_export_data
from cmvtrial.store.tables import Subject

EOT = date(2025, 3, 17)                 # S-001's CMV-DNA below the limit (interop_support.py)
FU3M = EOT + timedelta(days=90)         # its final visit
LATER = FU3M + timedelta(days=5)
WITHDRAWN_ON = date(2025, 3, 20)        # S-002, still on treatment, leaves


@pytest.fixture(params=["sle-cmv-il2", "nct04225780"])
def protocol_id(request):
    return request.param


@pytest.fixture
def trial(trial_database, protocol_id, admin):
    built = make_interop_trial(trial_database, protocol_id, admin)
    visits.record_visit(built.uow, built.coordinator, built.first, "FU3M", today=LATER, on_date=FU3M)
    end_of_study.complete_subject(built.uow, built.investigator, built.first, today=LATER)
    return built


def subject_number(trial, key) -> str:
    with trial.uow.reading():
        return trial.uow.session.get(Subject, key).subject_number


def withdraw(trial, reason, details=None):
    end_of_study.withdraw_subject(trial.uow, trial.investigator, trial.second, reason=reason, on_date=WITHDRAWN_ON,
                                  today=TODAY, details=details)


def test_the_report_counts_completed_and_discontinued_subjects(trial):
    withdraw(trial, "withdrew_consent")
    data = build_trial_data(trial.uow, trial.statistician, data_cutoff=LATER)
    adsl = derive_datasets(data).adsl.set_index("USUBJID")
    done, left = (adsl.loc[subject_number(trial, key)] for key in (trial.first, trial.second))
    assert (done["STATUS"], done["EOSSTT"]) == ("completed", "COMPLETED")
    assert (left["STATUS"], left["EOSSTT"], left["DCSREAS"]) == ("withdrawn", "DISCONTINUED", "withdrew consent")
    assert left["WDDT"].date() == WITHDRAWN_ON
    arms = sorted({arm.id for arm in data.protocol.arms})
    follow_up = consort_counts(data, derive_datasets(data).adsl, arms, "itt")["follow_up"]
    assert sum(entry["completed"] for entry in follow_up.values()) == 1
    assert sum(entry["discontinued"] for entry in follow_up.values()) == 1
    assert sum(entry["discontinued_reasons"].get("withdrew consent", 0) for entry in follow_up.values()) == 1


def test_lost_to_follow_up_is_counted_apart(trial):
    withdraw(trial, "lost_to_follow_up")
    data = build_trial_data(trial.uow, trial.statistician, data_cutoff=LATER)
    arms = sorted({arm.id for arm in data.protocol.arms})
    follow_up = consort_counts(data, derive_datasets(data).adsl, arms, "itt")["follow_up"]
    assert sum(entry["lost_to_follow_up"] for entry in follow_up.values()) == 1


@pytest.mark.parametrize(("reason", "details", "dsterm", "dsdecod"), [
    ("withdrew_consent", None, "WITHDREW CONSENT", "WITHDRAWAL BY SUBJECT"),
    ("other", "moved abroad", "OTHER: moved abroad", "OTHER"),
    ("death", None, "DEATH", "DEATH"),
])
def test_sdtm_ds_and_dm_tell_the_end_of_study(trial, tmp_path, reason, details, dsterm, dsdecod):
    withdraw(trial, reason, details)
    data = build_export_data(trial.uow, trial.data_manager)
    package = build_sdtm(data)
    folder = tmp_path / "sdtm"
    write_package(package, folder, ("xpt",), generated_at=data.generated_at)
    report = check_folder(folder)
    assert report.findings == (), [f.line() for f in report.findings]
    ds, _meta = pyreadstat.read_xport(str(folder / "ds.xpt"))
    completed = ds[(ds["USUBJID"] == data.usubjid(trial.first)) & (ds["DSTERM"] == "COMPLETED")].iloc[0]
    assert (completed["DSDECOD"], completed["DSSTDTC"], completed["EPOCH"]) == ("COMPLETED", FU3M.isoformat(),
                                                                                 "FOLLOW-UP")
    ended = ds[(ds["USUBJID"] == data.usubjid(trial.second)) & (ds["DSCAT"] == "DISPOSITION EVENT")].iloc[0]
    assert (ended["DSTERM"], ended["DSDECOD"], ended["DSSTDTC"], ended["EPOCH"]) == (
        dsterm, dsdecod, WITHDRAWN_ON.isoformat(), "TREATMENT")
    dm, _meta = pyreadstat.read_xport(str(folder / "dm.xpt"))
    row = dm[dm["USUBJID"] == data.usubjid(trial.second)].iloc[0]
    died = reason == "death"
    assert (row["DTHFL"] == "Y", row["DTHDTC"] == WITHDRAWN_ON.isoformat()) == (died, died)
    assert row["RFPENDTC"] >= WITHDRAWN_ON.isoformat()


@pytest.mark.parametrize(("reason", "status"), [("withdrew_consent", "withdrawn"), ("lost_to_follow_up", "off-study"),
                                                 ("death", "off-study")])
def test_fhir_research_subject_status_and_period(trial, reason, status):
    withdraw(trial, reason)
    for subject_id, expected, end in ((trial.second, status, WITHDRAWN_ON), (trial.first, "off-study", FU3M)):
        data = build_export_data(trial.uow, trial.statistician, subject_id=subject_id)
        bundle = Bundle.model_validate(export_subject_bundle(data, subject_id))
        research = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "ResearchSubject")
        assert (research.status, research.period.end) == (expected, end)
