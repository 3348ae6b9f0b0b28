"""`cmvtrial init | status | site | user | audit`: setting up a trial database and checking its audit trail.

Thin adapter: each command reads its options, opens the database, calls one service and prints the
answer. Heavy modules (pydantic, SQLAlchemy, argon2) are imported inside the commands so that
`cmvtrial --help` stays fast. The local command line acts as an administrator (``--as``, default the
one `cmvtrial init` created): whoever runs it already holds the database, and every change it makes
is audited under that user's name.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cmvtrial.adapters.cli.context import (
    AsOption,
    ReasonOption,
    acting_user,
    command_context,
    open_database,
    unit_of_work,
)
from cmvtrial.adapters.cli.output import DbOption, handles_errors, make_console, make_table

if TYPE_CHECKING:
    from cmvtrial.store.database import Database

USER_PASSWORD_ENV = "CMVTRIAL_USER_PASSWORD"

# simulation_commands.py still imports these two names from here.
_database = open_database
_actor = acting_user


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)

    site_app = typer.Typer(help="Trial sites: add and list.", no_args_is_help=True)
    site_app.command("add")(site_add)
    site_app.command("list")(site_list)
    app.add_typer(site_app, name="site")

    user_app = typer.Typer(help="User accounts: add and list.", no_args_is_help=True)
    user_app.command("add")(user_add)
    user_app.command("list")(user_list)
    app.add_typer(user_app, name="user")

    audit_app = typer.Typer(help="The hash-chained audit trail: verify and read.", no_args_is_help=True)
    audit_app.command("verify")(audit_verify)
    audit_app.command("log")(audit_log)
    app.add_typer(audit_app, name="audit")


# --- helpers -------------------------------------------------------------------------------


def _ask_password(prompt: str) -> str:
    from cmvtrial.errors import InvalidInput

    try:
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))
    except typer.Abort:
        raise InvalidInput("no password given; set it in the environment or answer the prompt") from None


# --- init and status -----------------------------------------------------------------------


@handles_errors
def init(
    protocol: Annotated[
        str, typer.Option("--protocol", help="A shipped protocol id (see `cmvtrial protocol list`) or a protocol file.")
    ],
    db: DbOption = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Also add the demo site PKUPH and one demo user per role (passwords printed)."),
    ] = False,
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Do nothing (but bring the schema up to date) when already initialised."),
    ] = False,
) -> None:
    """Create the trial database: run the migrations, store the protocol version and create the first admin.

    The admin's name is CMVTRIAL_ADMIN_USERNAME (default admin); the password comes from
    CMVTRIAL_ADMIN_PASSWORD when set, otherwise it is asked for twice.
    """
    from cmvtrial.errors import AlreadyInitialised
    from cmvtrial.services import trial_setup

    with open_database(db, create=True, require_current=False) as (settings, database):
        if trial_setup.is_initialised(database):
            if not if_missing:
                raise AlreadyInitialised(f"{database.url} already runs a trial; nothing was changed")
            before, head = trial_setup.upgrade_schema(database)
            upgraded = f"; schema upgraded from {before} to {head}" if before != head else ""
            typer.echo(f"{database.url} is already initialised; nothing to do{upgraded}.")
            return
        trial_setup.load_protocol(protocol)  # an unknown or invalid protocol is refused before any prompt
        if settings.admin_password is not None:
            password = settings.admin_password.get_secret_value()
        else:
            password = _ask_password(f"Password for the administrator '{settings.admin_username}'")
        result = trial_setup.initialise_trial(
            database, protocol, settings.admin_username, password, now=datetime.now(UTC)
        )
        typer.echo(
            f"Initialised {result.database} for protocol {result.protocol_id} "
            f"version {result.protocol_version} "
            f"(sha256 {result.sha256[:12]}…); administrator '{result.admin_username}' created."
        )
        if demo:
            _add_demo(database, result.admin_username)


def _add_demo(database: Database, admin_username: str) -> None:
    from cmvtrial.services import accounts, trial_setup

    actor = accounts.actor_for(unit_of_work(database), admin_username)
    site, users = trial_setup.add_demo_accounts(unit_of_work(database), actor)
    title = f"Demo users at {site.code} ({site.name}) — keep these passwords"
    table = make_table(title, "user", "role", "site", "password")
    table.add_row(admin_username, "admin", "all", "(CMVTRIAL_ADMIN_PASSWORD)")
    for user, password in users:
        table.add_row(user.username, user.role, user.site_code or "all", password)
    make_console().print(table)


@handles_errors
def status(db: DbOption = None, as_user: AsOption = None) -> None:
    """Summarise the trial database: protocol in force, sites, users by role, subjects, audit events."""
    from cmvtrial.services import trial_setup

    with command_context(db, as_user) as cli:
        info = trial_setup.trial_status(cli.uow(), cli.actor)
        console = make_console()
        console.print(f"Database:  {cli.database.url}")
        console.print(f"Protocol:  {info.protocol_id} version {info.protocol_version} — {info.title}")
        console.print(f"SHA-256:   {info.sha256}")
        console.print(f"Since:     {info.initialised_at:%Y-%m-%d %H:%M} UTC")
        sites = make_table(f"Sites ({len(info.sites)})", "code", "name", "active")
        for site in info.sites:
            sites.add_row(site.code, site.name, "yes" if site.active else "no")
        console.print(sites)
        users = make_table("Active users by role", "role", "users")
        for role, count in sorted(info.users_by_role.items()):
            users.add_row(role, str(count))
        console.print(users)
        subjects = make_table("Subjects by status", "status", "subjects")
        for state, count in sorted(info.subjects_by_status.items()):
            subjects.add_row(state, str(count))
        if not info.subjects_by_status:
            subjects.add_row("(none yet)", "0")
        console.print(subjects)
        console.print(f"Audit trail: {info.audit_events} events (check them with `cmvtrial audit verify`)")


# --- sites and users -----------------------------------------------------------------------


@handles_errors
def site_add(
    code: Annotated[str, typer.Argument(help="Short site code, e.g. PKUPH (2-16 letters, digits, - or _).")],
    name: Annotated[str, typer.Argument(help="The site's full name.")],
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Register a trial site."""
    from cmvtrial.services import trial_setup

    with command_context(db, as_user) as cli:
        site = trial_setup.add_site(cli.uow(), cli.actor, code, name, reason=reason)
        typer.echo(f"Site {site.code} ({site.name}) added.")


