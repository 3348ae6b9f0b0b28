"""Subject pages: the list with search, registering with errors beside the fields, the screening
form (live verdict, save, removal needs a reason), consent, randomization with its confirmation
step (never twice), and the subject page's calendar, CMV-DNA plot, doses and labs."""

from __future__ import annotations

import re
from datetime import date

import pytest
from trial_flow import HEMATOLOGY, cmv_load, enter, randomized_subject, register, screen, screening_record
from web_support import csrf_in, web_trial  # noqa: F401

from cmvtrial.store.tables import Allocation, DoseAdministration, ItemValue, Subject

DAY0 = date(2025, 3, 14)


def signed_in(web_trial, username):
    client = web_trial.client()
    assert web_trial.web_login(client, username).status_code == 303
    return client


def error_next_to(html, field_id):
    match = re.search(rf'<p class="field-error" id="{field_id}-error"[^>]*?(hidden)?>([^<]*)</p>', html)
    assert match, f"no error slot for {field_id}"
    return None if match.group(1) else match.group(2)


def screening_form(record):
    """A screening record as the screening page posts it."""
    data = {name: str(record[name]) for name in ("screening_date", "birth_date", "sex", "weight_kg", "diagnosis",
                                                 "alt_uln", "ast_uln", "total_bilirubin_uln", "nyha_class")}
    for name in ("cmv_dna", "serum_creatinine", "alt", "ast", "total_bilirubin"):
        data[name], data[f"{name}__unit"] = str(record[name]["value"]), record[name]["unit"]
    data |= {"corticosteroid": "given", "corticosteroid.drug": record["corticosteroid"]["drug"],
             "corticosteroid.daily_dose_mg": str(record["corticosteroid"]["daily_dose_mg"]),
             "other_infections": "__none__", "severe_comorbidities": "__none__"}
    for name in ("il2_allergy", "malignancy", "uncontrolled_psychiatric", "pregnant_or_breastfeeding"):
        data[name] = "yes" if record[name] else "no"
    return data


def test_a_coordinator_registers_a_candidate_and_errors_show_beside_the_fields(web_trial):
    client = signed_in(web_trial, "coord-a")
    page = client.get("/subjects")
    assert page.status_code == 200 and 'action="/subjects"' in page.text
    token = csrf_in(page.text)
    bad = client.post("/subjects", data={"site": "SITEA", "screening_number": "!!", "csrf_token": token})
    assert bad.status_code == 422 and "is not valid" in error_next_to(bad.text, "f-screening_number")
    assert web_trial.count(Subject) == 0
    made = client.post("/subjects", data={"site": "SITEA", "screening_number": "s-7", "csrf_token": token})
    assert made.status_code == 303 and made.headers["location"].endswith("/screening?notice=registered")
    twice = client.post("/subjects", data={"site": "SITEA", "screening_number": "S-7", "csrf_token": token})
    assert twice.status_code == 409 and "already has" in error_next_to(twice.text, "f-screening_number")
    assert web_trial.count(Subject) == 1
    listed = client.get("/subjects?search=s-7").text
    assert "S-7" in listed and "screening" in listed
    assert "No subjects match" in client.get("/subjects?search=zzz").text


