"""Visit pages: forms generated from the protocol with units and limits, errors and edit-check
messages beside the fields (as typed and after saving), recording the visit, the investigator's
signature with the password again, and a monitor's query opened next to the value."""

from __future__ import annotations

from datetime import date

import pytest
from test_web_subjects import error_next_to, signed_in
from trial_flow import HEMATOLOGY, enter, randomized_subject
from web_support import PASSWORD, csrf_in, web_trial  # noqa: F401

from cmvtrial.store.tables import ItemValue, Query, Signature, StudyEvent

DAY0 = date(2025, 3, 14)


@pytest.fixture
def subject(web_trial):
    return randomized_subject(web_trial.client(), web_trial.bearer("coord-a"), "SITEA", "S-1",
                              consent_on=date(2025, 3, 10))["subject_id"]


def test_the_visit_page_shows_every_form_with_units_and_limits(web_trial, subject):
    html = signed_in(web_trial, "coord-a").get(f"/subjects/{subject}/visits/BL").text
    for name in ("Vital signs and body measurements", "CMV-DNA (plasma)", "Complete blood count", "SLEDAI-2K",
                 "Concomitant corticosteroid #1"):
        assert name in html, name
    assert "allowed 1–500 kg · usually 30–150 kg" in html  # the protocol's hard and soft limits
    assert '<option value="[IU]/mL">IU/mL</option>' in html  # an alternative unit the item accepts
    assert 'for="v-hematology-anc"' in html and 'id="v-hematology-anc-error"' in html


