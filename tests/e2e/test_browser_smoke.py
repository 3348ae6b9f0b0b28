"""One walk through the real pages in a real browser: Debian's Chromium, headless, driven by
Playwright (from PyPI; no browser is ever downloaded). `make test` installs Chromium when missing.

A site coordinator signs in with the keyboard, opens the eligibility checker and types a candidate
in; the verdict changes criterion by criterion without submitting, a bad value shows its message
next to the field, and the page raises no script or Content-Security-Policy error. Screenshots are
kept in the test's tmp folder (pytest keeps the last runs' folders) as artifacts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import chromium, collect_problems, serving
from web_support import PASSWORD, WebTrial, make_web_trial


@pytest.fixture
def served(tmp_path: Path, now) -> Iterator[tuple[str, WebTrial]]:
    """The app on a real socket on 127.0.0.1 (a free port), in a thread of this process."""
    trial = make_web_trial(tmp_path, now)
    with serving(trial) as base:
        yield base, trial


def test_a_coordinator_checks_a_candidates_eligibility_in_the_browser(served, tmp_path):
    from playwright.sync_api import expect

    base, _ = served
    problems: list[str] = []
    with chromium() as browser:
        page = collect_problems(browser.new_page(viewport={"width": 1280, "height": 900}), problems)

        # Sign in with the keyboard only: the user name field has focus, Tab, Enter.
        page.goto(base + "/eligibility")
        expect(page).to_have_url(base + "/login?next=%2Feligibility")
        expect(page.locator("#f-username")).to_be_focused()
        page.keyboard.type("coord-a")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(base + "/eligibility")
        expect(page.get_by_role("heading", name="Eligibility check")).to_be_visible()
        result = page.locator("#eligibility-result")

        # Type a candidate in; the verdict follows without pressing the button.
        page.get_by_label("Screening date", exact=True).fill("2024-05-20")
        page.get_by_label("Date of birth", exact=True).fill("1985-09-12")
        page.get_by_label("Sex", exact=True).select_option("F")
        page.get_by_label("Body weight", exact=True).fill("58.5")
        page.get_by_label("Rheumatic disease diagnosis", exact=True).select_option("SLE")
        page.get_by_label("Plasma CMV-DNA load", exact=True).fill("4200")
        expect(result).to_contain_text("Undetermined")
        page.get_by_label("Serum creatinine", exact=True).fill("68")
        page.get_by_label("Unit of Serum creatinine", exact=True).select_option("umol/L")
        page.get_by_label("Alanine aminotransferase (ALT)", exact=True).fill("42")
        page.get_by_label("Aspartate aminotransferase (AST)", exact=True).fill("38")
        page.get_by_label("ALT upper limit of normal (site laboratory)", exact=True).fill("40")
        page.get_by_label("AST upper limit of normal (site laboratory)", exact=True).fill("40")
        page.locator("#f-total-bilirubin").fill("12.5")
        page.locator("#f-total-bilirubin-uln").fill("21")
        page.locator('input[name="corticosteroid"][value="given"]').check()
        page.locator("#f-corticosteroid-drug").select_option("methylprednisolone")
        page.locator("#f-corticosteroid-daily-dose-mg").fill("32")
        page.get_by_label("NYHA functional class", exact=True).fill("1")
        for name in ("other_infections", "severe_comorbidities"):
            page.locator(f'input[name="{name}"][value="__none__"]').check()
        for name in ("il2_allergy", "malignancy", "uncontrolled_psychiatric", "pregnant_or_breastfeeding"):
            page.locator(f'input[name="{name}"][value="no"]').check()
        expect(result.locator(".verdict")).to_have_text("✓ Eligible")
        page.screenshot(path=str(tmp_path / "eligible.png"), full_page=True)

        # One exclusion, then a value that cannot be read: the message sits next to its field.
        page.get_by_label("NYHA functional class", exact=True).fill("3")
        expect(result.locator(".verdict")).to_have_text("✗ Not eligible")
        page.get_by_label("Body weight", exact=True).fill("heavy")
        error = page.locator("#f-weight-kg-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("not a number")
        expect(page.get_by_label("Body weight", exact=True)).to_have_attribute("aria-invalid", "true")
        page.screenshot(path=str(tmp_path / "field-error.png"), full_page=True)
        page.get_by_label("Body weight", exact=True).fill("58.5")
        expect(error).to_be_hidden()

        # A tablet in portrait shows the same page in one column; then sign out.
        page.set_viewport_size({"width": 768, "height": 1024})
        page.screenshot(path=str(tmp_path / "tablet.png"), full_page=True)
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(base + "/login?signed_out=1")
    assert problems == []
    assert (tmp_path / "eligible.png").stat().st_size > 10_000
