"""What the page routes of issues 3-8 share: path parameters, the adapter's clock, notices after
a redirect (POST → 303 → GET shows what happened, and a reload does not post twice)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Path, Query

from cmvtrial.adapters.api.context import AppContext
from cmvtrial.adapters.api.routers.params import MAX_ID
from cmvtrial.adapters.web.rendering import text_field
from cmvtrial.errors import InvalidInput

SubjectPath = Annotated[int, Path(ge=1, le=MAX_ID)]
VisitPath = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$")]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
FormPath = Annotated[str, Path(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
NoticeQuery = Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]+$")]

#: What a redirect after a successful form says on the page it lands on.
NOTICES = {
    "registered": "Candidate registered. Enter the screening data next.",
    "screening_saved": "Screening data saved; eligibility judged again.",
    "consent": "Consent date recorded.",
    "screen_failure": "Screen failure recorded.",
    "randomized": "Subject randomized.",
    "withdrawn": "Withdrawal recorded; the visits planned after it are cancelled.",
    "completed": "Completion recorded.",
    "dose": "Administration recorded.",
    "visit": "Visit recorded.",
    "form_saved": "Form saved.",
    "signed": "Visit signed.",
    "query_opened": "Query opened.",
    "answered": "Answer sent to the monitor.",
    "closed": "Query closed.",
    "reopened": "Query sent back to the site.",
    "ae_recorded": "Adverse event recorded.",
    "ae_updated": "Adverse event updated.",
    "sae_submitted": "SAE report marked as submitted.",
    "confirmed": "Proposal confirmed.",
    "dismissed": "Proposal dismissed.",
}


def notice_text(code: str | None) -> str:
    return NOTICES.get(code or "", "")


def today(context: AppContext) -> date:
    return context.clock().date()


def now(context: AppContext) -> datetime:
    return context.clock()


def form_date(form: Any, name: str, *, required: bool = False) -> date | None:
    """A date field (YYYY-MM-DD); InvalidInput naming the field when it is not one."""
    text = text_field(form, name)
    if not text:
        if required:
            raise InvalidInput("enter a date (YYYY-MM-DD)", field=name)
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"'{text}' is not a date YYYY-MM-DD", field=name, value=text) from None
