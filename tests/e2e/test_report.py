"""`cmvtrial report` and `cmvtrial export adam` through the real CLI.

The report is built from a small simulated trial (no database), its HTML checked for every section
and for the numbers of its JSON twin; the database path is checked with the snapshot service both
missing (a clear "not available yet") and present (a stand-in service module); bad options exit 2.
"""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner, Result

from cmvtrial.adapters.cli import analysis_commands
from cmvtrial.adapters.cli.main import app

CLEAN = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
SIMULATED = ("--simulate", "default", "--protocol", "sle-cmv-il2", "--n", "24", "--seed", "3")
SECTIONS = ("identification", "consort", "baseline", "endpoint-duration_viremia", "endpoint-nk_change",
            "endpoint-cmv_titer_change", "endpoint-immune_responses", "endpoint-complement_levels",
            "endpoint-adverse_events", "marker-effects", "other-parameters", "safety", "data-quality", "methods")


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**CLEAN, **(env or {})}, catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[str, dict]:
    folder = tmp_path_factory.mktemp("report")
    result = run("report", *SIMULATED, "--out", str(folder / "report.html"), "--json", str(folder / "results.json"))
    assert result.exit_code == 0, result.output
    assert re.search(r"Wrote .*report\.html and .*results\.json: 24 subjects, population itt", result.stdout)
    return (folder / "report.html").read_text(encoding="utf-8"), json.loads((folder / "results.json").read_text())


def test_the_report_has_every_section_and_is_self_contained(built):
    html, results = built
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert html.count("<svg") >= 6  # CONSORT, Kaplan-Meier, trajectories, before/after, forest ...
    assert not re.search(r'(src|href)="(https?:)?//', html), "the report must not fetch anything"
    assert "@media print" in html
    assert results["trial"]["protocol_id"] in html and results["trial"]["protocol_version"] in html
    assert f"Data cut-off</dt><dd>{results['trial']['data_cutoff']}" in html


def test_the_html_shows_the_numbers_of_the_json(built):
    html, results = built
    tte = next(e for e in results["endpoints"] if e["id"] == "duration_viremia")["result"]
    hr = tte["cox"]["terms"][0]["hr"]
    assert f"{hr:.3f}" in html
    assert f"χ² = {tte['logrank']['chisq']:.3f}" in html
    slope = next(e for e in results["endpoints"] if e["id"] == "cmv_titer_change")["result"]["model"]["slope_difference"]
    assert f"{slope['estimate']:.4f}" in html
    assert f"Assessed for eligibility (n={results['consort']['assessed']})" in html
    assert results["safety"]["overview"][0]["category"] in html


def test_the_json_has_the_documented_keys(built):
    _, results = built
    assert set(results) >= {"schema", "trial", "consort", "baseline", "endpoints", "safety", "data_quality", "methods"}
    assert results["trial"]["population"] == "itt" and results["trial"]["source"].startswith("simulation")


def test_the_same_seed_gives_the_same_numbers(built, tmp_path):
    _, results = built
    again = run("report", *SIMULATED, "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"))
    assert again.exit_code == 0
    second = json.loads((tmp_path / "r.json").read_text())
    second["trial"]["generated_on"] = results["trial"]["generated_on"]
    assert second == results


