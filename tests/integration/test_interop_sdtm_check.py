"""`sdtm check` rules on real files: the CDISC pilot (read-only, copied before anything is changed) and
corrupted copies, each of which must be caught with its dataset, variable, row and rule; and the
XPORT writer's limits."""

from __future__ import annotations

import math
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cmvtrial.adapters.interop.dataset_files import parse_formats, read_csv
from cmvtrial.adapters.interop.sdtm_records import number_text, study_day
from cmvtrial.adapters.interop.sdtm_check import check_datasets, check_folder
from cmvtrial.adapters.interop.xpt import ascii_text, read_xpt, write_xpt
from cmvtrial.errors import InvalidInput

PILOT = Path("/work/shared/data/cdiscpilot")
if not PILOT.exists():  # the shared folder beside the repository (CI clones it next to main)
    PILOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdiscpilot"


@pytest.fixture
def pilot(tmp_path) -> Path:
    folder = tmp_path / "pilot"
    shutil.copytree(PILOT, folder)
    return folder


def rewrite(path: Path, change) -> None:
    """Apply ``change`` to an XPORT copy and write it back with its labels."""
    dataset = read_xpt(path)
    frame = change(dataset.frame.copy())
    write_xpt(path, dataset.name, dataset.label, frame, dataset.labels, dataset.types)


def rules(report) -> set[tuple[str, str | None, int | None, str]]:
    return {(f.dataset, f.variable, f.row, f.rule) for f in report.findings if f.severity == "error"}


def test_the_pilot_is_read_and_its_one_inconsistency_found():
    report = check_folder(PILOT)
    assert report.datasets["DM"] == 306 and report.datasets["AE"] == 1191 and report.datasets["TS"] == 33
    # The pilot's AE row 971 gives AESTDY 366 for a start on the subject's RFSTDTC (study day 1).
    assert rules(report) == {("AE", "AESTDY", 971, "SD-DY")}
    warnings = {(f.dataset, f.rule) for f in report.findings if f.severity == "warning"}
    assert ("DM", "SD-EXP") in warnings  # SDTMIG 3.1.2 era: no ARMNRS/ACTARMUD
    assert ("TS", "XPT-ASCII") in warnings  # a Windows-1252 apostrophe, read, not fatal


def test_the_pilot_without_its_ae_file_passes(pilot):
    (pilot / "ae.xpt").unlink()
    report = check_folder(pilot)
    assert report.ok and report.errors == 0


@pytest.mark.parametrize("corruption, expected", [
    ("duplicate_usubjid", ("DM", "USUBJID", 2, "SD-USUBJID")),
    ("unknown_subject", ("DS", "USUBJID", 1, "SD-USUBJID")),
    ("missing_required", ("DM", "COUNTRY", None, "SD-REQ")),
    ("null_required", ("DM", "SEX", 3, "SD-REQNULL")),
    ("bad_date", ("DS", "DSSTDTC", 1, "SD-ISO8601")),
    ("impossible_date", ("DS", "DSSTDTC", 1, "SD-ISO8601")),
    ("duplicate_seq", ("DS", "DSSEQ", 2, "SD-SEQ")),
    ("sex_terminology", ("DM", "SEX", 1, "SD-CT")),
    ("study_day", ("DS", "DSSTDY", 1, "SD-DY")),
    ("day_zero", ("DS", "DSSTDY", 1, "SD-DY")),
    ("wrong_domain", ("DS", "DOMAIN", 1, "SD-DOMAIN")),
])
def test_a_corrupted_copy_is_rejected_naming_dataset_variable_row_and_rule(pilot, corruption, expected):
    (pilot / "ae.xpt").unlink()
    dm, ds = pilot / "dm.xpt", pilot / "ds.xpt"

    def set_cell(column, row, value):
        def change(frame):
            frame[column] = frame[column].astype(object)
            frame.loc[row, column] = value
            return frame
        return change

    first = read_xpt(dm).frame.iloc[0]
    edits = {
        "duplicate_usubjid": (dm, set_cell("USUBJID", 1, first["USUBJID"])),
        "unknown_subject": (ds, set_cell("USUBJID", 0, "01-999-9999")),
        "missing_required": (dm, lambda f: f.drop(columns=["COUNTRY"])),
        "null_required": (dm, set_cell("SEX", 2, "")),
        "bad_date": (ds, set_cell("DSSTDTC", 0, "13/05/2014")),
        "impossible_date": (ds, set_cell("DSSTDTC", 0, "2014-02-30")),
        "duplicate_seq": (ds, lambda f: f.assign(DSSEQ=[f["DSSEQ"].iloc[0]] * 2 + list(f["DSSEQ"].iloc[2:]))
                          if f["USUBJID"].iloc[0] == f["USUBJID"].iloc[1] else f),
        "sex_terminology": (dm, set_cell("SEX", 0, "Female")),
        "study_day": (ds, lambda f: f.assign(DSSTDY=[f["DSSTDY"].iloc[0] + 1, *f["DSSTDY"].iloc[1:]])),
        "day_zero": (ds, set_cell("DSSTDY", 0, 0.0)),
        "wrong_domain": (ds, set_cell("DOMAIN", 0, "DM")),
    }
    path, change = edits[corruption]
    rewrite(path, change)
    report = check_folder(pilot)
    assert not report.ok
    assert expected in rules(report)