def test_the_screening_page_judges_as_you_type_and_saves_the_verdict(web_trial):
    client = signed_in(web_trial, "coord-a")
    subject = register(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-1")
    page = client.get(f"/subjects/{subject}/screening")
    assert page.status_code == 200 and 'data-live-url="/subjects/' in page.text
    token = csrf_in(page.text)
    form = screening_form(screening_record())
    live = client.post(f"/subjects/{subject}/screening/check", data={**form, "csrf_token": token},
                       headers={"X-Fragment": "1"})
    assert live.status_code == 200 and "verdict eligible" in live.text and "<html" not in live.text
    assert web_trial.count(ItemValue) == 0  # checking stores nothing
    bad = client.post(f"/subjects/{subject}/screening/check", data={**form, "weight_kg": "heavy", "csrf_token": token},
                      headers={"X-Fragment": "1"})
    assert '"weight_kg": "&#39;heavy&#39; is not a number"' in bad.text or "not a number" in bad.text
    saved = client.post(f"/subjects/{subject}/screening", data={**form, "csrf_token": token})
    assert saved.status_code == 303 and saved.headers["location"] == f"/subjects/{subject}?notice=screening_saved"
    shown = client.get(saved.headers["location"]).text
    assert "Screening data saved" in shown and "✓ Eligible<" in shown
    again = client.get(f"/subjects/{subject}/screening").text
    assert 'value="58.5"' in again and 'value="4200"' in again  # stored values fill the form
    removal = client.post(f"/subjects/{subject}/screening", data={**form, "nyha_class": "", "csrf_token": token})
    assert removal.status_code == 422 and "reason" in error_next_to(removal.text, "f-reason")
    removed = client.post(f"/subjects/{subject}/screening",
                          data={**form, "nyha_class": "", "reason": "not assessed", "csrf_token": token})
    assert removed.status_code == 303


def test_an_ineligible_candidate_is_a_screen_failure_on_the_subject_page(web_trial):
    client = signed_in(web_trial, "coord-a")
    subject = register(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-2")
    token = csrf_in(client.get(f"/subjects/{subject}/screening").text)
    client.post(f"/subjects/{subject}/screening", data={**screening_form(screening_record("not_eligible_nyha3.json")),
                                                        "csrf_token": token})
    html = client.get(f"/subjects/{subject}").text
    assert "screen failed" in html and "✗ Not eligible" in html and "Randomize…" not in html


def test_consent_and_randomization_with_a_confirmation_step_never_twice(web_trial):
    client = signed_in(web_trial, "coord-a")
    subject = register(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-3")
    screen(web_trial.client(), web_trial.bearer("coord-a"), subject, screening_record())
    page = client.get(f"/subjects/{subject}")
    token = csrf_in(page.text)
    future = client.post(f"/subjects/{subject}/consent", data={"consent_date": "2099-01-01", "csrf_token": token})
    assert future.status_code == 422 and "future" in error_next_to(future.text, "f-consent_date")
    done = client.post(f"/subjects/{subject}/consent", data={"consent_date": "2025-03-12", "csrf_token": token})
    assert done.status_code == 303
    assert "Randomize…" in client.get(f"/subjects/{subject}").text
    confirm = client.get(f"/subjects/{subject}/randomize")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    unconfirmed = client.post(f"/subjects/{subject}/randomize", data={"csrf_token": token})
    assert unconfirmed.status_code == 422 and web_trial.count(Allocation) == 0
    made = client.post(f"/subjects/{subject}/randomize", data={"confirm": "yes", "csrf_token": token})
    assert made.status_code == 303 and web_trial.count(Allocation) == 1
    events = web_trial.audit_count()
    twice = client.post(f"/subjects/{subject}/randomize", data={"confirm": "yes", "csrf_token": token})
    assert twice.status_code == 409 and "never repeated" in twice.text and "I confirm" not in twice.text
    assert (web_trial.count(Allocation), web_trial.audit_count()) == (1, events)
    html = client.get(f"/subjects/{subject}").text
    assert "Visit calendar" in html and "calendar.ics" in html and "Subject randomized" not in html


def test_the_subject_page_shows_the_calendar_cmv_plot_doses_and_labs(web_trial):
    api, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject = randomized_subject(api, coord, "SITEA", "S-4", consent_on=date(2025, 3, 10))["subject_id"]
    enter(api, coord, subject, "BL", {"cmv_load": cmv_load(DAY0, 42000), "hematology": HEMATOLOGY})
    client = signed_in(web_trial, "coord-a")
    html = client.get(f"/subjects/{subject}").text
    assert '<svg class="cmv-plot"' in html and "<title id=\"cmv-plot-title\">" in html and "42,000" in html
    assert "Absolute neutrophil count" in html and "3.1" in html
    token = csrf_in(html)
    dose = {"drug": "ganciclovir", "status": "held", "date": DAY0.isoformat(), "reason": "ANC low", "csrf_token": token}
    assert client.post(f"/subjects/{subject}/doses", data=dose).status_code == 303
    bad = client.post(f"/subjects/{subject}/doses", data={**dose, "date": "2099-01-01"})
    assert bad.status_code == 422 and "after today" in error_next_to(bad.text, "f-dose-date")
    assert web_trial.count(DoseAdministration) == 1
    assert "ANC low" in client.get(f"/subjects/{subject}").text


@pytest.mark.parametrize("username", ["coord-b", "stat"])
def test_another_sites_staff_and_the_statistician_cannot_open_a_subject(web_trial, username):
    subject = register(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-5")
    client = signed_in(web_trial, username)
    for path in (f"/subjects/{subject}", f"/subjects/{subject}/screening", f"/subjects/{subject}/randomize"):
        assert client.get(path).status_code == 403, path
    assert "S-5" not in client.get("/subjects").text