def test_another_population_and_a_cutoff(tmp_path):
    result = run("report", *SIMULATED, "--population", "pp", "--cutoff", "2025-03-15", "--out", str(tmp_path / "r.html"),
                 "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["trial"]["population"] == "pp" and results["trial"]["data_cutoff"] == "2025-03-15"
    assert "Per-protocol" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--population", "everyone", *SIMULATED), "--population must be one of itt, pp, safety"),
        (("--simulate", "default"), "--simulate needs --protocol"),
        (("--simulate", "default", "--protocol", "nope"), "nope"),
        (("--simulate", "nosuch", "--protocol", "sle-cmv-il2"), "no scenario 'nosuch'"),
        ((*SIMULATED, "--cutoff", "yesterday"), "--cutoff must be a date YYYY-MM-DD"),
        ((*SIMULATED, "--cutoff", "2020-01-01"), "before the simulated trial starts"),
        ((*SIMULATED, "--db", "sqlite:///x.db"), "either --simulate or --db"),
        (("--protocol", "sle-cmv-il2"), "--protocol and --n go with --simulate"),
    ],
)
def test_bad_options_are_refused(tmp_path, args, message):
    result = run("report", "--out", str(tmp_path / "r.html"), *args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_an_unwritable_output_is_bad_input(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run("report", *SIMULATED, "--out", str(blocker / "report.html"))
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_from_a_database_without_the_snapshot_service_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(analysis_commands, "SNAPSHOT_SERVICE", "cmvtrial.services.no_such_service")
    result = run("report", "--out", str(tmp_path / "r.html"), "--db", f"sqlite:///{tmp_path / 'trial.db'}")
    assert result.exit_code == 1
    assert "error [not_found]: reading the trial from a database is not available yet" in result.stderr
    assert "--simulate" in result.stderr


def test_from_a_database_through_the_snapshot_service(tmp_path, monkeypatch):
    """The --db path opens the database, picks the actor and calls build_trial_data(uow, actor, data_cutoff=)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from report_support import make_trial_data

    url = f"sqlite:///{tmp_path / 'trial.db'}"
    env = {"CMVTRIAL_ADMIN_PASSWORD": "correct-horse-battery"}
    assert run("init", "--protocol", "sle-cmv-il2", "--db", url, env=env).exit_code == 0
    calls = []

    def build_trial_data(uow, actor, *, data_cutoff=None):
        calls.append((actor.username, data_cutoff))
        return make_trial_data(n=24)

    service = types.ModuleType("cmvtrial_test_snapshot")
    service.build_trial_data = build_trial_data
    monkeypatch.setitem(sys.modules, "cmvtrial_test_snapshot", service)
    monkeypatch.setattr(analysis_commands, "SNAPSHOT_SERVICE", "cmvtrial_test_snapshot")
    result = run("report", "--out", str(tmp_path / "r.html"), "--db", url, "--cutoff", "2025-09-01", env=env)
    assert result.exit_code == 0, result.output
    assert calls == [("admin", __import__("datetime").date(2025, 9, 1))]
    assert "test fixture" in (tmp_path / "r.html").read_text()


def test_export_adam_writes_the_three_datasets_and_an_r_script(tmp_path):
    result = run("export", "adam", *SIMULATED, "--out", str(tmp_path / "adam"))
    assert result.exit_code == 0, result.output
    adsl = pd.read_csv(tmp_path / "adam" / "ADSL.csv")
    adtte = pd.read_csv(tmp_path / "adam" / "ADTTE.csv")
    adlb = pd.read_csv(tmp_path / "adam" / "ADLB.csv")
    assert len(adsl) == len(adtte) == 24
    assert {"USUBJID", "TRT01P", "TRT01A", "RANDDT", "EOTDT", "ITTFL", "SAFFL", "PPFL", "AGE"} <= set(adsl.columns)
    assert {"STARTDT", "ADT", "AVAL", "CNSR", "EVENT", "CNSRREAS"} <= set(adtte.columns)
    assert {"PARAMCD", "AVISIT", "ADY", "AVAL", "BASE", "CHG", "ABLFL", "ANL01FL"} <= set(adlb.columns)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", adsl["RANDDT"].iloc[0])
    script = (tmp_path / "adam" / "rerun.R").read_text()
    assert 'relevel(factor(itt$TRT01P), ref = "gcv")' in script and "coxph" in script and "lme(" in script
    assert "Wrote ADSL.csv (24 rows)" in result.stdout


def test_from_a_real_database_with_the_snapshot_service(tmp_path):
    """`cmvtrial init --demo`, then the report of the (still empty) trial as its statistician;
    the administrator may not run analyses (``analysis.run``)."""
    url = f"sqlite:///{tmp_path / 'trial.db'}"
    env = {"CMVTRIAL_ADMIN_PASSWORD": "correct-horse-battery"}
    assert run("init", "--protocol", "sle-cmv-il2", "--db", url, "--demo", env=env).exit_code == 0
    refused = run("report", "--out", str(tmp_path / "r.html"), "--db", url, env=env)
    assert refused.exit_code == 1 and "error [forbidden]" in refused.stderr
    result = run("report", "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"), "--db", url,
                 "--as", "demo-statistician", env=env)
    assert result.exit_code == 0, result.output
    assert "0 subjects" in result.stdout
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["consort"]["randomized"] == 0
    assert "error" in next(e for e in results["endpoints"] if e["id"] == "duration_viremia")["result"]
    assert 'id="data-quality"' in (tmp_path / "r.html").read_text()


def test_the_other_protocol_reports_its_own_outcomes(tmp_path):
    """NCT04225780: time to negativity (with the trajectories, as it has no decline endpoint),
    innate and adaptive immune responses, rescue ganciclovir, adverse events."""
    result = run("report", "--simulate", "default", "--protocol", "nct04225780", "--seed", "2",
                 "--out", str(tmp_path / "r.html"), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    results = json.loads((tmp_path / "r.json").read_text())
    assert [e["id"] for e in results["endpoints"]] == [
        "time_to_cmv_negativity", "innate_immune_response", "adaptive_immune_response", "rescue_ganciclovir",
        "adverse_events"]
    for endpoint in results["endpoints"]:
        assert f'id="endpoint-{endpoint["id"]}"' in html
    section = html.split('id="endpoint-time_to_cmv_negativity"')[1].split("</section>")[0]
    assert section.count("<svg") == 2  # Kaplan-Meier and the CMV-DNA trajectories
    assert "Fisher's exact test" in html
