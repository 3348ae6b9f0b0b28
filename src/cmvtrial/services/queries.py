"""Data queries: questions about a value, raised by an edit check or a person, answered at the site.

The life of a query (issue 4; ICH E6(R3) §4.2 data review; every step an audit event):

```
            answer (site staff of the subject's site)
   open ─────────────────────────────────────────▶ answered
    ▲  │                                             │  │
    │  │ close (the opener)                  reopen  │  │ close (the opener)
    │  ▼                                 (the opener)│  ▼
    │ closed ◀───────────────────────────────────────┘ closed
    └──────────── reopen (the opener, from answered)
```

- **Opened** by an edit check when data are entered (``sync_edit_check_queries``, called by the
  data-entry service in its own transaction: one query per failing check and item, never twice),
  or by a monitor or data manager on one stored value (``open_query``).
- **Answered** at the site: an investigator or coordinator of the subject's site, while open.
  Correcting the value itself is a data entry with a reason (data_entry.py), not an answer.
- **Closed** by whoever opened it — from open (withdrawn) or answered (resolved) — or sent back with
  ``reopen`` when the answer does not resolve it. A query an edit check opened is closed by a
  monitor or data manager, or by the system when a correction makes the check pass.
- Anything else (answering a closed query, closing it twice, someone else closing it) is refused
  and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, select

from cmvtrial.errors import Forbidden, InvalidInput, NotFound, Refused
from cmvtrial.services import permissions
from cmvtrial.services.audit import snapshot
from cmvtrial.services.permissions import Actor
from cmvtrial.services.unit_of_work import UnitOfWork
from cmvtrial.store.tables import FormInstance, ItemValue, Query, Site, StudyEvent, Subject, User

if TYPE_CHECKING:  # pragma: no cover
    from cmvtrial.core.form_entry import Finding

ORIGIN_EDIT_CHECK, ORIGIN_MANUAL = "edit_check", "manual"
OPEN, ANSWERED, CLOSED = "open", "answered", "closed"
STATUSES = (OPEN, ANSWERED, CLOSED)
#: ``edit_check_id`` of a query a soft limit opened (edit checks use their protocol id).
SOFT_LIMIT = "soft_limit"
#: Longest query or answer text kept.
MAX_TEXT = 2000


@dataclass(frozen=True)
class QueryView:
    id: int
    subject_id: int
    subject: str
    site_code: str
    visit: str | None
    form: str | None
    item: str | None
    value: str | None
    origin: str
    edit_check_id: str | None
    status: str
    text: str
    answer: str | None
    opened_at: datetime
    opened_by: str | None
    answered_at: datetime | None
    answered_by: str | None
    closed_at: datetime | None
    closed_by: str | None

    def to_dict(self) -> dict[str, object]:
        from cmvtrial.core.audit_chain import to_jsonable

        return dict(to_jsonable({name: getattr(self, name) for name in self.__dataclass_fields__}))


def _text(value: object, what: str) -> str:
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text:
        raise InvalidInput(f"the {what} text is required", field=what)
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"the {what} text is longer than {MAX_TEXT} characters", field=what)
    return text


# ------------------------------------------------------------------------------------------------
# Queries opened by edit checks (inside the data-entry transaction)


def _finding_key(finding: Finding) -> tuple[str, str | None]:
    return (finding.check_id or SOFT_LIMIT, finding.items[0] if finding.items else None)


_LIVE_EDIT_CHECK_QUERIES = select(Query).where(
    Query.form_instance_id == bindparam("instance"), Query.origin == ORIGIN_EDIT_CHECK, Query.status != CLOSED)


def live_edit_check_queries(uow: UnitOfWork, instance_id: int) -> list[Query]:
    """A form instance's edit-check queries that are not closed."""
    return list(uow.session.scalars(_LIVE_EDIT_CHECK_QUERIES, {"instance": instance_id}))