@handles_errors
def site_list(db: DbOption = None, as_user: AsOption = None) -> None:
    """List the trial sites."""
    from cmvtrial.services import trial_setup

    with command_context(db, as_user) as cli:
        sites = trial_setup.list_sites(cli.uow(), cli.actor)
        table = make_table(f"Sites ({len(sites)})", "code", "name", "active", "added (UTC)")
        for site in sites:
            added = f"{site.created_at:%Y-%m-%d %H:%M}"
            table.add_row(site.code, site.name, "yes" if site.active else "no", added)
        make_console().print(table)


@handles_errors
def user_add(
    username: Annotated[
        str, typer.Argument(help="User name (2-64 characters: a letter, then letters, digits, . _ -).")
    ],
    role: Annotated[
        str,
        typer.Option(
            "--role", help="admin, investigator, coordinator, monitor, data-manager or statistician."
        ),
    ],
    site: Annotated[
        str | None,
        typer.Option("--site", help="Code of the user's site; omit for a user of all sites.", show_default=False),
    ] = None,
    full_name: Annotated[
        str | None, typer.Option("--full-name", help="The person's name.", show_default=False)
    ] = None,
    db: DbOption = None,
    as_user: AsOption = None,
    reason: ReasonOption = None,
) -> None:
    """Create a user account.

    The password comes from CMVTRIAL_USER_PASSWORD when set, otherwise it is asked for twice.
    """
    from cmvtrial.services import accounts

    with command_context(db, as_user) as cli:
        actor = cli.actor  # an unknown --as is reported before the password prompt
        password = os.environ.get(USER_PASSWORD_ENV) or _ask_password(f"Password for '{username}'")
        user = accounts.add_user(
            cli.uow(), actor, username, password, role, site, full_name=full_name, reason=reason
        )
        where = f"site {user.site_code}" if user.site_code else "all sites"
        typer.echo(f"User {user.username} ({user.role}, {where}) added.")


@handles_errors
def user_list(db: DbOption = None, as_user: AsOption = None) -> None:
    """List the user accounts (never their passwords)."""
    from cmvtrial.services import accounts

    with command_context(db, as_user) as cli:
        users = accounts.list_users(cli.uow(), cli.actor)
        table = make_table(f"Users ({len(users)})", "user", "role", "site", "active", "name")
        for user in users:
            active = "yes" if user.active else "no"
            table.add_row(user.username, user.role, user.site_code or "all", active, user.full_name or "")
        make_console().print(table)


# --- the audit trail -----------------------------------------------------------------------


@handles_errors
def audit_verify(db: DbOption = None) -> None:
    """Recompute the audit trail's hash chain: exit 0 with the number of events, 1 naming the first broken event.

    Keep the printed newest hash somewhere outside the database: it proves later that no event was
    cut from the end of the trail.
    """
    from cmvtrial.errors import AuditChainBroken
    from cmvtrial.services.audit_verification import verify_audit

    with command_context(db) as cli:
        result = verify_audit(cli.uow())
    if not result.ok:
        raise AuditChainBroken(
            f"audit trail broken at event {result.first_broken_sequence}: {result.reason} "
            f"({result.count} events read)",
            first_broken_sequence=result.first_broken_sequence,
            count=result.count,
        )
    typer.echo(f"Audit trail intact: {result.count} events verified; newest hash {result.last_hash}.")


@handles_errors
def audit_log(
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many of the newest events to show.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the events as JSON, with before and after values.")
    ] = False,
    db: DbOption = None,
    as_user: AsOption = None,
) -> None:
    """Show the newest audit events, newest first."""
    import json

    from cmvtrial.core.audit_chain import to_jsonable
    from cmvtrial.services.audit_verification import recent_events

    with command_context(db, as_user) as cli:
        events = recent_events(cli.uow(), cli.actor, limit)
    if as_json:
        typer.echo(json.dumps([to_jsonable(event) for event in events], indent=2, ensure_ascii=False))
        return
    columns = ("#", "time (UTC)", "user", "action", "entity", "reason")
    table = make_table(f"Newest {len(events)} audit events", *columns)
    for event in events:
        table.add_row(
            str(event.sequence),
            f"{event.occurred_at:%Y-%m-%d %H:%M:%S}",
            event.username,
            event.action,
            f"{event.entity_type} {event.entity_id}",
            event.reason or "",
        )
    make_console().print(table)
