"""The report opened in a real browser: every section is there, shows its content, and is kept as a
PNG screenshot (Debian's Chromium, headless, driven by Playwright; no browser is downloaded).

Screenshots go to tests/artifacts/report/ (git-ignored), one per section plus the whole page and
its print rendering as PDF-like A4 screenshot, so a reviewer can look at what the report looks like.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_support import chromium, collect_problems
from typer.testing import CliRunner

from cmvtrial.adapters.cli.main import app

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(
        app,
        ["report", "--simulate", "default", "--protocol", "sle-cmv-il2", "--n", "40", "--seed", "5",
         "--out", str(folder / "report.html"), "--json", str(folder / "results.json")],
        env={"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return folder / "report.html", json.loads((folder / "results.json").read_text())


def _expected_text(results: dict) -> dict[str, list[str]]:
    """For each section id: text that must be visible in it, taken from the results JSON."""
    labels = {arm["id"]: arm["label"] for arm in results["arms"]}
    endpoints = {e["id"]: e for e in results["endpoints"]}
    tte = endpoints["duration_viremia"]["result"]
    decline = endpoints["cmv_titer_change"]["result"]["model"]
    nk = endpoints["nk_change"]["result"]["markers"][0]
    consort = results["consort"]
    return {
        "identification": [results["trial"]["title"], f"{results['trial']['protocol_id']}, version",
                           results["trial"]["data_cutoff"]],
        "consort": ["Participant flow (CONSORT)", f"Assessed for eligibility (n={consort['assessed']})",
                    f"Randomized (n={consort['randomized']})", "Intention-to-treat"],
        "baseline": ["Baseline characteristics", "Age (years)", labels["il2_gcv"], labels["gcv"]],
        "endpoint-duration_viremia": ["Duration of CMV viremia", "Log-rank test", "Cox hazard ratio",
                                      f"{tte['cox']['terms'][0]['hr']:.3f}", "Number at risk"],
        "endpoint-nk_change": ["Changes of NK cell levels", nk["label"], "Baseline"],
        "endpoint-cmv_titer_change": ["Change of CMV titers", "Difference in slopes",
                                      f"{decline['slope_difference']['estimate']:.4f}", "LLOQ"],
        "endpoint-immune_responses": ["Immune responses", "IgG", "Th17"],
        "endpoint-complement_levels": ["Complements levels", "Complement C3", "Complement C4"],
        "endpoint-adverse_events": ["Adverse events (AEs)", "See Safety"],
        "marker-effects": ["Marker effects", "residual SD units"],
        "other-parameters": ["Other markers", "Interferon gamma"],
        "safety": ["Safety", "Any adverse event", "Laboratory shift tables", "Neutrophil count decreased"],
        "data-quality": ["Data cut-off and data quality", "Open queries", "Unsigned visits"],
        "methods": ["Methods", "Baseline is the last value on or before the day of randomization"],
    }


def test_every_section_shows_its_content_in_chromium(report):
    from playwright.sync_api import expect

    path, results = report
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with chromium() as browser:
        page = collect_problems(browser.new_page(viewport={"width": 1280, "height": 900}), problems)
        page.on("request", lambda request: problems.append(f"fetched {request.url}")
                if not request.url.startswith("file:") else None)
        page.goto(path.as_uri())
        for section, texts in _expected_text(results).items():
            locator = page.locator(f"#{section}")
            expect(locator).to_be_visible()
            for text in texts:
                expect(locator).to_contain_text(text)
            locator.screenshot(path=str(ARTIFACTS / f"{section}.png"))
        # Every figure is drawn (inline SVG with a size), none is empty.
        sizes = page.eval_on_selector_all("figure svg", "nodes => nodes.map(n => n.getBoundingClientRect().height)")
        assert len(sizes) >= 7 and min(sizes) > 100
        page.screenshot(path=str(ARTIFACTS / "report-full.png"), full_page=True)
        page.emulate_media(media="print")
        expect(page.locator("nav")).to_be_hidden()
        page.screenshot(path=str(ARTIFACTS / "report-print.png"), full_page=True)
    assert problems == []
    assert all((ARTIFACTS / f"{section}.png").stat().st_size > 1000 for section in _expected_text(results))
