"""Query pages: the list (by status), one query's thread with the site's answer and the monitor's
close or reopen. A query is opened on the visit page, next to the value it is about."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from cmvtrial.adapters.api.deps import ContextDep
from cmvtrial.adapters.api.problems import family_of
from cmvtrial.adapters.web.rendering import field_errors, render, text_field
from cmvtrial.adapters.web.routes.deps import CheckedForm, PageActor
from cmvtrial.adapters.web.routes.page_support import IdPath, NoticeQuery, notice_text
from cmvtrial.errors import InvalidInput, Refused
from cmvtrial.services import permissions, queries
from cmvtrial.services.permissions import Actor

router = APIRouter(include_in_schema=False)


@router.get("/queries")
def queries_page(request: Request, actor: PageActor, context: ContextDep,
                 status: Annotated[str | None, Query(max_length=16)] = "open") -> Response:
    shown_status = status if status in queries.STATUSES else None
    found = queries.list_queries(context.uow(), actor, status=shown_status)
    return render(request, "queries.html", actor=actor, title="Queries", queries=found, status_filter=shown_status or "",
                  statuses=queries.STATUSES)


@router.get("/queries/{query_id}")
def query_page(request: Request, query_id: IdPath, actor: PageActor, context: ContextDep,
               notice: NoticeQuery = None) -> Response:
    return _thread(request, actor, context, query_id, notice=notice_text(notice))


def _thread(request: Request, actor: Actor, context: ContextDep, query_id: int, *, notice: str = "",
            errors: dict[str, str] | None = None, values: dict[str, str] | None = None, status: int = 200) -> Response:
    query = queries.get_query(context.uow(), actor, query_id)
    return render(
        request, "query.html", actor=actor, title=f"Query {query.id}", status=status, query=query, notice=notice,
        errors=errors or {}, values=values or {},
        can_answer=query.status == queries.OPEN and permissions.allowed(actor, "query.answer"),
        can_close=query.status != queries.CLOSED and permissions.allowed(actor, "query.close"),
    )


@router.post("/queries/{query_id}/answer")
def answer(request: Request, query_id: IdPath, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    text = text_field(form, "answer")
    try:
        queries.answer_query(context.uow(), actor, query_id, text)
    except (InvalidInput, Refused) as error:
        return _thread(request, actor, context, query_id, errors=field_errors(error, {"answer"}), values={"answer": text},
                       status=family_of(error)[0])
    return RedirectResponse(f"/queries/{query_id}?notice=answered", status_code=303)


@router.post("/queries/{query_id}/close")
def close(request: Request, query_id: IdPath, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    reason = text_field(form, "reason")
    try:
        queries.close_query(context.uow(), actor, query_id, reason=reason or None)
    except (InvalidInput, Refused) as error:
        return _thread(request, actor, context, query_id, errors=field_errors(error, {"reason"}),
                       values={"reason": reason}, status=family_of(error)[0])
    return RedirectResponse(f"/queries/{query_id}?notice=closed", status_code=303)


@router.post("/queries/{query_id}/reopen")
def reopen(request: Request, query_id: IdPath, actor: PageActor, form: CheckedForm, context: ContextDep) -> Response:
    text = text_field(form, "text")
    try:
        queries.reopen_query(context.uow(), actor, query_id, text)
    except (InvalidInput, Refused) as error:
        errors = {("text" if k == "query" else k): v for k, v in field_errors(error).items()}
        return _thread(request, actor, context, query_id, errors=errors, values={"text": text},
                       status=family_of(error)[0])
    return RedirectResponse(f"/queries/{query_id}?notice=reopened", status_code=303)