def test_csv_datasets_are_checked_too(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    pd.DataFrame({"STUDYID": ["S"] * 2, "DOMAIN": ["DM"] * 2, "USUBJID": ["S-1", "S-2"], "SUBJID": ["1", "2"],
                  "SITEID": ["A", "A"], "SEX": ["F", "M"], "COUNTRY": ["CHN", "CHN"],
                  "RFSTDTC": ["2025-03-03", "2025-03-04"]}).to_csv(folder / "dm.csv", index=False)
    pd.DataFrame({"STUDYID": ["S"] * 2, "DOMAIN": ["LB"] * 2, "USUBJID": ["S-1", "S-1"], "LBSEQ": [1, 2],
                  "LBTESTCD": ["ALT", "ALT"], "LBTEST": ["ALT", "ALT"], "LBSTRESC": ["42", "<10"],
                  "LBSTRESN": [41, 5], "LBDTC": ["2025-03-03", "2025-03-10"], "LBDY": [1, 8]}
                 ).to_csv(folder / "lb.csv", index=False)
    report = check_folder(folder)
    assert {("LB", "LBSTRESN", 1, "SD-STRESN"), ("LB", "LBSTRESN", 2, "SD-STRESN")} <= rules(report)
    assert read_csv(folder / "lb.csv").types["LBSTRESN"] == "Num"


@pytest.mark.parametrize("content", [b"not an xport file at all", b""])
def test_a_folder_that_cannot_be_read_is_invalid_input(tmp_path, content):
    with pytest.raises(InvalidInput, match="does not exist"):
        check_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="holds no dataset"):
        check_folder(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "dm.xpt").write_bytes(content)
    with pytest.raises(InvalidInput, match="dm.xpt"):
        check_folder(tmp_path / "bad")


def test_the_xport_writer_refuses_what_version_5_cannot_hold(tmp_path):
    labels = {"STUDYID": "Study Identifier", "LONGNAME1": "x", "AETERM": "y" * 41}
    frame = pd.DataFrame({"STUDYID": ["S"], "LONGNAME1": ["a"], "AETERM": ["z" * 201]})
    with pytest.raises(InvalidInput) as refused:
        write_xpt(tmp_path / "ae.xpt", "AE", "Adverse Events", frame, labels, {c: "Char" for c in frame})
    found = {(p["variable"], p["rule"]) for p in refused.value.details["problems"]}
    assert found == {("LONGNAME1", "XPT-NAME"), ("AETERM", "XPT-LABEL"), ("AETERM", "XPT-LENGTH")}
    assert not (tmp_path / "ae.xpt").exists()
    write_xpt(tmp_path / "ok.xpt", "MH", "Medical History", pd.DataFrame({"MHTERM": ["Sjögren ≥ 3"]}),
              {"MHTERM": "Reported Term"}, {"MHTERM": "Char"})
    frame, meta = pyreadstat.read_xport(str(tmp_path / "ok.xpt"))
    assert frame["MHTERM"].iloc[0] == "Sjogren >= 3" and meta.variable_storage_width["MHTERM"] == 12


def test_format_names():
    assert parse_formats("both") == ("xpt", "csv") and parse_formats("xpt,json") == ("xpt", "json")
    assert parse_formats("all") == ("xpt", "csv", "json")
    with pytest.raises(InvalidInput, match="--format"):
        parse_formats("sas7bdat")


@given(st.text(max_size=60))
def test_ascii_text_is_always_ascii_and_keeps_ascii_unchanged(text):
    converted = ascii_text(text)
    assert converted.isascii()
    if text.isascii():
        assert converted == text


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 1, 1)), st.integers(-400, 400))
def test_study_day_skips_zero_and_counts_from_day_one(reference, offset):
    day = study_day(reference + timedelta(days=offset), reference)
    assert day != 0 and day == (offset + 1 if offset >= 0 else offset)


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_a_standard_result_text_reads_back_as_its_number(value):
    text = number_text(value)
    assert "e" not in text and math.isclose(float(text), value, rel_tol=1e-11, abs_tol=1e-300)


def test_checks_on_frames_directly():
    from cmvtrial.adapters.interop.xpt import DatasetFile

    dm = DatasetFile("DM", "Demographics", pd.DataFrame({"USUBJID": ["A", "A"]}), types={"USUBJID": "Char"})
    report = check_datasets([dm])
    assert ("DM", "USUBJID", 2, "SD-USUBJID") in rules(report)
