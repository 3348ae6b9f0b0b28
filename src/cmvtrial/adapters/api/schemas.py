"""The API's request and response bodies, with the examples the OpenAPI schema shows.

Requests forbid unknown fields, so a misspelt field is an error (``invalid_input`` naming it), not
a silently ignored value. Checks that are trial or account rules (a site code's shape, the
password policy) stay in the services; these models only fix the JSON shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_EXAMPLE_TIME = "2025-03-14T09:26:53Z"


def _example(**values: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [values]})


Reason = Field(None, max_length=2000, description="Why the change is made; kept in the audit trail.")


# --- signing in ----------------------------------------------------------------------------


class LoginRequest(BaseModel):
    model_config = _example(username="demo-coordinator", password="a-long-pass-phrase")

    username: str = Field(max_length=200)
    password: str = Field(max_length=2000)


class SessionOut(BaseModel):
    """The signed-in user; send ``csrf_token`` as the X-CSRF-Token header with every POST/DELETE."""

    model_config = _example(
        username="demo-coordinator", role="coordinator", site_id=1,
        csrf_token="4b1f0c…", expires_at=_EXAMPLE_TIME,
    )

    username: str
    role: str
    site_id: int | None
    csrf_token: str
    expires_at: datetime


class MeOut(BaseModel):
    model_config = _example(user_id=3, username="demo-coordinator", role="coordinator", site_id=1, via="token")

    user_id: int
    username: str
    role: str
    site_id: int | None = Field(description="None: the user works for all sites.")
    via: Literal["session", "token"]


class TokenWithPasswordRequest(BaseModel):
    model_config = _example(username="demo-data-manager", password="a-long-pass-phrase", name="nightly export")

    username: str = Field(max_length=200)
    password: str = Field(max_length=2000)
    name: str = Field(max_length=200, description="What the token is for.")


class NewTokenRequest(BaseModel):
    model_config = _example(name="lab import script", reason="automated lab feed")

    name: str = Field(max_length=200, description="What the token is for.")
    reason: str | None = Reason


class IssuedTokenOut(BaseModel):
    """A new token: ``token`` is shown this once; send it as ``Authorization: Bearer <token>``."""

    model_config = _example(
        id=4, name="lab import script", token="cmvt_Zx3…", prefix="cmvt_Zx3q9Lk", expires_at=_EXAMPLE_TIME
    )

    id: int
    name: str
    token: str
    prefix: str
    expires_at: datetime | None


class TokenOut(BaseModel):
    model_config = _example(
        id=4, username="demo-coordinator", name="lab import script", prefix="cmvt_Zx3q9Lk",
        created_at=_EXAMPLE_TIME, expires_at=_EXAMPLE_TIME, last_used_at=None, revoked_at=None, active=True,
    )

    id: int
    username: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class RevokeRequest(BaseModel):
    model_config = _example(reason="token leaked in a log file")

    reason: str | None = Reason


# --- sites, users, the trial ---------------------------------------------------------------


class SiteIn(BaseModel):
    model_config = _example(code="PUMCH", name="Peking Union Medical College Hospital", reason="second site")

    code: str = Field(max_length=200, description="2-16 letters, digits, - or _; stored upper-case.")
    name: str = Field(max_length=1000)
    reason: str | None = Reason


class SiteOut(BaseModel):
    model_config = _example(id=1, code="PKUPH", name="Peking University People's Hospital", active=True,
                            created_at=_EXAMPLE_TIME)

    id: int
    code: str
    name: str
    active: bool
    created_at: datetime


class UserIn(BaseModel):
    model_config = _example(
        username="li.wei", password="a-long-pass-phrase", role="coordinator", site_code="PKUPH",
        full_name="Li Wei", reason="new study coordinator",
    )

    username: str = Field(max_length=200)
    password: str = Field(max_length=2000, description="At least 12 characters.")
    role: str = Field(description="admin, investigator, coordinator, monitor, data-manager or statistician.")
    site_code: str | None = Field(None, max_length=200, description="Omit for a user of all sites.")
    full_name: str | None = Field(None, max_length=200)
    reason: str | None = Reason


class UserOut(BaseModel):
    model_config = _example(id=3, username="li.wei", role="coordinator", site_id=1, site_code="PKUPH",
                            active=True, full_name="Li Wei", created_at=_EXAMPLE_TIME)

    id: int
    username: str
    role: str
    site_id: int | None
    site_code: str | None
    active: bool
    full_name: str | None
    created_at: datetime


class TrialStatusOut(BaseModel):
    model_config = _example(
        protocol_id="sle-cmv-il2", protocol_version="1.0", title="Low-dose IL-2 for CMV viremia in SLE",
        sha256="9f2c…", initialised_at=_EXAMPLE_TIME, sites=[], users_by_role={"admin": 1},
        subjects_by_status={"screening": 2}, audit_events=12,
    )

    protocol_id: str
    protocol_version: str
    title: str
    sha256: str
    initialised_at: datetime
    sites: list[SiteOut]
    users_by_role: dict[str, int]
    subjects_by_status: dict[str, int]
    audit_events: int


class HealthOut(BaseModel):
    model_config = _example(status="ok")

    status: Literal["ok"]


# --- the audit trail -----------------------------------------------------------------------


class AuditEventOut(BaseModel):
    model_config = _example(
        sequence=12, occurred_at=_EXAMPLE_TIME, username="admin", action="site.create", entity_type="site",
        entity_id="1", site_id=1, before=None, after={"code": "PKUPH"}, reason="demo set-up", hash="ab12…",
    )

    sequence: int
    occurred_at: datetime
    username: str
    action: str
    entity_type: str
    entity_id: str
    site_id: int | None
    before: Any = Field(description="The values before the change (JSON), or null.")
    after: Any = Field(description="The values after the change (JSON), or null.")
    reason: str | None
    hash: str


class VerificationOut(BaseModel):
    model_config = _example(ok=True, count=12, first_broken_sequence=None, reason=None, last_hash="ab12…")

    ok: bool
    count: int
    first_broken_sequence: int | None
    reason: str | None
    last_hash: str | None


# --- calculators ---------------------------------------------------------------------------


class CriterionOut(BaseModel):
    model_config = _example(id="INC3", kind="inclusion", text="CMV-DNA > 10^3 copies/mL", verdict="met",
                            values={"cmv_dna_copies_per_ml": 4200.0}, missing=[])

    id: str
    kind: Literal["inclusion", "exclusion"]
    text: str
    verdict: Literal["met", "not_met", "unknown"]
    values: dict[str, Any]
    missing: list[str]


class EligibilityOut(BaseModel):
    """``eligible``: true, false, or null when undetermined (something needed is missing)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "eligible": None,
        "criteria": [{"id": "EXC3", "kind": "exclusion", "text": "CrCl <= 30 mL/min", "verdict": "unknown",
                      "values": {}, "missing": ["serum_creatinine"]}],
        "derived": {"age_years": {"value": 38, "unit": "a"}},
    }]})

    eligible: bool | None
    criteria: list[CriterionOut]
    derived: dict[str, dict[str, Any]]


