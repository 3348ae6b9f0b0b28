"""The whole path as site staff walk it, in a real browser (Debian's Chromium, headless, driven by
Playwright from PyPI; no browser is downloaded):

a coordinator signs in, screens an ineligible and an eligible candidate, records consent and
randomizes (with the confirmation step), records weekly visits until CMV-DNA is negative (end of
treatment), records an adverse event with its CTCAE grade text; the investigator signs the visit;
a monitor opens a query and the site answers it; the statistician downloads the report.

The app runs on a real socket on 127.0.0.1 (browser_support.serving). Its clock is the test's:
a week passes between visits by moving it, with sessions long enough to outlive the walk.
Screenshots of every step are saved in tests/artifacts/browser-walk/ (gitignored) and the page
must raise no script or Content-Security-Policy error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import chromium, collect_problems, serving
from trial_flow import screening_record
from web_support import PASSWORD, WebTrial, make_web_trial

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser-walk"
LONG_SESSIONS = {"session_idle_minutes": 60 * 24 * 60, "session_max_hours": 24 * 60}


@pytest.fixture
def served(tmp_path: Path, now) -> Iterator[tuple[str, WebTrial]]:
    trial = make_web_trial(tmp_path, now, **LONG_SESSIONS)
    with serving(trial) as base:
        yield base, trial


def menu(page, label: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True).click()


def fill_screening(page, record: dict) -> None:
    """Type a screening record into the generated screening form."""
    for name in ("screening_date", "birth_date"):
        page.locator(f'input[name="{name}"]').fill(record[name])
    page.locator('select[name="sex"]').select_option(record["sex"])
    page.locator('input[name="weight_kg"]').fill(str(record["weight_kg"]))
    page.locator('select[name="diagnosis"]').select_option(record["diagnosis"])
    for name in ("cmv_dna", "serum_creatinine", "alt", "ast", "total_bilirubin"):
        page.locator(f'input[name="{name}"]').fill(str(record[name]["value"]))
        unit = page.locator(f'select[name="{name}__unit"]')
        if unit.count():
            unit.select_option(record[name]["unit"])
    for name in ("alt_uln", "ast_uln", "total_bilirubin_uln", "nyha_class"):
        page.locator(f'input[name="{name}"]').fill(str(record[name]))
    page.locator('input[name="corticosteroid"][value="given"]').check()
    page.locator('select[name="corticosteroid.drug"]').select_option(record["corticosteroid"]["drug"])
    page.locator('input[name="corticosteroid.daily_dose_mg"]').fill(str(record["corticosteroid"]["daily_dose_mg"]))
    for name in ("other_infections", "severe_comorbidities"):
        page.locator(f'input[name="{name}"][value="__none__"]').check()
    for name in ("il2_allergy", "malignancy", "uncontrolled_psychiatric", "pregnant_or_breastfeeding"):
        page.locator(f'input[name="{name}"][value="no"]').check()


def test_site_staff_walk_from_screening_to_the_statisticians_report(served):
    from playwright.sync_api import expect

    base, trial = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    shots = iter(range(1, 100))

    def shot(page, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{next(shots):02d}-{name}.png"), full_page=True)

    with chromium() as browser:

        def sign_in(username: str):
            context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page = collect_problems(context.new_page(), problems)
            page.goto(base + "/")
            page.get_by_label("User name").fill(username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            return page

        # --- the coordinator screens two candidates --------------------------------------
        coord = sign_in("coord-a")
        expect(coord.locator("#panel-enrollment")).to_be_visible()
        shot(coord, "dashboard")
        for number, record, verdict in (("S-101", screening_record("not_eligible_nyha3.json"), "✗ Not eligible"),
                                        ("S-102", screening_record(), "✓ Eligible")):
            menu(coord, "Subjects")
            coord.get_by_label("Screening number").fill(number)
            coord.get_by_role("button", name="Register").click()
            expect(coord.get_by_role("heading", name=f"Screening of SITEA:{number}")).to_be_visible()
            fill_screening(coord, record)
            expect(coord.locator("#eligibility-result .verdict")).to_have_text(verdict)  # live, before saving
            shot(coord, f"screening-{number}")
            coord.get_by_role("button", name="Save screening data").click()
            expect(coord.get_by_text("Screening data saved")).to_be_visible()
        expect(coord.locator(".status")).to_have_text("eligible")
        menu(coord, "Subjects")
        expect(coord.get_by_role("row", name="S-101")).to_contain_text("screen failed")
        coord.get_by_role("link", name="S-102").click()

        # --- consent, then randomize with a confirmation step ----------------------------
        coord.get_by_label("Date consent was signed").fill("2025-03-12")
        coord.get_by_role("button", name="Record consent").click()
        expect(coord.get_by_text("Consent date recorded.")).to_be_visible()
        coord.get_by_role("link", name="Randomize…").click()
        coord.get_by_label("I confirm").check()
        shot(coord, "randomize-confirmation")
        coord.get_by_role("button", name="Randomize").click()
        expect(coord.get_by_text("Subject randomized.")).to_be_visible()
        subject_url = coord.url.split("?")[0]
        shot(coord, "randomized")

        # --- weekly visits until CMV-DNA is negative -------------------------------------
        for week, visit, load in ((0, "BL", "42000"), (1, "TW1", "5000"), (2, "TW2", None)):
            if week:
                trial.clock.advance(days=7)
            coord.goto(subject_url)
            coord.get_by_role("link", name=visit, exact=True).click()
            form = coord.locator("#form-cmv_load-0")
            on = (trial.clock.now.date()).isoformat()
            form.get_by_label("Sample collection date").fill(on)
            form.get_by_label("Result category").select_option("quantified" if load else "not_detected")
            form.locator('input[name="cmv_dna"]').fill(load or "0")
            form.get_by_label("Mark the form complete").check()
            form.get_by_role("button", name="Save CMV-DNA (plasma)").click()
            expect(coord.get_by_role("heading", name="What the entry did")).to_be_visible()
            shot(coord, f"visit-{visit}")
        expect(coord.get_by_text(f"End of treatment on {trial.clock.now.date().isoformat()}")).to_be_visible()
        coord.goto(subject_url)
        expect(coord.locator(".cmv-plot")).to_be_visible()
        expect(coord.get_by_role("row", name="FU3M")).to_contain_text("scheduled")
        shot(coord, "subject-after-treatment")

        # a value outside its hard limit shows the message beside the field as it is typed
        coord.get_by_role("link", name="TW2", exact=True).click()
        weight = coord.locator("#form-vitals-0").get_by_label("Body weight")
        weight.fill("600")
        expect(coord.locator("#v-vitals-weight-kg-error")).to_contain_text("hard limit 500 kg")
        expect(weight).to_have_attribute("aria-invalid", "true")
        shot(coord, "visit-hard-limit")

        # --- an adverse event with its CTCAE grade text ----------------------------------
        coord.goto(subject_url)
        coord.get_by_role("link", name="Record an adverse event").click()
        coord.get_by_label("Term (CTCAE").fill("Neutropenia")
        expect(coord.locator("#ae-grades")).to_contain_text("Neutrophil count decreased")
        coord.get_by_label("3", exact=True).check()
        expect(coord.locator("#ae-grades dd.chosen")).to_contain_text("0.5 x 10e9 /L")
        coord.get_by_label("Start date").fill(trial.clock.now.date().isoformat())
        coord.get_by_label("Outcome").select_option("RECOVERING/RESOLVING")
        for index in range(2):
            coord.locator(f'select[name="drug_{index}_relatedness"]').select_option("possible")
            coord.locator(f'select[name="drug_{index}_action"]').select_option("DOSE NOT CHANGED")
        shot(coord, "adverse-event-form")
        coord.get_by_role("button", name="Record adverse event").click()
        expect(coord.get_by_text("Adverse event recorded.")).to_be_visible()
        expect(coord.get_by_role("heading", name="AE 1: Neutrophil count decreased")).to_be_visible()

        # --- the investigator signs the visit --------------------------------------------
        investigator = sign_in("inv-a")
        investigator.goto(subject_url)
        investigator.get_by_role("link", name="TW2", exact=True).click()
        investigator.get_by_label("Your password").fill(PASSWORD)
        investigator.get_by_role("button", name="Sign TW2").click()
        expect(investigator.get_by_text("Visit signed.")).to_be_visible()
        expect(investigator.locator("#signatures-title + p")).to_contain_text("valid")
        shot(investigator, "signed")

        # --- a monitor opens a query, the site answers it --------------------------------
        monitor = sign_in("mon-a")
        monitor.goto(subject_url)
        monitor.get_by_role("link", name="TW1", exact=True).click()
        monitor.get_by_label("The value in question").select_option(label="CMV-DNA (plasma): cmv_dna = 5000 copies/mL")
        monitor.get_by_label("Question to the site").fill("Please confirm the load against the lab report.")
        monitor.get_by_role("button", name="Open query").click()
        expect(monitor.get_by_text("Query opened.")).to_be_visible()
        expect(monitor.locator("#v-cmv-load-cmv-dna-notes")).to_contain_text("Please confirm the load")
        shot(monitor, "query-opened")

        coord.goto(base + "/")
        expect(coord.locator("#panel-queries")).to_be_visible()
        menu(coord, "Queries")
        coord.get_by_role("link", name="Query 1").click()
        coord.get_by_label("Your answer").fill("Confirmed against the laboratory report.")
        coord.get_by_role("button", name="Send answer").click()
        expect(coord.get_by_text("Answer sent to the monitor.")).to_be_visible()
        monitor.goto(base + "/queries/1")
        monitor.get_by_role("button", name="Close query").click()
        expect(monitor.get_by_text("Query closed.")).to_be_visible()
        shot(monitor, "query-closed")

        # --- the statistician downloads the report ---------------------------------------
        statistician = sign_in("stat")
        menu(statistician, "Reports")
        with statistician.expect_download() as download_info:
            statistician.get_by_role("button", name="Download the report (HTML)").click()
        report = download_info.value
        saved = ARTIFACTS / "report.html"
        report.save_as(saved)
        text = saved.read_text(encoding="utf-8")
        assert "<svg" in text and "CONSORT" in text
        shot(statistician, "reports")

        # --- a tablet in portrait shows the subject page in one column -------------------
        coord.set_viewport_size({"width": 768, "height": 1024})
        coord.goto(subject_url)
        shot(coord, "subject-tablet")
    assert problems == []
    assert (ARTIFACTS / "01-dashboard.png").stat().st_size > 10_000
