"""Data queries: list them, open one on a stored value (monitor, data manager), answer it (the
site), close or reopen it (whoever opened it)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from cmvtrial.adapters.api.deps import ActorDep, ContextDep
from cmvtrial.adapters.api.problems import AUTHENTICATED, problem_responses
from cmvtrial.adapters.api.routers.params import MAX_ID, SiteFilter, SubjectFilter
from cmvtrial.services import queries

router = APIRouter(tags=["queries"])

QueryId = Annotated[int, Path(ge=1, le=MAX_ID, description="The query's id.")]


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "subject_id": 7, "visit": "TW1", "form": "hematology", "item": "anc", "repeat": 0,
        "text": "ANC 0.3 x 10^9/L while platelets are normal: please confirm against the lab report."}]})

    subject_id: int = Field(ge=1, le=MAX_ID)
    visit: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$", description="The visit label (BL, TW1, ...).")
    form: str = Field(max_length=64)
    item: str = Field(max_length=128, description="The item's path in the form (a group's item: group.item).")
    repeat: int = Field(0, ge=0, le=1000, description="Which copy of a repeating form (0 = first).")
    text: str = Field(max_length=queries.MAX_TEXT, description="The question to the site.")


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"answer": "Confirmed against the laboratory report of 2025-03-10."}]})

    answer: str = Field(max_length=queries.MAX_TEXT)


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"reason": None}]})

    reason: str | None = Field(None, max_length=2000, description="Required to close a query nobody answered.")


class ReopenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "The report attached says 1.3, not 0.3; please correct the value."}]})

    text: str = Field(max_length=queries.MAX_TEXT, description="Why the answer does not resolve it.")


class QueryOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 5, "subject_id": 7, "subject": "PKUPH-001", "site_code": "PKUPH", "visit": "TW1", "form": "hematology",
        "item": "anc", "value": "0.3", "origin": "manual", "edit_check_id": None, "status": "answered",
        "text": "Please confirm.", "answer": "Confirmed.", "opened_at": "2025-03-11T08:00:00Z", "opened_by": "mon.li",
        "answered_at": "2025-03-11T09:00:00Z", "answered_by": "li.wei", "closed_at": None, "closed_by": None}]})

    id: int
    subject_id: int
    subject: str
    site_code: str
    visit: str | None
    form: str | None
    item: str | None
    value: str | None = Field(description="The value questioned, as entered.")
    origin: str = Field(description="edit_check or manual.")
    edit_check_id: str | None
    status: str = Field(description="open, answered or closed.")
    text: str
    answer: str | None
    opened_at: dt.datetime
    opened_by: str | None
    answered_at: dt.datetime | None
    answered_by: str | None
    closed_at: dt.datetime | None
    closed_by: str | None


def _out(view: queries.QueryView) -> QueryOut:
    return QueryOut.model_validate(view, from_attributes=True)


@router.get("/queries", response_model=list[QueryOut], responses=problem_responses(*AUTHENTICATED, 404, 422))
def list_queries(actor: ActorDep, context: ContextDep, site: SiteFilter = None,
                 status: Literal["open", "answered", "closed"] | None = None,
                 subject_id: SubjectFilter = None) -> list[QueryOut]:
    """The queries you may see (your site's, or all), oldest first."""
    views = queries.list_queries(context.uow(), actor, site_code=site, status=status, subject_id=subject_id)
    return [_out(view) for view in views]


@router.post("/queries", status_code=201, response_model=QueryOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def open_query(body: QueryIn, actor: ActorDep, context: ContextDep) -> QueryOut:
    """Open a query on one stored value (monitor or data manager)."""
    return _out(queries.open_query(context.uow(), actor, body.subject_id, body.visit, body.form, body.item, body.text,
                                   form_repeat=body.repeat))


@router.post("/queries/{query_id}/answer", response_model=QueryOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def answer_query(query_id: QueryId, body: AnswerIn, actor: ActorDep, context: ContextDep) -> QueryOut:
    """The site answers an open query (investigator or coordinator of the subject's site)."""
    return _out(queries.answer_query(context.uow(), actor, query_id, body.answer))


@router.post("/queries/{query_id}/close", response_model=QueryOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def close_query(query_id: QueryId, body: CloseIn, actor: ActorDep, context: ContextDep) -> QueryOut:
    """Close a query you opened (an unanswered one needs a reason)."""
    return _out(queries.close_query(context.uow(), actor, query_id, reason=body.reason))


@router.post("/queries/{query_id}/reopen", response_model=QueryOut,
             responses=problem_responses(*AUTHENTICATED, 404, 409, 422))
def reopen_query(query_id: QueryId, body: ReopenIn, actor: ActorDep, context: ContextDep) -> QueryOut:
    """Send an answered query back to the site (whoever opened it)."""
    return _out(queries.reopen_query(context.uow(), actor, query_id, body.text))