#: The example screening record of docs/screening-record.md.
SCREENING_RECORD_EXAMPLE: dict[str, Any] = {
    "screening_date": "2024-05-20", "birth_date": "1985-09-12", "sex": "F", "weight_kg": 58.5,
    "diagnosis": "SLE", "cmv_dna": {"value": 4200, "unit": "copies/mL"},
    "serum_creatinine": {"value": 68, "unit": "umol/L"}, "alt": {"value": 42, "unit": "U/L"},
    "ast": {"value": 38, "unit": "U/L"}, "alt_uln": 40, "ast_uln": 40,
    "total_bilirubin": {"value": 12.5, "unit": "umol/L"}, "total_bilirubin_uln": 21,
    "corticosteroid": {"drug": "methylprednisolone", "daily_dose_mg": 32}, "nyha_class": 1,
    "other_infections": [], "il2_allergy": False, "malignancy": False, "uncontrolled_psychiatric": False,
    "pregnant_or_breastfeeding": False, "severe_comorbidities": [],
}


class GradeIn(BaseModel):
    model_config = _example(term="Neutrophil count decreased", value=0.8, unit="10^9/L", lln=2.0)

    term: str = Field(max_length=200, description="A CTCAE v5.0 term.")
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(max_length=64)
    lln: float | None = Field(None, allow_inf_nan=False, description="In the value's unit.")
    uln: float | None = Field(None, allow_inf_nan=False, description="In the value's unit.")
    baseline: float | None = Field(None, allow_inf_nan=False, description="In the value's unit.")


class GradeOut(BaseModel):
    model_config = _example(term="Neutrophil count decreased", grade=3, criterion="<1000 - 500/mm3; <1.0 - 0.5 x 10e9 /L",
                            meddra_code="10029366", reasons=["0.8 10*9/L < 1.0"], value=0.8, unit="10*9/L")

    term: str
    grade: int
    criterion: str
    meddra_code: str
    reasons: list[str]
    value: float
    unit: str
