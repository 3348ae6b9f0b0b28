"""Statistician pages: the report and the exports download; other roles are refused."""

from __future__ import annotations

import io
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


@pytest.mark.parametrize("username", ["coord-a", "mon-a", "admin"])
def test_other_roles_get_no_report_page(web_trial, username):
    client = signed_in(web_trial, username)
    for path in ("/reports", "/reports/trial.html", "/exports/adam.zip"):
        assert client.get(path).status_code == 403, path
    assert 'href="/reports"' not in client.get("/").text
