"""`cmvtrial queries list | open | answer | close | reopen`: questions on stored data.

Thin adapter over services/queries.py: a monitor or data manager opens a query on one stored value,
the site answers it, whoever opened it closes or reopens it. Subjects and visits are named as in
the other data-capture commands (data_commands.py). Only typer and stdlib at module top, so
`cmvtrial --help` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cmvtrial.adapters.cli.context import AsOption, ReasonOption, command_context
from cmvtrial.adapters.cli.data_commands import JsonOption, SubjectArgument, VisitArgument
from cmvtrial.adapters.cli.output import DbOption, echo_json, handles_errors, make_console, make_table


def register(app: typer.Typer) -> None:
    queries_app = typer.Typer(help="Data queries: list, open, answer, close, reopen.", no_args_is_help=True)
    queries_app.command("list")(queries_list)
    queries_app.command("open")(queries_open)
    queries_app.command("answer")(queries_answer)
    queries_app.command("close")(queries_close)
    queries_app.command("reopen")(queries_reopen)
    app.add_typer(queries_app, name="queries")


def _print_query(view: Any) -> None:
    where = ".".join(part for part in (view.visit, view.form, view.item) if part)
    typer.echo(f"Query {view.id} ({view.status}) on {view.subject} {where}: {view.text}"
               + (f" — answer: {view.answer}" if view.answer else ""))


@handles_errors
def queries_list(
    site: Annotated[str | None, typer.Option("--site", help="Only this site's queries.", show_default=False)] = None,
    status: Annotated[str | None, typer.Option("--status", help="open, answered or closed.", show_default=False)] = None,
    subject: Annotated[str | None, typer.Option("--subject", help="Only this subject's queries.",
                                                show_default=False)] = None,
    as_json: JsonOption = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """The data queries you may see, oldest first."""
    from cmvtrial.services import queries

    with command_context(db, as_user) as cli:
        subject_id = cli.subject_id(subject) if subject else None
        views = queries.list_queries(cli.uow(), cli.actor, site_code=site, status=status, subject_id=subject_id)
    if as_json:
        echo_json([view.to_dict() for view in views])
        return
    table = make_table(f"Queries ({len(views)})", "id", "status", "subject", "visit", "item", "value", "query", "answer",
                       "opened by")
    for view in views:
        item = f"{view.form}.{view.item}" if view.item else (view.form or "")
        table.add_row(str(view.id), view.status, view.subject, view.visit or "", item, view.value or "", view.text,
                      view.answer or "", view.opened_by or "")
    make_console().print(table)


@handles_errors
def queries_open(
    subject: SubjectArgument,
    visit: VisitArgument,
    item: Annotated[str, typer.Argument(help="FORM.ITEM, e.g. hematology.anc (a group's item: form.group.item).",
                                        show_default=False)],
    text: Annotated[str, typer.Option("--text", help="The question to the site.", show_default=False)],
    repeat: Annotated[int, typer.Option("--repeat", help="Which copy of a repeating form (0 = first).")] = 0,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Open a query on one stored value (monitor or data manager)."""
    from cmvtrial.errors import InvalidInput
    from cmvtrial.services import queries

    form_id, _, item_id = item.partition(".")
    if not form_id or not item_id:
        raise InvalidInput(f"name the value as FORM.ITEM (got {item!r})", field="item", value=item)
    with command_context(db, as_user) as cli:
        view = queries.open_query(cli.uow(), cli.actor, cli.subject_id(subject), visit, form_id,
                                  item_id, text, form_repeat=repeat)
    _print_query(view)


QueryArgument = Annotated[int, typer.Argument(help="The query's id (see `cmvtrial queries list`).", show_default=False)]


@handles_errors
def queries_answer(
    query: QueryArgument,
    text: Annotated[str, typer.Option("--text", help="The site's answer.", show_default=False)],
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Answer an open query (investigator or coordinator of the subject's site)."""
    from cmvtrial.services import queries

    with command_context(db, as_user) as cli:
        view = queries.answer_query(cli.uow(), cli.actor, query, text)
    _print_query(view)


@handles_errors
def queries_close(query: QueryArgument, db: DbOption = None, as_user: AsOption = None,
                  reason: ReasonOption = None) -> None:
    """Close a query you opened (an unanswered one needs --reason)."""
    from cmvtrial.services import queries

    with command_context(db, as_user) as cli:
        view = queries.close_query(cli.uow(), cli.actor, query, reason=reason)
    _print_query(view)


@handles_errors
def queries_reopen(
    query: QueryArgument,
    text: Annotated[str, typer.Option("--text", help="Why the answer does not resolve it.", show_default=False)],
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Send an answered query back to the site (whoever opened it)."""
    from cmvtrial.services import queries

    with command_context(db, as_user) as cli:
        view = queries.reopen_query(cli.uow(), cli.actor, query, text)
    _print_query(view)
