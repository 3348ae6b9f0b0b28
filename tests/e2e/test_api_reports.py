"""The trial report and the ADaM-like exports through the API: statisticians and data managers only."""

from __future__ import annotations

import io
import zipfile
from datetime import date

import pytest
from trial_flow import HEMATOLOGY, cmv_load, enter, randomized_subject, week
from web_support import web_trial  # noqa: F401

DAY0 = date(2025, 3, 14)


@pytest.fixture
def trial_with_data(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subjects = [randomized_subject(client, coord, "SITEA", f"S-00{n}", consent_on=date(2025, 3, 10))["subject_id"]
                for n in range(1, 4)]
    for subject in subjects:
        enter(client, coord, subject, "BL", {"cmv_load": cmv_load(DAY0, 20000), "hematology": HEMATOLOGY})
    web_trial.clock.advance(days=7)
    for n, subject in enumerate(subjects):
        enter(client, coord, subject, "TW1", {"cmv_load": cmv_load(week(DAY0, 1), None if n else 900)})
    return web_trial


def test_the_statistician_downloads_the_report_and_its_json(trial_with_data):
    client, stat = trial_with_data.client(), trial_with_data.bearer("stat")
    html = client.get("/api/v1/reports/trial.html", headers=stat)
    assert html.status_code == 200, html.text
    assert html.headers["content-type"].startswith("text/html") and "attachment" in html.headers["content-disposition"]
    assert "<svg" in html.text and "CONSORT" in html.text
    results = client.get("/api/v1/reports/trial.json?population=itt", headers=stat).json()
    assert results["consort"]["randomized"] == 3 and results["consort"]["assessed"] == 3


def test_the_adam_datasets_download_as_csv_and_zip(trial_with_data):
    client, dm = trial_with_data.client(), trial_with_data.bearer("dm")
    adsl = client.get("/api/v1/exports/adam/ADSL.csv", headers=dm)
    assert adsl.status_code == 200 and adsl.text.startswith("STUDYID,PROTVER,USUBJID,")
    assert len(adsl.text.strip().splitlines()) == 4
    archive = zipfile.ZipFile(io.BytesIO(client.get("/api/v1/exports/adam.zip", headers=dm).content))
    assert sorted(archive.namelist()) == ["ADLB.csv", "ADSL.csv", "ADTTE.csv", "rerun.R"]
    assert client.get("/api/v1/exports/adam/ADXX.csv", headers=dm).status_code == 422


@pytest.mark.parametrize("username", ["coord-a", "inv-a", "mon-a", "admin"])
def test_site_staff_monitors_and_admins_get_no_report(web_trial, username):
    client, headers = web_trial.client(), web_trial.bearer(username)
    for path in ("/api/v1/reports/trial.html", "/api/v1/reports/trial.json", "/api/v1/exports/adam.zip"):
        response = client.get(path, headers=headers)
        assert response.status_code == 403 and response.json()["code"] == "forbidden", path


def test_the_exports_are_pseudonymized_and_each_download_is_audited(trial_with_data):
    from cmvtrial.store.tables import AuditEvent

    client, dm = trial_with_data.client(), trial_with_data.bearer("dm")
    events = trial_with_data.audit_count()
    adsl = client.get("/api/v1/exports/adam/ADSL.csv", headers=dm).text
    assert "S-001" not in adsl and "SITEA-001" not in adsl  # USUBJID is SDTM's pseudonym
    sdtm = zipfile.ZipFile(io.BytesIO(client.get("/api/v1/exports/sdtm.zip?format=csv", headers=dm).content))
    assert {"dm.csv", "lb.csv", "define.xml"} <= set(sdtm.namelist())
    assert "S-001" not in sdtm.read("dm.csv").decode()
    odm = client.get("/api/v1/exports/odm.xml", headers=dm)
    assert odm.status_code == 200 and "<ODM" in odm.text and "AuditRecord" in odm.text
    subject = client.get("/api/v1/subjects", headers=dm).json()[0]["id"]
    bundle = client.get(f"/api/v1/exports/fhir/{subject}.json", headers=dm).json()
    assert bundle["resourceType"] == "Bundle" and any(e["resource"]["resourceType"] == "Patient" for e in bundle["entry"])
    assert client.get("/api/v1/exports/fhir/999999.json", headers=dm).status_code == 404
    assert client.get("/api/v1/exports/sdtm.zip?format=docx", headers=dm).status_code == 422
    with trial_with_data.database.engine.connect() as connection:
        from sqlalchemy import select

        exported = list(connection.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "data.export",
                                                                              AuditEvent.sequence > events)))
    assert sorted(exported) == ["adam", "fhir", "odm", "sdtm"]


@pytest.mark.parametrize("username", ["coord-a", "mon-a", "admin"])
def test_only_data_managers_and_statisticians_export(trial_with_data, username):
    client, headers = trial_with_data.client(), trial_with_data.bearer(username)
    before = trial_with_data.audit_count()
    for path in ("/api/v1/exports/sdtm.zip", "/api/v1/exports/odm.xml", "/api/v1/exports/fhir/1.json"):
        assert client.get(path, headers=headers).status_code == 403, path
    assert trial_with_data.audit_count() == before
