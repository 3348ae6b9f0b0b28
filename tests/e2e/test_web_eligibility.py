"""The eligibility checker page: fields generated from the protocol's screening form, the verdict
criterion by criterion, a blank meaning "not entered", errors next to their fields, and the
fragment the page script swaps in as values are typed."""

from __future__ import annotations

import json
import re

import pytest
from web_support import csrf_in, web_trial  # noqa: F401

from cmvtrial.adapters.web.screening_form import GROUP_GIVEN, GROUP_NONE, NONE_OF_THESE

#: The answers of tests/fixtures/screening/eligible.json, as the form sends them.
ELIGIBLE = {
    "screening_date": "2024-05-20", "birth_date": "1985-09-12", "sex": "F", "weight_kg": "58.5",
    "weight_kg__unit": "kg", "diagnosis": "SLE", "cmv_dna": "4200", "cmv_dna__unit": "copies/mL",
    "serum_creatinine": "68", "serum_creatinine__unit": "umol/L", "alt": "42", "alt__unit": "U/L",
    "ast": "38", "ast__unit": "U/L", "alt_uln": "40", "alt_uln__unit": "U/L", "ast_uln": "40", "ast_uln__unit": "U/L",
    "total_bilirubin": "12.5", "total_bilirubin__unit": "umol/L", "total_bilirubin_uln": "21",
    "total_bilirubin_uln__unit": "umol/L", "corticosteroid": GROUP_GIVEN, "corticosteroid.drug": "methylprednisolone",
    "corticosteroid.daily_dose_mg": "32", "nyha_class": "1", "other_infections": NONE_OF_THESE,
    "il2_allergy": "no", "malignancy": "no", "uncontrolled_psychiatric": "no", "pregnant_or_breastfeeding": "no",
    "severe_comorbidities": NONE_OF_THESE,
}


@pytest.fixture
def coordinator(web_trial):
    client = web_trial.client()
    assert web_trial.web_login(client, "coord-a").status_code == 303
    return client


def check(client, answers, *, fragment=False):
    csrf = csrf_in(client.get("/eligibility").text)
    headers = {"X-Fragment": "1"} if fragment else {}
    return client.post("/eligibility/check", data={**answers, "csrf_token": csrf}, headers=headers)


def field_errors(html):
    return json.loads(re.search(r"data-errors='([^']*)'", html).group(1).replace("&#34;", '"').replace("&quot;", '"'))


def test_the_form_is_generated_from_the_protocols_screening_form(web_trial, coordinator):
    html = coordinator.get("/eligibility").text
    for label in ("Plasma CMV-DNA load", "Serum creatinine", "NYHA functional class", "Corticosteroid"):
        assert label in html
    assert '<option value="[IU]/mL">IU/mL</option>' in html  # the protocol's alternative unit
    assert 'data-live="#eligibility-result"' in html and 'aria-live="polite"' in html
    for control_id in re.findall(r'<(?:input|select) id="([^"]+)"', html):
        assert f'for="{control_id}"' in html or "choice" in html, control_id  # every control is labelled


def test_a_complete_eligible_candidate(coordinator):
    response = check(coordinator, ELIGIBLE)
    assert response.status_code == 200
    assert "Eligible" in response.text and "Not eligible" not in response.text
    assert 'value="4200"' in response.text  # the answers stay in the form


def test_a_blank_is_not_entered_so_the_verdict_is_undetermined(coordinator):
    answers = {key: value for key, value in ELIGIBLE.items() if not key.startswith("serum_creatinine")}
    response = check(coordinator, answers)
    assert "Undetermined" in response.text and "serum creatinine" in response.text


def test_one_exclusion_makes_the_candidate_not_eligible(coordinator):
    response = check(coordinator, {**ELIGIBLE, "nyha_class": "3"})
    assert "Not eligible" in response.text and "(excludes)" in response.text


def test_the_iu_unit_is_converted_by_the_protocols_factor(coordinator):
    response = check(coordinator, {**ELIGIBLE, "cmv_dna": "900", "cmv_dna__unit": "[IU]/mL"})
    assert "cmv_dna_copies_per_ml = 990" in response.text


def test_the_fragment_is_only_the_result(coordinator):
    response = check(coordinator, ELIGIBLE, fragment=True)
    assert response.status_code == 200
    assert "<html" not in response.text and "Eligible" in response.text
    assert field_errors(response.text) == {}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"weight_kg": "heavy"}, "weight_kg", "not a number"),
        ({"weight_kg": "600"}, "weight_kg", "hard limit"),
        ({"nyha_class": "2.5"}, "nyha_class", "whole number"),
        ({"screening_date": "1980-01-01"}, "screening_date", "before the birth date"),
        ({"other_infections": [NONE_OF_THESE, "hiv"]}, "other_infections", "not both"),
        ({"corticosteroid": GROUP_NONE}, "corticosteroid", "None taken"),
    ],
)
def test_a_bad_answer_is_shown_next_to_its_field(coordinator, change, field, words):
    page = check(coordinator, {**ELIGIBLE, **change})
    assert page.status_code == 422
    slot = re.search(rf'<p class="field-error" id="[^"]+" data-for="{re.escape(field)}">([^<]+)</p>', page.text)
    assert slot and words in slot.group(1), page.text[:300]
    fragment = check(coordinator, {**ELIGIBLE, **change}, fragment=True)
    assert fragment.status_code == 200 and words in field_errors(fragment.text)[field]


def test_a_session_that_ended_gets_a_fragment_asking_to_sign_in(web_trial, coordinator):
    csrf = csrf_in(coordinator.get("/eligibility").text)
    web_trial.clock.advance(days=1)
    response = coordinator.post("/eligibility/check", data={"csrf_token": csrf}, headers={"X-Fragment": "1"})
    assert response.status_code == 401 and "Sign in again" in response.text and "<html" not in response.text
