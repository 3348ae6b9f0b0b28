"""The path a subject takes through the API, as steps the API and page tests share: register,
screen (eligible or not), consent, randomize, then visit data. Each step asserts its own success,
so a test reads as the story it tells and fails where the story breaks."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "screening"


def screening_record(name: str = "eligible.json", **changes: Any) -> dict[str, Any]:
    return {**json.loads((FIXTURES / name).read_text(encoding="utf-8")), **changes}


def register(client: Any, headers: dict[str, str], site: str, number: str) -> int:
    response = client.post("/api/v1/subjects", json={"site_code": site, "screening_number": number}, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def screen(client: Any, headers: dict[str, str], subject_id: int, record: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/api/v1/subjects/{subject_id}/screening", json={"record": record}, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def randomized_subject(client: Any, headers: dict[str, str], site: str, number: str, *,
                       consent_on: date) -> dict[str, Any]:
    """A subject registered, screened eligible, consented and randomized; the allocation."""
    subject_id = register(client, headers, site, number)
    assert screen(client, headers, subject_id, screening_record())["eligibility"]["eligible"] is True
    consent = client.post(f"/api/v1/subjects/{subject_id}/consent", json={"date": consent_on.isoformat()},
                          headers=headers)
    assert consent.status_code == 200, consent.text
    allocation = client.post(f"/api/v1/subjects/{subject_id}/randomization", json={}, headers=headers)
    assert allocation.status_code == 201, allocation.text
    return dict(allocation.json())


HEMATOLOGY = {"wbc": 5.2, "anc": 3.1, "lymphocytes": 1.2, "platelets": 210, "hemoglobin": 128}


def cmv_load(on: date, copies: float | None) -> dict[str, Any]:
    """The CMV-DNA form: a quantified load, or (None) not detected (load 0: nothing to quantify)."""
    if copies is None:
        return {"collection_date": on.isoformat(), "result": "not_detected", "cmv_dna": 0}
    return {"collection_date": on.isoformat(), "result": "quantified", "cmv_dna": {"value": copies, "unit": "copies/mL"}}


def enter(client: Any, headers: dict[str, str], subject_id: int, visit: str, forms: dict[str, Any], *,
          on: date | None = None, **extra: Any) -> Any:
    body: dict[str, Any] = {"forms": forms, **extra}
    if on is not None:
        body["date"] = on.isoformat()
    return client.post(f"/api/v1/subjects/{subject_id}/visits/{visit}/data", json=body, headers=headers)


def week(start: date, n: int) -> date:
    return start + timedelta(days=7 * n)