def sync_edit_check_queries(
    uow: UnitOfWork,
    actor: Actor,
    subject: Subject,
    instance: FormInstance,
    findings: Sequence[Finding],
    rows: Mapping[str, ItemValue],
    *,
    data_changed: bool,
    live: Sequence[Query] | None = None,
) -> tuple[list[int], list[int]]:
    """Open a query per finding that has none open yet; when the form's data changed, close the
    edit-check queries whose finding is gone. Returns (opened ids, closed ids). ``live`` are the
    form's open edit-check queries when the caller read them already (``live_edit_check_queries``)."""
    existing = live_edit_check_queries(uow, instance.id) if live is None else live
    row_paths = {row.id: path for path, row in rows.items()}
    by_key = {(query.edit_check_id, row_paths.get(query.item_value_id or -1)): query for query in existing}
    wanted = {_finding_key(finding): finding for finding in findings}
    now = uow.clock()
    opened, closed = [], []
    for key, finding in wanted.items():
        if key in by_key:
            continue
        row = rows.get(key[1] or "")
        query = Query(subject_id=subject.id, form_instance_id=instance.id, item_value_id=row.id if row else None,
                      edit_check_id=key[0], origin=ORIGIN_EDIT_CHECK, status=OPEN, text=finding.message[:MAX_TEXT],
                      opened_at=now, opened_by_user_id=None)
        uow.session.add(query)
        uow.session.flush()
        uow.audit.record(actor, "query.open", query, after=query, reason=f"edit check {key[0]} on {instance.form_id}",
                         site_id=subject.site_id)
        opened.append(query.id)
    if data_changed:
        for key, query in by_key.items():
            if key in wanted:
                continue
            before = snapshot(query)
            query.status, query.closed_at, query.closed_by_user_id = CLOSED, now, None
            uow.session.flush()
            uow.audit.record(actor, "query.close", query, before=before, after=query,
                             reason="closed by the system: the edit check passes after the correction",
                             site_id=subject.site_id)
            closed.append(query.id)
    return opened, closed


# ------------------------------------------------------------------------------------------------
# Use cases


def _locked_query(uow: UnitOfWork, query_id: int) -> Query:
    if isinstance(query_id, bool) or not isinstance(query_id, int):
        raise InvalidInput("a query id is a whole number", field="query", value=query_id)
    statement = select(Query).where(Query.id == query_id).with_for_update()
    query = uow.session.scalars(statement.execution_options(populate_existing=True)).one_or_none()
    if query is None:
        raise NotFound(f"no query with id {query_id}", field="query", value=query_id)
    return query


def _in_scope(uow: UnitOfWork, actor: Actor, action: str, query: Query, *, lock: bool = True) -> Subject:
    # A change locks the subject, like every change of a subject's data (``row_version`` in
    # store/tables/subject_data.py).
    subject = uow.subjects.locked(query.subject_id) if lock else uow.session.get(Subject, query.subject_id)
    assert subject is not None
    permissions.require(actor, action, site=subject.site_id)
    return subject


