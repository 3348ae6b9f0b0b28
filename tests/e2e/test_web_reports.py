"""Statistician pages: the report and the exports download; other roles are refused."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import date

import pytest
from test_web_subjects import signed_in
from trial_flow import HEMATOLOGY, cmv_load, enter, randomized_subject
from web_support import web_trial  # noqa: F401


def test_the_statistician_downloads_the_report_and_the_datasets(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    for n in (1, 2):
        subject = randomized_subject(client, coord, "SITEA", f"S-{n}", consent_on=date(2025, 3, 10))["subject_id"]
        enter(client, coord, subject, "BL", {"cmv_load": cmv_load(date(2025, 3, 14), 9000), "hematology": HEMATOLOGY})
    stat = signed_in(web_trial, "stat")
    page = stat.get("/reports")
    assert page.status_code == 200 and 'action="/reports/trial.html"' in page.text
    report = stat.get("/reports/trial.html?population=itt&cutoff=")
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"] and "<svg" in report.text
    assert stat.get("/reports/trial.json").json()["consort"]["randomized"] == 2
    bad = stat.get("/reports/trial.html?cutoff=yesterday")
    assert bad.status_code == 422 and "is not a date" in bad.text
    archive = zipfile.ZipFile(io.BytesIO(stat.get("/exports/adam.zip").content))
    assert "ADSL.csv" in archive.namelist()
    assert stat.get("/exports/adam/ADTTE.csv").text.startswith("STUDYID")


def test_the_statistician_downloads_one_subjects_fhir_bundle_chosen_by_pseudonym(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject = randomized_subject(client, coord, "SITEA", "S-1", consent_on=date(2025, 3, 10))["subject_id"]
    stat = signed_in(web_trial, "stat")
    page = stat.get("/reports").text
    assert 'action="/exports/fhir"' in page
    pseudonym = re.search(r'<option value="(P[0-9A-F]{10})"', page).group(1)
    events = web_trial.audit_count()
    bundle = stat.get(f"/exports/fhir?subject={pseudonym}")
    assert bundle.status_code == 200 and bundle.headers["content-type"].startswith("application/fhir+json")
    assert bundle.json()["resourceType"] == "Bundle" and "S-1" not in bundle.text
    assert web_trial.audit_count() == events + 1  # the export is audited
    unknown = stat.get("/exports/fhir?subject=P0000000000")
    assert unknown.status_code == 404 and "no subject has the pseudonym" in unknown.text
    assert stat.get("/exports/fhir").status_code == 422  # no subject chosen


@pytest.mark.parametrize("username", ["coord-a", "mon-a", "admin"])
def test_other_roles_get_no_report_page(web_trial, username):
    client = signed_in(web_trial, username)
    for path in ("/reports", "/reports/trial.html", "/exports/adam.zip", "/exports/fhir?subject=P0000000000"):
        assert client.get(path).status_code == 403, path
    assert 'href="/reports"' not in client.get("/").text
