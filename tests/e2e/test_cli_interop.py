"""`cmvtrial export sdtm|odm|fhir|adam`, `cmvtrial sdtm check` and `cmvtrial import fhir` through the real
CLI: files written and readable, exit codes 0/1/2, refusals in one line changing nothing."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from cli_support import CliTrial, as_admin, init_trial

from cmvtrial.config import load_settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from data_capture_support import counts  # noqa: E402
from interop_support import make_interop_trial  # noqa: E402

FHIR = Path(__file__).resolve().parents[1] / "fixtures" / "fhir" / "labs_week3.json"
PILOT = Path("/work/shared/data/cdiscpilot")
if not PILOT.exists():
    PILOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "cdiscpilot"


class Trial(CliTrial):
    def counts(self) -> dict[str, object]:
        return self.read(counts)


@pytest.fixture
def trial(database_url, protocol_id, tmp_path) -> Trial:
    init_trial(database_url, protocol_id)
    # With CMVTRIAL_SECRET_KEY: randomizing seals a seed.
    with as_admin(database_url, load_settings()) as (database, _, admin):
        make_interop_trial(database, protocol_id, admin)
    return Trial(database_url, tmp_path, user="dm")


def test_export_sdtm_then_check_it(trial):
    folder = trial.tmp / "sdtm"
    result = trial.run("export", "sdtm", "--out", str(folder), "--format", "all")
    assert result.exit_code == 0, result.output
    assert "define.xml" in result.output and (folder / "dm.xpt").exists() and (folder / "lb.json").exists()
    checked = trial.run("sdtm", "check", str(folder), user=None, db=False)
    assert checked.exit_code == 0, checked.output
    assert "0 error(s), 0 warning(s)" in checked.output
    as_json = json.loads(trial.run("sdtm", "check", str(folder), "--json", user=None, db=False).output)
    assert as_json["errors"] == 0 and as_json["datasets"]["DM"] == 3


def test_sdtm_check_exit_codes_on_the_pilot_and_on_nothing(trial):
    pilot = trial.run("sdtm", "check", str(PILOT), "--errors-only", user=None, db=False)
    assert pilot.exit_code == 1
    assert "ERROR   SD-DY      AE.AESTDY row 971" in pilot.output and "1 error(s)" in pilot.output
    missing = trial.run("sdtm", "check", str(trial.tmp / "nowhere"), user=None, db=False)
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_export_odm_fhir_and_adam(trial):
    odm = trial.tmp / "trial.xml"
    result = trial.run("export", "odm", "--out", str(odm))
    assert result.exit_code == 0, result.output
    assert ET.parse(odm).getroot().get("ODMVersion") == "1.3.2"

    bundle = trial.run("export", "fhir", "--subject", "PKUPH:S-001", user="stat")
    assert bundle.exit_code == 0, bundle.output
    document = json.loads(bundle.output)
    from fhir.resources.R4B.bundle import Bundle

    parsed = Bundle.model_validate(document)
    pseudonym = next(e.resource for e in parsed.entry if e.resource.__resource_type__ == "Patient").identifier[0].value
    again = trial.run("export", "fhir", "--subject", pseudonym, "--out", str(trial.tmp / "b.json"), user="stat")
    assert again.exit_code == 0 and pseudonym in again.output

    adam = trial.tmp / "adam"
    result = trial.run("export", "adam", "--out", str(adam), user="stat")
    assert result.exit_code == 0, result.output
    adtte = pd.read_csv(adam / "ADTTE.csv")
    assert {"PARAMCD", "AVAL", "CNSR", "STARTDT", "ADT", "EVNTDESC", "CNSDTDSC", "SRCSEQ"} <= set(adtte.columns)
    assert all(pseudonym[:1] in value for value in adtte["USUBJID"]) and "S-001" not in (adam / "ADSL.csv").read_text()


def test_import_fhir_dry_run_then_import_then_nothing_new(trial):
    before = trial.counts()
    dry = trial.run("import", "fhir", str(FHIR), "--subject", "PKUPH:S-002", "--today", "2025-03-24", "--dry-run",
                    user="coord")
    assert dry.exit_code == 0, dry.output
    assert "Dry run" in dry.output and "3 result(s) would be imported" in dry.output
    assert trial.counts() == before
    done = trial.run("import", "fhir", str(FHIR), "--subject", "PKUPH:S-002", "--today", "2025-03-24", "--json",
                     user="coord")
    report = json.loads(done.output)
    assert (report["imported"], report["not_imported"], report["visits_entered"]) == (3, 3, ["TW3"])
    after = trial.counts()
    again = trial.run("import", "fhir", str(FHIR), "--subject", "PKUPH:S-002", "--today", "2025-03-24", user="coord")
    assert again.exit_code == 0 and "3 unchanged" in again.output
    assert trial.counts() == after


def test_refusals_are_one_line_and_change_nothing(trial):
    before = trial.counts()
    bad = trial.tmp / "bad.json"
    bad.write_text('{"resourceType": "Observation"}', encoding="utf-8")
    refused = trial.run("import", "fhir", str(bad), "--subject", "PKUPH:S-002", "--today", "2025-03-24", user="coord")
    assert refused.exit_code == 2 and "expected a FHIR 'Bundle'" in refused.output
    forbidden = trial.run("export", "sdtm", "--out", str(trial.tmp / "x"), user="coord")
    assert forbidden.exit_code == 1 and "may not data.export" in forbidden.output
    wrong = trial.run("export", "sdtm", "--out", str(trial.tmp / "x"), "--format", "sas")
    assert wrong.exit_code == 2 and "--format" in wrong.output
    assert trial.counts() == before
    assert not (trial.tmp / "x").exists()