def open_query(
    uow: UnitOfWork,
    actor: Actor,
    subject_id: int,
    visit: str,
    form_id: str,
    item: str,
    text: str,
    *,
    form_repeat: int = 0,
) -> QueryView:
    """A monitor or data manager questions one stored value (``visit`` label, form, item path)."""
    from cmvtrial.core.schedule import parse_visit_label
    from cmvtrial.services.visits import subject_in_scope
    from cmvtrial.services.protocol_versions import protocol_of_version

    permissions.require(actor, "query.open")
    message = _text(text, "query")
    with uow:
        subject = subject_in_scope(uow, actor, "query.open", subject_id, lock=True)
        protocol = protocol_of_version(uow, subject.protocol_version_id)
        code, index = parse_visit_label(protocol, visit)
        protocol.item(form_id, item)  # NotFound naming the form or item
        row = uow.session.scalar(
            select(ItemValue).join(FormInstance, FormInstance.id == ItemValue.form_instance_id)
            .join(StudyEvent, StudyEvent.id == FormInstance.study_event_id)
            .where(StudyEvent.subject_id == subject.id, StudyEvent.visit_code == code, StudyEvent.repeat_index == index,
                   FormInstance.form_id == form_id, FormInstance.form_repeat == form_repeat, ItemValue.item_id == item))
        if row is None:
            raise NotFound(f"no value of {form_id}.{item} is stored at {visit} for this subject", field="item",
                           value=f"{form_id}.{item}")
        query = Query(subject_id=subject.id, form_instance_id=row.form_instance_id, item_value_id=row.id,
                      edit_check_id=None, origin=ORIGIN_MANUAL, status=OPEN, text=message, opened_at=uow.clock(),
                      opened_by_user_id=actor.user_id)
        uow.session.add(query)
        uow.session.flush()
        uow.audit.record(actor, "query.open", query, after=query, site_id=subject.site_id)
        view = _view(uow, query)
        uow.commit()
    return view


def answer_query(uow: UnitOfWork, actor: Actor, query_id: int, answer: str) -> QueryView:
    """The site answers an open query."""
    permissions.require(actor, "query.answer")
    reply = _text(answer, "answer")
    with uow:
        query = _locked_query(uow, query_id)
        subject = _in_scope(uow, actor, "query.answer", query)
        if query.status != OPEN:
            raise Refused(f"query {query.id} is {query.status}; only an open query can be answered",
                          field="query", value=query.id, status=query.status)
        before = snapshot(query)
        query.status, query.answer = ANSWERED, reply
        query.answered_at, query.answered_by_user_id = uow.clock(), actor.user_id
        uow.session.flush()
        uow.audit.record(actor, "query.answer", query, before=before, after=query, site_id=subject.site_id)
        view = _view(uow, query)
        uow.commit()
    return view


def _require_opener(actor: Actor, query: Query, verb: str) -> None:
    if query.opened_by_user_id is None:
        return  # an edit check's query: any monitor or data manager (the role check is done)
    if query.opened_by_user_id != actor.user_id:
        raise Forbidden(f"query {query.id} was opened by someone else; only they may {verb} it",
                        action=f"query.{verb}", query=query.id)


def close_query(uow: UnitOfWork, actor: Actor, query_id: int, *, reason: str | None = None) -> QueryView:
    """Whoever opened the query closes it (resolved when answered, withdrawn when still open)."""
    permissions.require(actor, "query.close")
    note = " ".join(reason.split()) if isinstance(reason, str) and reason.strip() else None
    with uow:
        query = _locked_query(uow, query_id)
        subject = _in_scope(uow, actor, "query.close", query)
        _require_opener(actor, query, "close")
        if query.status == CLOSED:
            raise Refused(f"query {query.id} is already closed", field="query", value=query.id, status=query.status)
        if query.status == OPEN and note is None:
            raise InvalidInput(f"query {query.id} has no answer: closing it unanswered needs a reason", field="reason")
        before = snapshot(query)
        query.status, query.closed_at, query.closed_by_user_id = CLOSED, uow.clock(), actor.user_id
        uow.session.flush()
        uow.audit.record(actor, "query.close", query, before=before, after=query, reason=note, site_id=subject.site_id)
        view = _view(uow, query)
        uow.commit()
    return view


def reopen_query(uow: UnitOfWork, actor: Actor, query_id: int, text: str) -> QueryView:
    """The opener sends an answered query back to the site (the answer did not resolve it)."""
    permissions.require(actor, "query.close")
    message = _text(text, "query")
    with uow:
        query = _locked_query(uow, query_id)
        subject = _in_scope(uow, actor, "query.close", query)
        _require_opener(actor, query, "reopen")
        if query.status != ANSWERED:
            raise Refused(f"query {query.id} is {query.status}; only an answered query can be reopened",
                          field="query", value=query.id, status=query.status)
        before = snapshot(query)
        query.status, query.text = OPEN, f"{query.text}\n[reopened] {message}"[:MAX_TEXT]
        query.answer, query.answered_at, query.answered_by_user_id = None, None, None
        uow.session.flush()
        uow.audit.record(actor, "query.reopen", query, before=before, after=query, reason=message,
                         site_id=subject.site_id)
        view = _view(uow, query)
        uow.commit()
    return view