def test_a_value_outside_its_hard_limit_is_refused_beside_the_field_and_nothing_is_stored(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/visits/BL").text)
    before = (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count())
    bad = client.post(f"/subjects/{subject}/visits/BL/forms/vitals",
                      data={"weight_kg": "600", "weight_kg__unit": "kg", "repeat": "0", "csrf_token": token})
    assert bad.status_code == 422
    assert "hard limit 500 kg" in error_next_to(bad.text, "v-vitals-weight-kg")
    assert 'value="600"' in bad.text  # what was typed stays
    not_a_number = client.post(f"/subjects/{subject}/visits/BL/forms/vitals",
                               data={"weight_kg": "heavy", "weight_kg__unit": "kg", "csrf_token": token})
    assert not_a_number.status_code == 422 and "not a number" in error_next_to(not_a_number.text, "v-vitals-weight-kg")
    assert (web_trial.count(ItemValue), web_trial.count(StudyEvent), web_trial.audit_count()) == before


def test_the_live_check_puts_each_message_beside_its_field_and_stores_nothing(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/visits/BL").text)
    stored = web_trial.count(ItemValue)
    path = f"/subjects/{subject}/visits/BL/forms/hematology/check"
    live = client.post(path, headers={"X-Fragment": "1"},
                       data={"wbc": "2", "wbc__unit": "10*9/L", "anc": "3", "anc__unit": "10*9/L", "csrf_token": token})
    assert live.status_code == 200 and "neutrophil count exceeds" in live.text  # a soft edit check, EC03
    hard = client.post(path, headers={"X-Fragment": "1"}, data={"wbc": "-1", "wbc__unit": "10*9/L", "csrf_token": token})
    assert "hard limit" in hard.text and "data-errors" in hard.text
    fine = client.post(path, headers={"X-Fragment": "1"}, data={"wbc": "5", "wbc__unit": "10*9/L", "csrf_token": token})
    assert "Still missing" in fine.text
    assert web_trial.count(ItemValue) == stored


def test_saving_a_form_shows_what_it_did_and_the_query_beside_the_value(web_trial, subject):
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/visits/BL").text)
    saved = client.post(f"/subjects/{subject}/visits/BL/forms/vitals", data={
        "weight_kg": "20", "weight_kg__unit": "kg", "height_cm": "160", "height_cm__unit": "cm",
        "visit_date": DAY0.isoformat(), "csrf_token": token})
    assert saved.status_code == 200 and "What the entry did" in saved.text and "Queries opened" in saved.text
    assert "expected limit 30 kg" in saved.text
    page = client.get(f"/subjects/{subject}/visits/BL").text
    assert 'id="v-vitals-weight-kg-notes"' in page and "please confirm" in page  # the open query, beside the field
    assert 'value="20"' in page
    change = client.post(f"/subjects/{subject}/visits/BL/forms/vitals", data={
        "weight_kg": "58", "weight_kg__unit": "kg", "height_cm": "160", "height_cm__unit": "cm", "csrf_token": token})
    assert change.status_code == 422 and "reason" in error_next_to(change.text, "f-vitals-0-reason")
    corrected = client.post(f"/subjects/{subject}/visits/BL/forms/vitals", data={
        "weight_kg": "58", "weight_kg__unit": "kg", "height_cm": "160", "height_cm__unit": "cm",
        "reason": "typo: 20 for 58", "csrf_token": token})
    assert corrected.status_code == 200 and "Queries closed" in corrected.text


def test_a_visit_is_recorded_missed_only_with_a_reason(web_trial, subject):
    web_trial.clock.advance(days=10)
    client = signed_in(web_trial, "coord-a")
    token = csrf_in(client.get(f"/subjects/{subject}/visits/TW1").text)
    bare = client.post(f"/subjects/{subject}/visits/TW1", data={"missed": "yes", "csrf_token": token})
    assert bare.status_code == 422 and "reason" in error_next_to(bare.text, "f-record-reason")
    missed = client.post(f"/subjects/{subject}/visits/TW1", data={"missed": "yes", "reason": "admitted elsewhere",
                                                                   "csrf_token": token})
    assert missed.status_code == 303
    assert "visit-missed" in client.get(f"/subjects/{subject}").text


def test_the_investigator_signs_with_the_password_and_only_once(web_trial, subject):
    assert enter(web_trial.client(), web_trial.bearer("coord-a"), subject, "BL", {"hematology": HEMATOLOGY},
                 complete=True).status_code == 200
    assert "Sign BL" not in signed_in(web_trial, "coord-a").get(f"/subjects/{subject}/visits/BL").text
    client = signed_in(web_trial, "inv-a")
    token = csrf_in(client.get(f"/subjects/{subject}/visits/BL").text)
    wrong = client.post(f"/subjects/{subject}/visits/BL/sign", data={"password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "wrong password" in error_next_to(wrong.text, "f-sign-password")
    assert web_trial.count(Signature) == 0
    signed = client.post(f"/subjects/{subject}/visits/BL/sign", data={"password": PASSWORD, "meaning": "approval",
                                                                       "csrf_token": token})
    assert signed.status_code == 303
    page = client.get(signed.headers["location"]).text
    assert "Visit signed." in page and "approval — valid" in page
    twice = client.post(f"/subjects/{subject}/visits/BL/sign", data={"password": PASSWORD, "csrf_token": token})
    assert twice.status_code == 409 and web_trial.count(Signature) == 1


def test_a_monitor_opens_a_query_on_a_stored_value_from_the_visit_page(web_trial, subject):
    enter(web_trial.client(), web_trial.bearer("coord-a"), subject, "BL", {"hematology": HEMATOLOGY})
    client = signed_in(web_trial, "mon-a")
    page = client.get(f"/subjects/{subject}/visits/BL").text
    assert 'value="hematology.anc#0"' in page and "Save Complete blood count" not in page
    token = csrf_in(page)
    empty = client.post(f"/subjects/{subject}/visits/BL/queries", data={"target": "hematology.anc#0", "text": " ",
                                                                         "csrf_token": token})
    assert empty.status_code == 422 and "required" in error_next_to(empty.text, "f-query-text")
    opened = client.post(f"/subjects/{subject}/visits/BL/queries", data={
        "target": "hematology.anc#0", "text": "Please confirm the ANC.", "csrf_token": token})
    assert opened.status_code == 303 and web_trial.count(Query) == 1
    assert "Please confirm the ANC." in client.get(f"/subjects/{subject}/visits/BL").text


def test_another_site_cannot_see_or_post_to_a_visit(web_trial, subject):
    client = signed_in(web_trial, "coord-b")
    assert client.get(f"/subjects/{subject}/visits/BL").status_code == 403
    token = csrf_in(client.get("/subjects").text)
    before = (web_trial.count(ItemValue), web_trial.audit_count())
    refused = client.post(f"/subjects/{subject}/visits/BL/forms/hematology",
                          data={"wbc": "5", "wbc__unit": "10*9/L", "csrf_token": token})
    assert refused.status_code == 403
    assert client.post(f"/subjects/{subject}/visits/BL", data={"visit_date": DAY0.isoformat(),
                                                               "csrf_token": token}).status_code == 403
    assert (web_trial.count(ItemValue), web_trial.audit_count()) == before
