"""Query pages: the list by status and one query's thread, answered by the site and closed or sent
back by the monitor who opened it; each step out of turn refused without changing anything."""

from __future__ import annotations

from datetime import date

from test_web_subjects import error_next_to, signed_in
from trial_flow import HEMATOLOGY, enter, randomized_subject
from web_support import csrf_in, web_trial  # noqa: F401


def opened_query(web_trial):
    client, coord = web_trial.client(), web_trial.bearer("coord-a")
    subject = randomized_subject(client, coord, "SITEA", "S-1", consent_on=date(2025, 3, 10))["subject_id"]
    enter(client, coord, subject, "BL", {"hematology": HEMATOLOGY})
    body = {"subject_id": subject, "visit": "BL", "form": "hematology", "item": "anc", "text": "Please confirm."}
    return client.post("/api/v1/queries", json=body, headers=web_trial.bearer("mon-a")).json()["id"]


def test_the_site_answers_and_the_monitor_closes_in_the_thread(web_trial):
    query = opened_query(web_trial)
    coordinator = signed_in(web_trial, "coord-a")
    listed = coordinator.get("/queries").text
    assert f'href="/queries/{query}"' in listed and "Please confirm." in listed
    page = coordinator.get(f"/queries/{query}").text
    assert "Your answer" in page and "Close query" not in page
    token = csrf_in(page)
    empty = coordinator.post(f"/queries/{query}/answer", data={"answer": " ", "csrf_token": token})
    assert empty.status_code == 422 and "required" in error_next_to(empty.text, "f-answer")
    answered = coordinator.post(f"/queries/{query}/answer", data={"answer": "Confirmed.", "csrf_token": token})
    assert answered.status_code == 303
    twice = coordinator.post(f"/queries/{query}/answer", data={"answer": "Again.", "csrf_token": token})
    assert twice.status_code == 409
    monitor = signed_in(web_trial, "mon-a")
    thread = monitor.get(f"/queries/{query}").text
    assert "Confirmed." in thread and "Send back to the site" in thread
    token = csrf_in(thread)
    back = monitor.post(f"/queries/{query}/reopen", data={"text": "Attach the report.", "csrf_token": token})
    assert back.status_code == 303 and "[reopened] Attach the report." in monitor.get(f"/queries/{query}").text
    closed = monitor.post(f"/queries/{query}/close", data={"reason": "resolved by phone", "csrf_token": token})
    assert closed.status_code == 303 and "Query closed." in monitor.get(closed.headers["location"]).text
    assert f'href="/queries/{query}"' in monitor.get("/queries?status=closed").text


def test_another_site_and_other_monitors_cannot_act_on_the_thread(web_trial):
    query = opened_query(web_trial)
    other = signed_in(web_trial, "coord-b")
    assert other.get(f"/queries/{query}").status_code == 403
    assert f'href="/queries/{query}"' not in other.get("/queries").text
    token = csrf_in(other.get("/queries").text)
    assert other.post(f"/queries/{query}/answer", data={"answer": "x", "csrf_token": token}).status_code == 403
    manager = signed_in(web_trial, "dm")
    token = csrf_in(manager.get(f"/queries/{query}").text)
    assert manager.post(f"/queries/{query}/close", data={"reason": "x", "csrf_token": token}).status_code == 403
    assert signed_in(web_trial, "stat").get("/queries").status_code == 403