def list_queries(
    uow: UnitOfWork,
    actor: Actor,
    *,
    site_code: str | None = None,
    status: str | None = None,
    subject_id: int | None = None,
) -> list[QueryView]:
    """The queries the actor may see (their site's, or every site's), oldest first."""
    permissions.require(actor, "query.list")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)} (got {status!r})", field="status",
                           value=status)
    with uow.reading():
        statement = select(Query).join(Subject, Subject.id == Query.subject_id).order_by(Query.id)
        site_id = actor.site_id
        if site_code is not None:
            site = uow.sites.require_code(site_code.strip().upper())
            permissions.require(actor, "query.list", site=site.id)
            site_id = site.id
        if site_id is not None:
            statement = statement.where(Subject.site_id == site_id)
        if status is not None:
            statement = statement.where(Query.status == status)
        if subject_id is not None:
            subject = uow.subjects.get(subject_id)
            if subject is None:
                raise NotFound(f"no subject with id {subject_id}", field="subject", value=subject_id)
            permissions.require(actor, "query.list", site=subject.site_id)
            statement = statement.where(Query.subject_id == subject_id)
        return [_view(uow, query) for query in uow.session.scalars(statement)]


def get_query(uow: UnitOfWork, actor: Actor, query_id: int) -> QueryView:
    """One query with its thread (question, answer, who and when), for users of its site."""
    permissions.require(actor, "query.list")
    with uow.reading():
        query = uow.session.get(Query, query_id)
        if query is None:
            raise NotFound(f"no query with id {query_id}", field="query", value=query_id)
        _in_scope(uow, actor, "query.list", query, lock=False)
        return _view(uow, query)


def _view(uow: UnitOfWork, query: Query) -> QueryView:
    session = uow.session
    subject = session.get(Subject, query.subject_id)
    assert subject is not None
    site = session.get(Site, subject.site_id)
    instance = session.get(FormInstance, query.form_instance_id) if query.form_instance_id else None
    event = session.get(StudyEvent, instance.study_event_id) if instance else None
    row = session.get(ItemValue, query.item_value_id) if query.item_value_id else None
    value = None
    if row is not None and row.entered_value is None and row.missing_reason:
        value = f"not done: {row.missing_reason}"
    elif row is not None:
        value = f"{row.entered_value} {row.entered_unit}" if row.entered_unit else row.entered_value

    def name(user_id: int | None) -> str | None:
        user = session.get(User, user_id) if user_id is not None else None
        return user.username if user is not None else None

    visit = None
    if event is not None:
        visit = f"{event.visit_code}{event.repeat_index}" if event.repeat_index else event.visit_code
    return QueryView(
        id=query.id, subject_id=subject.id, subject=subject.subject_number or subject.screening_number,
        site_code=site.code if site else str(subject.site_id), visit=visit,
        form=instance.form_id if instance else None, item=row.item_id if row else None, value=value,
        origin=query.origin, edit_check_id=query.edit_check_id, status=query.status, text=query.text,
        answer=query.answer, opened_at=query.opened_at,
        opened_by=name(query.opened_by_user_id) or ("edit check" if query.origin == ORIGIN_EDIT_CHECK else None),
        answered_at=query.answered_at, answered_by=name(query.answered_by_user_id), closed_at=query.closed_at,
        closed_by=name(query.closed_by_user_id) or ("system" if query.closed_at and query.closed_by_user_id is None
                                                    else None),
    )
